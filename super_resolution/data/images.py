"""Image files to model tensors: 8-bit reading, the channel fix, scaling to [0, rgb_range] (5.4)."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from PIL import Image

from filter_basis.errors import DataError

from ..colour import rgb_to_y

IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")


def list_images(folder: Path) -> list:
    """The image files of ``folder``, in sorted name order."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def read_image(path: Path) -> np.ndarray:
    """An (H, W, C) uint8 array; a greyscale file gets a channel axis, an alpha channel is dropped."""
    try:
        image = iio.imread(path)
    except MemoryError:
        raise  # the file may be fine: said as what it is
    except Exception as error:  # a damaged or non-image file (each plugin raises its own types): one line
        raise DataError(f"cannot read image {path}: {str(error).splitlines()[0]}") from None
    if image.dtype != np.uint8:
        raise DataError(f"image {path} is {image.dtype}, expected 8-bit")
    if image.ndim == 2:
        image = image[:, :, None]
    return image[:, :, :3] if image.shape[2] == 4 else image


def image_size(path: Path) -> tuple:
    """``(height, width)`` of an image file from its header alone (Pillow reads no pixels for this: a
    whole training set is checked in seconds, where decoding it would take minutes)."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except OSError as error:  # missing, unreadable, or not an image (UnidentifiedImageError)
        raise DataError(f"cannot read image {path}: {str(error).splitlines()[0]}") from None
    return height, width


def set_channel(image: np.ndarray, n_colors: int) -> np.ndarray:
    """Grey -> replicated to RGB (n_colors 3); RGB -> its BT.601 Y channel, 16..235 (n_colors 1)."""
    channels = image.shape[2]
    if n_colors == 3 and channels == 1:
        return np.repeat(image, 3, axis=2)
    if n_colors == 1 and channels == 3:
        rgb = image.astype(np.float64)
        return rgb_to_y(rgb[..., 0], rgb[..., 1], rgb[..., 2])[:, :, None]
    return image


def to_tensor(image: np.ndarray, rgb_range: float) -> torch.Tensor:
    """(H, W, C) 0..255 array -> (C, H, W) float tensor in [0, rgb_range]."""
    chw = np.ascontiguousarray(image.transpose(2, 0, 1))
    return torch.from_numpy(chw).float().mul_(rgb_range / 255)
