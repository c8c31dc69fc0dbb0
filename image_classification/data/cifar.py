"""CIFAR-10 and CIFAR-100 read from the python-pickle folders that torchvision downloads.

The folders are read here rather than through ``torchvision.datasets.CIFAR10`` so that a missing or
incomplete folder gives a one-line :class:`DataError` naming the file, and a folder with other contents
(for instance a small subset made for tests) is read as it is; torchvision is used for ``--download``.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from filter_basis.errors import DataError

from .in_memory import InMemoryImages

# name (also the torchvision class that downloads it) -> (folder, training files, test files, label key)
LAYOUTS = {
    "CIFAR10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels"),
    "CIFAR100": ("cifar-100-python", ["train"], ["test"], "fine_labels"),
}


def _read_batch(path: Path, label_key: str):
    if not path.is_file():
        raise DataError(f"missing CIFAR file {path}")
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        data = torch.as_tensor(entry["data"], dtype=torch.uint8).reshape(-1, 3, 32, 32)
        labels = torch.as_tensor(entry[label_key], dtype=torch.long)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, RuntimeError) as e:
        raise DataError(f"unreadable CIFAR file {path}: expected a pickled dict with 'data' (N x 3072 uint8) "
                        f"and '{label_key}' ({type(e).__name__}: {e})") from None
    if len(labels) != len(data):
        raise DataError(f"CIFAR file {path} has {len(data)} images but {len(labels)} labels")
    return data, labels


def download(name: str, dir_data: str) -> None:
    """Fetch and verify the archive with torchvision (only called with ``--download``)."""
    import torchvision.datasets

    getattr(torchvision.datasets, name)(root=dir_data, train=True, download=True)


class CIFAR(InMemoryImages):
    """CIFAR10 or CIFAR100 (``name``) from ``dir_data/<torchvision folder>``: uint8 images, int labels."""

    def __init__(self, name: str, dir_data: str, train: bool, transform=None):
        folder, train_files, test_files, label_key = LAYOUTS[name]
        root = Path(dir_data) / folder
        if not root.is_dir():
            raise DataError(f"{name} folder {root} not found: expected torchvision's '{folder}' folder "
                            f"({', '.join(train_files + test_files)}) under --dir_data, or add --download")
        batches = [_read_batch(root / f, label_key) for f in (train_files if train else test_files)]
        super().__init__(torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]), transform)
