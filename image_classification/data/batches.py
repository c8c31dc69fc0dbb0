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

    def apply(self, images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flipped: torch.Tensor,
              memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
        """``images`` (N, C, size, size) uint8 cropped at (top, left) of their zero-padded selves,
        mirrored where ``flipped``, as normalised float32 in ``memory_format``.

        In pixel-major (channels_last) memory an output row is one run of ``size * C`` bytes of the padded
        image (of its mirror image when flipped), so the crop is one row selection: a window view of the
        flat padded batch indexed at each row's start.  Channels-last input costs no reordering.
        """
        n, c, h, w = images.shape
        p, s = self.padding, self.size
        if (h, w) != (s, s):
            raise ValueError(f"batch augmentation for {s}x{s} images got {h}x{w}")
        pixels = images.permute(0, 2, 3, 1).contiguous()  # (N, H, W, C), a view for channels_last input
        if p or flipped.any():
            padded = torch.nn.functional.pad(pixels, (0, 0, p, p, p, p))  # (N, s + 2p, s + 2p, C)
            width = s + 2 * p
            both = torch.cat([padded, padded.flip(2)]).reshape(-1)  # mirrored copies after the originals
            rows = both.unfold(0, s * c, 1)  # every run of s * C bytes, a view
            flipped = flipped.long()
            # the mirror of a crop at `left` is the crop of the mirrored padded image at 2p - left
            start = (torch.arange(n, device=images.device) + flipped * n) * (width * width * c) \
                + torch.where(flipped.bool(), 2 * p - left, left) * c
            steps = torch.arange(s, device=images.device)
            offsets = start[:, None] + (top[:, None] + steps) * (width * c)  # (N, s): each output row
            pixels = rows.index_select(0, offsets.reshape(-1)).reshape(n, s, s, c)
        mean = torch.as_tensor(self.mean, dtype=torch.float32, device=images.device).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=torch.float32, device=images.device).view(-1, 1, 1)
        out = pixels.permute(0, 3, 1, 2).to(torch.float32, memory_format=memory_format)
        return out.mul_(1.0 / 255).sub_(mean).div_(std)

    def __call__(self, images: torch.Tensor, generator: torch.Generator,
                 memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
        return self.apply(images, *self.draw(images.shape[0], generator), memory_format=memory_format)


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
    one short, nothing dropped), ``dataset`` and ``sampler`` as a DataLoader has them, images in
    ``memory_format`` (channels_last with ``--channels_last``, saving the engine a conversion), and
    ``state_dict()`` / ``load_state_dict()`` carrying the augmentation generator for an exact resume.
    """

    def __init__(self, dataset: Dataset, batch_size: int, sampler, transform: CropFlipNormalize,
                 device: torch.device, seed: int,
                 memory_format: torch.memory_format = torch.contiguous_format):
        source = in_memory_source(dataset)
        if source is None:
            raise ValueError(f"DeviceBatches needs an in-memory image set, got {type(dataset).__name__}")
        self.dataset = dataset  # items as the per-image pipeline makes them, like DataLoader.dataset
        images, self.index = source
        # the whole uint8 set, once, pixel-major (N, H, W, C) as the crop reads it
        self.pixels = images.images.to(device).permute(0, 2, 3, 1).contiguous()
        self.labels = images.labels.to(device)
        self.index = self.index.to(device)
        self.batch_size = batch_size
        self.sampler = sampler
        self.transform = transform
        self.device = device
        self.memory_format = memory_format
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def __iter__(self):
        order = torch.as_tensor(list(self.sampler), dtype=torch.long).to(self.device)
        for positions in self.index[order].split(self.batch_size):
            images = self.pixels.index_select(0, positions).permute(0, 3, 1, 2)  # NCHW, channels_last
            yield self.transform(images, self.generator, self.memory_format), self.labels[positions]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
