"""``--ext sep``: training images decoded once into ``.npy`` files beside them (official storage option).

Decoding a 2K PNG for every random patch would leave the GPU waiting; a ``.npy`` file loads in a
fraction of the time.  The files are written up front, when the training set is built, and remade
whenever their image changed since (size or mtime, recorded in each folder's ``DECODED_RECORD``;
``sep_reset`` remakes them all).  Where the data folder is read-only the PNGs are decoded on every use
instead, with a warning; any other failure to write (a full disk, ...) stops the run with one line.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from filter_basis.engine.checkpoint import write_atomic
from filter_basis.errors import DataError

from .bicubic import LRSource
from .derived_files import SourceRecord, is_read_only, source_key
from .images import read_image

log = logging.getLogger(__name__)

DECODED_RECORD = ".decoded_npy.json"


def decoded_path(image: Path) -> Path:
    return image.with_suffix(".npy")


def build_cache(images: Sequence[LRSource], reset: bool) -> bool:
    """Write the missing or stale (all, with ``reset``) ``.npy`` files; False if the folder is read-only."""
    by_folder = defaultdict(list)
    for image in images:
        if isinstance(image, Path):  # arrays (LR images kept in memory) need no decoding
            by_folder[image.parent].append(image)
    try:
        for folder, folder_images in by_folder.items():
            _refresh(folder, folder_images, reset)
    except OSError as error:
        if not is_read_only(error):
            raise DataError(f"cannot write the decoded training images (--ext sep): {error}; free the "
                            "space or fix the folder, or use --ext img to decode on every use") from None
        log.warning("cannot write .npy files beside the training images (%s): decoding the images on every "
                    "use instead", error)
        return False
    return True


def _refresh(folder: Path, images: Sequence[Path], reset: bool) -> None:
    record = SourceRecord(folder, DECODED_RECORD)
    keys = {image: source_key(image) for image in images}  # looked at before reading: see derived_files
    todo = [p for p in images if reset or not record.is_current(decoded_path(p).name, keys[p])]
    if todo:
        log.info("decoding %d training images of %s into .npy files", len(todo), folder)
    try:
        for image in todo:  # atomic: a run killed mid-write leaves no half-written .npy behind
            array = read_image(image)
            write_atomic(decoded_path(image), lambda f, a=array: np.save(f, a))
            record.record(decoded_path(image).name, keys[image])
    finally:
        record.save()  # what was written stays known even if a later image fails


def load_decoded(source: LRSource) -> np.ndarray:
    """The (H, W, C) uint8 image from its ``.npy`` file (or the array itself)."""
    return source if isinstance(source, np.ndarray) else np.load(decoded_path(source))
