"""Low-resolution inputs made the way the benchmarks' were: MATLAB-compatible bicubic downscaling.

When a dataset has no ``LR_bicubic/X<s>`` folder, its LR images are computed from HR (cropped to a
multiple of the scale first, so the pair stays aligned) with ``bicubic-pytorch``'s MATLAB
``imresize`` port, and written there once (the folder appears complete or not at all); if the data
folder is read-only they are kept in memory instead.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Dict, Sequence, Union

import imageio.v3 as iio
import numpy as np
import torch
from bicubic_pytorch import core

from filter_basis.engine.checkpoint import current_umask

from .images import read_image

log = logging.getLogger(__name__)

LRSource = Union[Path, np.ndarray]


def downscale(hr: np.ndarray, scale: int) -> np.ndarray:
    """The (h // s, w // s) bicubic (antialiased, MATLAB imresize) LR image of an (H, W, C) uint8 HR."""
    h, w = hr.shape[0] // scale * scale, hr.shape[1] // scale * scale
    x = torch.from_numpy(np.ascontiguousarray(hr[:h, :w].transpose(2, 0, 1)))[None]
    lr = core.imresize(x, scale=1 / scale)
    return lr[0].numpy().transpose(1, 2, 0)


def make_lr_images(hr_paths: Sequence[Path], lr_dir: Path, lr_name: Callable[[Path], str],
                   scale: int) -> Dict[Path, LRSource]:
    """``{hr_path: LR file or array}`` for a dataset whose ``lr_dir`` does not exist yet."""
    log.info("making x%d bicubic LR images of %d files for %s", scale, len(hr_paths), lr_dir)
    in_memory = lambda: {p: downscale(read_image(p), scale) for p in hr_paths}
    try:
        lr_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{lr_dir.name}-", dir=lr_dir.parent))
        os.chmod(staging, 0o777 & ~current_umask())  # an ordinary folder once renamed, not mkdtemp's 0700
    except OSError:  # read-only data folder
        return in_memory()
    try:
        for hr_path in hr_paths:
            lr = downscale(read_image(hr_path), scale)
            iio.imwrite(staging / lr_name(hr_path), lr[:, :, 0] if lr.shape[2] == 1 else lr)
        os.replace(staging, lr_dir)
    except OSError:  # another process finished first, or the disk is full
        shutil.rmtree(staging, ignore_errors=True)
        if not lr_dir.is_dir():
            return in_memory()
    return {p: lr_dir / lr_name(p) for p in hr_paths}
