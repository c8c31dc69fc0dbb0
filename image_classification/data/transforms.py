"""The official normalisation and augmentation of the classification data
(docs/official-code.md#classification-data-and-training).

Images enter as uint8 tensors (3, H, W) or PIL images and leave as normalised float tensors.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from .batches import CropFlipNormalize

CIFAR_MEAN = tuple(v / 255 for v in (125.3, 123.0, 113.9))
CIFAR_STD = tuple(v / 255 for v in (63.0, 62.1, 66.7))
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROPS = (1, 5, 10)  # --crop: ImageNet test crops whose logits are averaged


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


def cifar_batch_transform(train: bool, flip: bool = True, mean: tuple = CIFAR_MEAN,
                          std: tuple = CIFAR_STD) -> CropFlipNormalize:
    """:func:`cifar_transform` for whole uint8 batches on the device (same distribution, same values)."""
    return CropFlipNormalize(mean, std, size=32, padding=4 if train else 0, flip=train and flip)


def imagenet_transform(train: bool, flip: bool = True, crop: int = 1) -> v2.Compose:
    """Training: random-resized crop 224 and (unless ``flip`` is off) a flip; test: resize 256, then the
    centre 224 crop (``crop`` 1), or torchvision's FiveCrop (``crop`` 5: corners and centre) or TenCrop
    (``crop`` 10: those and their mirror images), stacked into one (crop, 3, 224, 224) tensor.
    ``--no_flip`` means no flip here too (the official ImageNet loader had it inverted:
    docs/official-code.md#defects, D3)."""
    if train:
        augment = [v2.RandomResizedCrop(224)] + ([v2.RandomHorizontalFlip()] if flip else [])
        return _pipeline(augment, IMAGENET_MEAN, IMAGENET_STD)
    if crop not in CROPS:
        raise ValueError(f"crop {crop!r}: use one of {', '.join(map(str, CROPS))}")
    if crop == 1:
        return _pipeline([v2.Resize(256), v2.CenterCrop(224)], IMAGENET_MEAN, IMAGENET_STD)
    crops = v2.FiveCrop(224) if crop == 5 else v2.TenCrop(224)
    return v2.Compose([*_pipeline([v2.Resize(256), crops], IMAGENET_MEAN, IMAGENET_STD).transforms,
                       _stack])


def _stack(crops: tuple) -> torch.Tensor:
    """The (crop, 3, H, W) tensor of FiveCrop's or TenCrop's crops, as a plain tensor."""
    return torch.stack([c.as_subclass(torch.Tensor) for c in crops])
