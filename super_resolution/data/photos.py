"""``Photos``: the colour photographs bundled with scikit-image, scikit-learn and matplotlib (no download).

Twelve images, a fixed split: test = chelsea, coffee, flower, grace_hopper; training = the other eight,
in the order below (``--n_train N`` keeps the first N).  On first use each split is written to
``DIR_DATA/Photos/<split>/HR/<name>.png`` (8-bit RGB, a greyscale source replicated, cropped at the
top-left to a multiple of 12 so that x2, x3 and x4 pairs align) and its LR images are made from those
files by the MATLAB-compatible bicubic of the benchmark sets, into ``LR_bicubic/X<s>/<name>x<s>.png``.
Each folder appears complete or not at all; a read-only ``--dir_data`` keeps the images in memory.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable, Dict, List

import imageio.v3 as iio
import numpy as np

from filter_basis.engine.checkpoint import make_temp_dir
from filter_basis.errors import DataError, OptionError

from .bicubic import downscale
from .derived_files import is_read_only
from .folders import Pair, pair_with_lr
from .images import read_image, set_channel

MULTIPLE = 12  # HR sides are cut to a multiple of this: every scale 2, 3, 4 divides them


def _skimage(name: str) -> Callable[[], Path]:
    def locate() -> Path:
        import skimage.data

        return Path(skimage.data.data_dir) / name
    return locate


def _sklearn(name: str) -> Callable[[], Path]:
    def locate() -> Path:
        try:
            import sklearn.datasets
        except ImportError:
            raise DataError(f"Photos needs scikit-learn for {name} (pip install scikit-learn)") from None
        return Path(sklearn.datasets.__file__).parent / "images" / name
    return locate


def _matplotlib(name: str) -> Callable[[], Path]:
    def locate() -> Path:
        import matplotlib

        return Path(matplotlib.get_data_path()) / "sample_data" / name
    return locate


# name -> where the installed package keeps the file
SOURCES: Dict[str, Callable[[], Path]] = {
    "astronaut": _skimage("astronaut.png"),
    "hubble_deep_field": _skimage("hubble_deep_field.jpg"),
    "ihc": _skimage("ihc.png"),
    "motorcycle_left": _skimage("motorcycle_left.png"),
    "motorcycle_right": _skimage("motorcycle_right.png"),
    "retina": _skimage("retina.jpg"),
    "rocket": _skimage("rocket.jpg"),
    "china": _sklearn("china.jpg"),
    "chelsea": _skimage("chelsea.png"),
    "coffee": _skimage("coffee.png"),
    "flower": _sklearn("flower.jpg"),
    "grace_hopper": _matplotlib("grace_hopper.jpg"),
}
SPLITS = {
    "test": ["chelsea", "coffee", "flower", "grace_hopper"],
    "train": ["astronaut", "hubble_deep_field", "ihc", "motorcycle_left", "motorcycle_right", "retina",
              "rocket", "china"],
}


def hr_image(name: str) -> np.ndarray:
    """The HR image ``name``: its source file as 8-bit RGB, cropped at the top-left to a multiple of 12."""
    path = SOURCES[name]()
    if not path.is_file():
        raise DataError(f"Photos source image {path} is missing (the '{name}' file of an installed package); "
                        "reinstall scikit-image, scikit-learn and matplotlib")
    image = set_channel(read_image(path), 3)
    h, w = image.shape[0] // MULTIPLE * MULTIPLE, image.shape[1] // MULTIPLE * MULTIPLE
    return np.ascontiguousarray(image[:h, :w])


def _write_hr(names: List[str], hr_dir: Path) -> bool:
    """Write the HR files into a staging folder renamed to ``hr_dir``; False if the folder is read-only
    (any other write error is reported, as for the LR images)."""
    try:
        hr_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = make_temp_dir(hr_dir.parent, prefix=f".{hr_dir.name}-")  # 0777 & ~umask, not 0700
    except OSError as error:
        return _written_or_failed(error, hr_dir)
    try:
        for name in names:
            iio.imwrite(staging / f"{name}.png", hr_image(name))
        os.replace(staging, hr_dir)
    except OSError as error:
        if not hr_dir.is_dir():  # not merely another process that finished first
            return _written_or_failed(error, hr_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True


def _written_or_failed(error: OSError, hr_dir: Path) -> bool:
    if not is_read_only(error):
        raise DataError(f"cannot write the Photos images to {hr_dir}: {error}") from None
    return False


def photos_pairs(dir_data, split: str, scale: int) -> List[Pair]:
    """The (name, HR, LR) pairs of a split, made on first use (see the module docstring)."""
    names = SPLITS[split]
    root = Path(dir_data) / "Photos" / split
    hr_dir = root / "HR"
    if not hr_dir.is_dir() and not _write_hr(names, hr_dir):  # read-only --dir_data: kept in memory
        return [(name, hr, downscale(hr, scale)) for name, hr in ((n, hr_image(n)) for n in names)]
    hr_paths = [hr_dir / f"{name}.png" for name in names]
    missing = [p for p in hr_paths if not p.is_file()]
    if missing:
        raise DataError(f"Photos image {missing[0]} is missing; delete {root} to have the split made again")
    return pair_with_lr(hr_paths, root / "LR_bicubic" / f"X{scale}", scale)


def train_pairs(args) -> List[Pair]:
    """All eight training pairs, or the first ``--n_train`` when it is given (at most 8)."""
    available = len(SPLITS["train"])
    n = available if getattr(args.n_train, "is_default", False) else args.n_train
    if n > available:
        raise OptionError(f"--n_train {n} exceeds the {available} training images of Photos; use 1 to "
                          f"{available} (or leave it out for all)")
    return photos_pairs(args.dir_data, "train", args.scale[0])[:n]


def test_pairs(args) -> List[Pair]:
    return photos_pairs(args.dir_data, "test", args.scale[0])
