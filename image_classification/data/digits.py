"""``Digits``: the handwritten digits scikit-learn installs with itself, shaped like CIFAR (no download).

``sklearn.datasets.load_digits`` holds 1,797 greyscale 8x8 images (values 0-16) in 10 classes.  Each is
scaled to 0-255, enlarged to 32x32 by bilinear interpolation (``torch.nn.functional.interpolate``,
``align_corners=False``, in float64, rounded back to uint8) and replicated to 3 channels, so that every
CIFAR architecture runs on it unchanged.  The split is a fixed stratified one computed here (not by a
library's random generator, so it cannot change with a scikit-learn version): 360 test images spread
evenly over each class's images in file order, the other 1,437 for training.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from filter_basis.errors import DataError

from .in_memory import InMemoryImages
from .transforms import cifar_transform

NUM_CLASSES = 10
TEST_SIZE = 360
SIZE = 32

# Per-channel mean and std of the 1,437 training images in [0, 1] (the three channels are equal);
# tests/test_cls_digits.py recomputes them from the data.
DIGITS_MEAN = (0.30526,) * 3
DIGITS_STD = (0.32380,) * 3


def digits_transform(train: bool, flip: bool = True):
    """The CIFAR random crop (pad 4) in training, never a flip (digits are not mirror-symmetric, so
    ``flip`` is ignored), and the Digits normalisation."""
    return cifar_transform(train, flip=False, mean=DIGITS_MEAN, std=DIGITS_STD)


def per_class_test_counts(labels: np.ndarray, test_size: int = TEST_SIZE) -> np.ndarray:
    """Test images per class, proportional to the class sizes (largest remainder, ties to the lower class)."""
    sizes = np.bincount(labels, minlength=NUM_CLASSES)
    share = sizes * test_size / sizes.sum()
    counts = np.floor(share).astype(int)
    by_remainder = sorted(range(NUM_CLASSES), key=lambda c: (-(share[c] - counts[c]), c))
    counts[by_remainder[:test_size - counts.sum()]] += 1
    return counts


def split_mask(labels: np.ndarray) -> np.ndarray:
    """True for the test images: in class c (n images, t of them for testing), the k-th image of the class
    in file order is a test image when floor((k + 1) t / n) > floor(k t / n), i.e. evenly spread."""
    is_test = np.zeros(len(labels), dtype=bool)
    for c, t in enumerate(per_class_test_counts(labels)):
        members = np.flatnonzero(labels == c)
        k = np.arange(len(members))
        is_test[members[(k + 1) * t // len(members) > k * t // len(members)]] = True
    return is_test


@lru_cache(maxsize=1)
def _load() -> tuple:
    """All 1,797 images as (N, 3, 32, 32) uint8 and their labels, made once per process."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("Digits needs scikit-learn (pip install scikit-learn)") from None
    digits = load_digits()
    pixels = torch.from_numpy(digits.images).to(torch.float64)[:, None] * (255 / 16)
    large = F.interpolate(pixels, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    images = large.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    return images, np.asarray(digits.target, dtype=np.int64)


class Digits(InMemoryImages):
    """The training (1,437) or test (360) split: uint8 images (3, 32, 32), labels 0-9."""

    def __init__(self, train: bool, transform=None):
        images, labels = _load()
        keep = torch.from_numpy(~split_mask(labels) if train else split_mask(labels))
        super().__init__(images[keep], torch.from_numpy(labels)[keep], transform)
