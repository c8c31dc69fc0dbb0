"""ImageNet (ILSVRC2012) read as an image folder: ``dir_data/ILSVRC2012/{train,val}/CLASS/*.JPEG``."""

from __future__ import annotations

from pathlib import Path

from torchvision.datasets import ImageFolder

from filter_basis.errors import DataError


def imagenet(dir_data: str, train: bool, transform=None) -> ImageFolder:
    root = Path(dir_data) / "ILSVRC2012" / ("train" if train else "val")
    if not root.is_dir():
        raise DataError(f"ImageNet folder {root} not found: expected ILSVRC2012/{{train,val}}/CLASS/*.JPEG "
                        "under --dir_data")
    return ImageFolder(str(root), transform=transform)
