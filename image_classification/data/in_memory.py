"""A data set held as one uint8 image tensor and one label tensor (CIFAR, Synthetic)."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset


class InMemoryImages(Dataset):
    """Items ``(transform(images[i]), int(labels[i]))``; ``images`` is (N, 3, H, W) uint8."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform=None):
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])
