"""A deterministic CIFAR-shaped data set made on the spot: no files, no download.

Each class has a fixed random pattern and every image is its class pattern plus noise, so a model can
actually learn it: quick runs and tests see the loss fall, not just a pipeline that runs.
"""

from __future__ import annotations

import torch

from .in_memory import InMemoryImages

TRAIN_SIZE = 1000
TEST_SIZE = 200
NUM_CLASSES = 10


class Synthetic(InMemoryImages):
    """``TRAIN_SIZE`` or ``TEST_SIZE`` uint8 images (3, 32, 32) in ``NUM_CLASSES`` classes.

    The class patterns come from one fixed seed, so the training and test splits share them and differ
    in their labels and noise.
    """

    def __init__(self, train: bool, transform=None):
        size = TRAIN_SIZE if train else TEST_SIZE
        generator = torch.Generator().manual_seed(0)
        patterns = torch.randint(0, 256, (NUM_CLASSES, 3, 32, 32), generator=generator)
        generator.manual_seed(1 if train else 2)
        labels = torch.randint(0, NUM_CLASSES, (size,), generator=generator)
        noise = torch.randint(0, 256, (size, 3, 32, 32), generator=generator)
        super().__init__(((patterns[labels] + noise) // 2).to(torch.uint8), labels, transform)
