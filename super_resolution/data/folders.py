"""Where the SR datasets live and how their HR/LR files pair up (docs/official-code.md#sr-data).

Every folder is looked up in both layouts, ``DIR_DATA/<path>`` (EDSR-PyTorch) and
``DIR_DATA/super_resolution/<path>`` (official scripts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from filter_basis.errors import DataError

from .bicubic import LRSource, made_here, make_lr_images
from .images import image_size, list_images

Pair = Tuple[str, Path, LRSource]
"""(image name, HR file, LR file or LR array)."""


def find_folder(dir_data, relative: str, layout: str) -> Path:
    """``DIR_DATA/relative`` or ``DIR_DATA/super_resolution/relative``, whichever exists."""
    candidates = [Path(dir_data) / relative, Path(dir_data) / "super_resolution" / relative]
    for folder in candidates:
        if folder.is_dir():
            return folder
    raise DataError(f"dataset folder not found: {candidates[0]} (or {candidates[1]}); expected {layout}")


def check_sizes(pairs: Sequence[Pair], scale: int) -> List[Pair]:
    """Refuse the first pair whose HR image is smaller than its LR image x ``scale`` (the HR crop of a
    test image and the HR patch of a training image would not exist); image headers only are read."""
    for _, hr, lr in pairs:
        hr_h, hr_w = image_size(hr)
        lr_h, lr_w = lr.shape[:2] if isinstance(lr, np.ndarray) else image_size(lr)
        if hr_h < lr_h * scale or hr_w < lr_w * scale:
            lr_text = f"its LR image {lr}" if isinstance(lr, Path) else "its LR image"
            raise DataError(f"HR image {hr} ({hr_h}x{hr_w}) is smaller than {lr_text} ({lr_h}x{lr_w}) "
                            f"x{scale} = {lr_h * scale}x{lr_w * scale}: the pair does not belong together or "
                            "the scale is wrong")
    return list(pairs)


def pair_with_lr(hr_paths: Sequence[Path], lr_dir: Path, scale: int) -> List[Pair]:
    """Pair each HR file with ``lr_dir/<stem>x<s>.png`` (the benchmark and DIV2K naming); without an
    ``lr_dir``, or with one made here before, make (or remake) the LR images from HR."""

    def lr_name(hr: Path) -> str:
        return f"{hr.stem}x{scale}.png"

    if lr_dir.is_dir() and not made_here(lr_dir):  # supplied with the dataset: only read
        sources = {p: lr_dir / lr_name(p) for p in hr_paths}
        missing = [lr for lr in sources.values() if not lr.is_file()]
        if missing:
            raise DataError(f"LR image {missing[0]} is missing ({len(missing)} in all); delete {lr_dir} "
                            "to have the LR images made by bicubic downscaling")
    else:
        sources = make_lr_images(hr_paths, lr_dir, lr_name, scale)
    return check_sizes([(p.stem, p, sources[p]) for p in hr_paths], scale)


def benchmark_pairs(dir_data, name: str, scale: int) -> List[Pair]:
    """Set5, Set14, B100, Urban100: ``benchmark/NAME/HR/*.png`` and ``LR_bicubic/X<s>/<stem>x<s>.png``."""
    root = find_folder(dir_data, f"benchmark/{name}",
                       f"benchmark/{name}/HR/*.png [+ LR_bicubic/X{scale}/<name>x{scale}.png]")
    hr_dir = root / "HR"
    hr_paths = list_images(hr_dir) if hr_dir.is_dir() else []
    if not hr_paths:
        raise DataError(f"no HR images in {hr_dir}; expected {hr_dir}/*.png")
    _by_stem(hr_paths)  # a.png and a.bmp would share one LR file (a<x>.png): refused, naming both
    return pair_with_lr(hr_paths, root / "LR_bicubic" / f"X{scale}", scale)


def div2k_pairs(dir_data, split: str, first: int, last: int, scale: int) -> List[Pair]:
    """DIV2K images ``first..last`` of ``split`` ("train": 0001-0800, "valid": 0801-0900):
    ``DIV2K/DIV2K_<split>_HR/NNNN.png`` and ``DIV2K_<split>_LR_bicubic/X<s>/NNNNx<s>.png``."""
    layout = f"DIV2K/DIV2K_{split}_HR/NNNN.png [+ DIV2K_{split}_LR_bicubic/X{scale}/NNNNx{scale}.png]"
    hr_dir = find_folder(dir_data, f"DIV2K/DIV2K_{split}_HR", layout)
    hr_paths = [hr_dir / f"{i:04d}.png" for i in range(first, last + 1)]
    missing = [p for p in hr_paths if not p.is_file()]
    if missing:
        raise DataError(f"DIV2K image {missing[0]} is missing ({len(missing)} of {first:04d}-{last:04d}; "
                        "check --n_train / --offset_val / --n_val)")
    lr_dir = hr_dir.parent / f"DIV2K_{split}_LR_bicubic" / f"X{scale}"
    return pair_with_lr(hr_paths, lr_dir, scale)


def _by_stem(paths: Sequence[Path]) -> Dict[str, Path]:
    by_stem: Dict[str, Path] = {}
    for path in paths:
        if path.stem in by_stem:
            raise DataError(f"{by_stem[path.stem]} and {path.name} have the same name: keep one image per "
                            "name (images are paired by name)")
        by_stem[path.stem] = path
    return by_stem


def pair_by_name(hr_paths: Sequence[Path], lr_paths: Sequence[Path], scale: int) -> List[Pair]:
    """Pair each HR file with the LR file of the same name, or of that name plus ``x<s>`` (the EDSR
    naming); an HR file without an LR partner, or an LR file left without an HR one, is refused."""
    lr_by_stem = _by_stem(lr_paths)
    pairs, used = [], set()
    for hr in _by_stem(hr_paths).values():
        matches = [lr_by_stem[s] for s in (hr.stem, f"{hr.stem}x{scale}") if s in lr_by_stem]
        if len(matches) != 1:
            lr_dir = lr_paths[0].parent if lr_paths else "the LR folder"
            found = "both " + " and ".join(m.name for m in matches) if matches else "neither"
            raise DataError(f"HR image {hr} has no single LR partner in {lr_dir}: expected {hr.stem}<ext> or "
                            f"{hr.stem}x{scale}<ext>, found {found}")
        if matches[0] in used:
            raise DataError(f"LR image {matches[0]} is the partner of two HR images (one is named like the "
                            f"other plus x{scale}); rename one")
        pairs.append((hr.stem, hr, matches[0]))
        used.add(matches[0])
    unpaired = [lr for lr in lr_paths if lr not in used]
    if unpaired:
        raise DataError(f"LR image {unpaired[0]} has no HR partner ({len(unpaired)} unpaired LR images in "
                        "all); HR and LR images are paired by name")
    return pairs


def div2k_sub_pairs(dir_data, n_images: int, scale: int) -> List[Pair]:
    """DIV2KSUB (the paper's training set): ``DIV2K/GT_sub/*.png`` with ``DIV2K/GT_sub_bicLRx<s>/*.png``,
    paired by name (``NAME.png`` with ``NAME.png`` or ``NAMEx<s>.png``), in sorted HR order; the first
    ``n_images`` pairs.  Every pair of the folder is checked, not only the first ``n_images``."""
    hr_dir = find_folder(dir_data, "DIV2K/GT_sub", f"DIV2K/GT_sub/*.png and DIV2K/GT_sub_bicLRx{scale}/*.png")
    lr_dir = hr_dir.parent / f"GT_sub_bicLRx{scale}"
    if not lr_dir.is_dir():
        raise DataError(f"LR folder {lr_dir} not found; expected the x{scale} bicubic sub-images of {hr_dir}")
    pairs = pair_by_name(list_images(hr_dir), list_images(lr_dir), scale)
    if len(pairs) < n_images:
        raise DataError(f"{hr_dir} holds {len(pairs)} images, fewer than --n_train {n_images}")
    return check_sizes(pairs, scale)[:n_images]
