"""Whole batches of an in-memory uint8 set, augmented and normalised with tensor operations on the device.

The per-image pipeline (:func:`~image_classification.data.transforms.cifar_transform`) costs one
torchvision call per image in the loader workers, a few thousand images per second per core: a fast
model on a GPU would wait for it.  Here the set is held once as one uint8 tensor on the training device
and every batch is gathered, cropped from its zero-padded image and flipped in one indexing operation,
then scaled and normalised with the same operations in the same order as the per-image pipeline, so a
batch equals the per-image transform applied with the same crop offsets and flips.  The offsets and flips
are drawn from the loader's own generator on the device; its state is part of the training state.
ImageNet (files decoded per image) keeps the per-image DataLoader.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch.utils.data import Dataset, Subset

from .in_memory import InMemoryImages


@dataclass(frozen=True)
class CropFlipNormalize:
    """The batch form of ``RandomCrop(size, padding, fill=0)``, ``RandomHorizontalFlip()`` (when
    ``flip``), ``ToDtype(float32, scale=True)`` and ``Normalize(mean, std)``.

    ``padding=0`` and ``flip=False`` leave only the normalisation (test sets).
    """

    mean: Sequence[float]
    std: Sequence[float]
    size: int = 32
    padding: int = 4
    flip: bool = True

    def draw(self, n: int, generator: torch.Generator) -> tuple:
        """Crop offsets ``top``, ``left`` (uniform in 0 .. 2 * padding for a size x size set) and flips
        (each with probability 1/2, all False without ``flip``) of ``n`` images, on the generator's device."""
        device = generator.device
        top = torch.randint(0, 2 * self.padding + 1, (n,), generator=generator, device=device)
        left = torch.randint(0, 2 * self.padding + 1, (n,), generator=generator, device=device)
        if self.flip:
            flipped = torch.randint(0, 2, (n,), generator=generator, device=device, dtype=torch.bool)
        else:
            flipped = torch.zeros(n, dtype=torch.bool, device=device)
        return top, left, flipped

    def apply(self, images: torch.Tensor, top: torch.Tensor, left: torch.Tensor,
              flipped: torch.Tensor) -> torch.Tensor:
        """``images`` (N, C, size, size) uint8 cropped at (top, left) of their zero-padded selves,
        mirrored where ``flipped``, as normalised float32."""
        n, c, h, w = images.shape
        p, s = self.padding, self.size
        if (h, w) != (s, s):
            raise ValueError(f"batch augmentation for {s}x{s} images got {h}x{w}")
        if p:
            padded = torch.nn.functional.pad(images, (p, p, p, p))
            width = s + 2 * p
            steps = torch.arange(s, device=images.device)
            rows = top[:, None] + steps  # (N, s): padded row of each output row
            cols = torch.where(flipped[:, None], left[:, None] + (s - 1) - steps, left[:, None] + steps)
            index = (rows[:, :, None] * width + cols[:, None, :]).reshape(n, 1, s * s).expand(n, c, s * s)
            images = padded.reshape(n, c, width * width).gather(2, index).reshape(n, c, s, s)
        elif flipped.any():
            images = torch.where(flipped[:, None, None, None], images.flip(-1), images)
        mean = torch.as_tensor(self.mean, dtype=torch.float32, device=images.device).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=torch.float32, device=images.device).view(-1, 1, 1)
        return images.to(torch.float32).mul_(1.0 / 255).sub_(mean).div_(std)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.apply(images, *self.draw(images.shape[0], generator))


def in_memory_source(dataset: Dataset) -> Optional[tuple]:
    """``(InMemoryImages, index of every item in it)`` for an in-memory set or a Subset of one, else None."""
    index = None
    while isinstance(dataset, Subset):
        positions = torch.as_tensor(list(dataset.indices), dtype=torch.long)
        index = positions if index is None else positions[index]
        dataset = dataset.dataset
    if not isinstance(dataset, InMemoryImages):
        return None
    return dataset, (torch.arange(len(dataset)) if index is None else index)


class DeviceBatches:
    """Batches ``(images, labels)`` of an in-memory set, made on ``device`` in the order of ``sampler``.

    Behaves like the DataLoader it replaces for the training loop: ``len()`` batches per epoch (the last
    one short, nothing dropped), ``dataset`` and ``sampler`` as a DataLoader has them, and ``state_dict()`` /
    ``load_state_dict()`` carrying the augmentation generator for an exact resume.
    """

    def __init__(self, dataset: Dataset, batch_size: int, sampler, transform: CropFlipNormalize,
                 device: torch.device, seed: int):
        source = in_memory_source(dataset)
        if source is None:
            raise ValueError(f"DeviceBatches needs an in-memory image set, got {type(dataset).__name__}")
        self.dataset = dataset  # items as the per-image pipeline makes them, like DataLoader.dataset
        images, self.index = source
        self.images = images.images.to(device)  # the whole uint8 set, once
        self.labels = images.labels.to(device)
        self.index = self.index.to(device)
        self.batch_size = batch_size
        self.sampler = sampler
        self.transform = transform
        self.device = device
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def __iter__(self):
        order = torch.as_tensor(list(self.sampler), dtype=torch.long).to(self.device)
        for positions in self.index[order].split(self.batch_size):
            yield self.transform(self.images[positions], self.generator), self.labels[positions]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
