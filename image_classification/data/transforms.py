"""The official normalisation and augmentation of the classification data (architectures.md 5.1).

Images enter as uint8 tensors (3, H, W) or PIL images and leave as normalised float tensors.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

CIFAR_MEAN = tuple(v / 255 for v in (125.3, 123.0, 113.9))
CIFAR_STD = tuple(v / 255 for v in (63.0, 62.1, 66.7))
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _pipeline(augment: list, mean: tuple, std: tuple) -> v2.Compose:
    return v2.Compose([v2.ToImage(), *augment, v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(mean, std)])


def cifar_transform(train: bool, flip: bool = True, mean: tuple = CIFAR_MEAN,
                    std: tuple = CIFAR_STD) -> v2.Compose:
    """Training: random 32x32 crop of the image zero-padded by 4 (black in pixel space), then a random
    horizontal flip unless ``flip`` is off; always: [0, 1] scaling and the CIFAR normalisation (or the
    ``mean``/``std`` of another CIFAR-shaped set)."""
    augment = [v2.RandomCrop(32, padding=4, fill=0)] if train else []
    if train and flip:
        augment.append(v2.RandomHorizontalFlip())
    return _pipeline(augment, mean, std)


def imagenet_transform(train: bool, flip: bool = True) -> v2.Compose:
    """Training: random-resized crop 224 and (unless ``flip`` is off) a flip; test: resize 256, centre
    crop 224.  ``--no_flip`` means no flip here too (the official ImageNet loader had it inverted, D3)."""
    if train:
        augment = [v2.RandomResizedCrop(224)] + ([v2.RandomHorizontalFlip()] if flip else [])
    else:
        augment = [v2.Resize(256), v2.CenterCrop(224)]
    return _pipeline(augment, IMAGENET_MEAN, IMAGENET_STD)
