"""``--ext sep``: training images decoded once into ``.npy`` files beside them (official storage option).

Decoding a 2K PNG for every random patch would leave the GPU waiting; a ``.npy`` file loads in a
fraction of the time.  The files are written up front, when the training set is built (``sep_reset``
rewrites them); where the data folder is read-only the PNGs are decoded on every use instead.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from filter_basis.engine.checkpoint import write_atomic

from .bicubic import LRSource
from .images import read_image

log = logging.getLogger(__name__)


def decoded_path(image: Path) -> Path:
    return image.with_suffix(".npy")


def build_cache(images: Sequence[LRSource], reset: bool) -> bool:
    """Write the missing (all, with ``reset``) ``.npy`` files; False if the folder is not writable."""
    todo = [p for p in images if isinstance(p, Path) and (reset or not decoded_path(p).is_file())]
    if todo:
        log.info("decoding %d training images into .npy files", len(todo))
    try:
        for image in todo:  # atomic: a run killed mid-write leaves no half-written .npy behind
            array = read_image(image)
            write_atomic(decoded_path(image), lambda f, a=array: np.save(f, a))
    except OSError:
        return False
    return True


def load_decoded(source: LRSource) -> np.ndarray:
    """The (H, W, C) uint8 image from its ``.npy`` file (or the array itself)."""
    return source if isinstance(source, np.ndarray) else np.load(decoded_path(source))
