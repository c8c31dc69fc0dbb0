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

import functools
import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch.utils.data import Dataset, Subset

from .in_memory import InMemoryImages


@functools.lru_cache(maxsize=16)
def _constants(mean: tuple, std: tuple, device: torch.device) -> tuple:
    """Mean and std as float32 tensors on ``device``, made once rather than copied there for every batch
    (a host-to-GPU copy per batch would make the CPU wait for the GPU)."""
    return (torch.tensor(mean, dtype=torch.float32, device=device),
            torch.tensor(std, dtype=torch.float32, device=device))


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

    def prepare(self, images: torch.Tensor,
                memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
        """The form a whole set is held in: ``(N, C, size, size)`` uint8 zero-padded by ``padding``,
        followed by the mirror images when ``flip`` (2N images), in ``memory_format`` (the batches')."""
        _, _, h, w = images.shape
        if (h, w) != (self.size, self.size):
            raise ValueError(f"batch augmentation for {self.size}x{self.size} images got {h}x{w}")
        p = self.padding
        held = torch.nn.functional.pad(images, (p, p, p, p)) if p else images
        if self.flip:
            held = torch.cat([held, held.flip(3)])
        return held.contiguous(memory_format=memory_format)

    def crop(self, held: torch.Tensor, positions: torch.Tensor, top: torch.Tensor, left: torch.Tensor,
             flipped: torch.Tensor) -> torch.Tensor:
        """Images ``positions`` of a :meth:`prepare`-d set cropped at (top, left) of the padded image and
        mirrored where ``flipped``: ``(n, C, size, size)`` uint8 in the held set's memory format.

        Each output row is one run of memory in the held set: ``size`` bytes of one channel (NCHW), or
        ``size * C`` bytes of all channels (channels_last), of the padded image, or of its mirror image when
        flipped (where the crop at ``left`` becomes the crop at ``2 * padding - left``).  So the crop is
        one selection of runs from a window view of the held set.
        """
        s, p = self.size, self.padding
        count, c, width, _ = held.shape
        channels_last = not held.is_contiguous()
        n_images = count // 2 if self.flip else count
        image = positions + flipped.long() * n_images
        left = torch.where(flipped, 2 * p - left, left)
        steps = torch.arange(s, device=held.device)
        if channels_last:  # (n, s) runs of s * C bytes
            flat = held.permute(0, 2, 3, 1).reshape(-1)
            offsets = (image * (width * width * c) + left * c)[:, None] + (top[:, None] + steps) * (width * c)
            runs = flat.unfold(0, s * c, 1).index_select(0, offsets.reshape(-1))
            return runs.reshape(-1, s, s, c).permute(0, 3, 1, 2)
        channel = torch.arange(c, device=held.device) * (width * width)  # (n, C, s) runs of s bytes
        offsets = (image * (c * width * width) + left)[:, None, None] + channel[:, None] \
            + ((top[:, None] + steps) * width)[:, None, :]
        runs = held.reshape(-1).unfold(0, s, 1).index_select(0, offsets.reshape(-1))
        return runs.reshape(-1, c, s, s)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 ``(n, C, H, W)`` -> float32 in the same memory format, scaled to [0, 1] and normalised with
        the operations, in the order, of ``ToDtype(scale=True)`` and ``Normalize``."""
        mean, std = _constants(tuple(self.mean), tuple(self.std), pixels.device)
        if not pixels.is_contiguous():  # channels_last: arithmetic on (n * H, W * C) rows, then a free view
            n, c, h, w = pixels.shape
            rows = pixels.permute(0, 2, 3, 1).reshape(n * h, w * c).to(torch.float32)
            # mean and std repeated along a pixel row: a 3-long innermost broadcast is ten times slower
            rows.mul_(1.0 / 255).sub_(mean.repeat(w)).div_(std.repeat(w))
            return rows.reshape(n, h, w, c).permute(0, 3, 1, 2)
        out = pixels.to(torch.float32)
        return out.mul_(1.0 / 255).sub_(mean.view(-1, 1, 1)).div_(std.view(-1, 1, 1))

    def apply(self, images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flipped: torch.Tensor,
              memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
        """``images`` (N, C, size, size) uint8 cropped at (top, left) of their zero-padded selves,
        mirrored where ``flipped``, as normalised float32 in ``memory_format``."""
        positions = torch.arange(images.shape[0], device=images.device)
        held = self.prepare(images, memory_format)
        return self.normalize(self.crop(held, positions, top, left, flipped))

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
        # the whole uint8 set, once, padded and with its mirror images, in the layout of the batches
        self.held = transform.prepare(images.images.to(device), memory_format)
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
            draws = self.transform.draw(len(positions), self.generator)
            pixels = self.transform.crop(self.held, positions, *draws)
            yield self.transform.normalize(pixels), self.labels[positions]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"].cpu())  # a checkpoint loaded onto a GPU moves it
