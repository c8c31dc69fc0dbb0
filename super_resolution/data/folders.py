"""Where the SR datasets live and how their HR/LR files pair up (architectures.md 5.4).

Every folder is looked up in both layouts, ``DIR_DATA/<path>`` (EDSR-PyTorch) and
``DIR_DATA/super_resolution/<path>`` (official scripts).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence, Tuple

from filter_basis.errors import DataError

from .bicubic import LRSource, make_lr_images
from .images import list_images

Pair = Tuple[str, Path, LRSource]
"""(image name, HR file, LR file or LR array)."""


def find_folder(dir_data, relative: str, layout: str) -> Path:
    """``DIR_DATA/relative`` or ``DIR_DATA/super_resolution/relative``, whichever exists."""
    candidates = [Path(dir_data) / relative, Path(dir_data) / "super_resolution" / relative]
    for folder in candidates:
        if folder.is_dir():
            return folder
    raise DataError(f"dataset folder not found: {candidates[0]} (or {candidates[1]}); expected {layout}")


def pair_with_lr(hr_paths: Sequence[Path], lr_dir: Path, scale: int) -> List[Pair]:
    """Pair each HR file with ``lr_dir/<stem>x<s>.png`` (the benchmark and DIV2K naming); without an
    ``lr_dir``, make the LR images."""

    def lr_name(hr: Path) -> str:
        return f"{hr.stem}x{scale}.png"

    if lr_dir.is_dir():
        sources = {p: lr_dir / lr_name(p) for p in hr_paths}
        missing = [lr for lr in sources.values() if not lr.is_file()]
        if missing:
            raise DataError(f"LR image {missing[0]} is missing ({len(missing)} in all); delete {lr_dir} "
                            "to have the LR images made by bicubic downscaling")
    else:
        sources = make_lr_images(hr_paths, lr_dir, lr_name, scale)
    return [(p.stem, p, sources[p]) for p in hr_paths]


def benchmark_pairs(dir_data, name: str, scale: int) -> List[Pair]:
    """Set5, Set14, B100, Urban100: ``benchmark/NAME/HR/*.png`` and ``LR_bicubic/X<s>/<stem>x<s>.png``."""
    root = find_folder(dir_data, f"benchmark/{name}",
                       f"benchmark/{name}/HR/*.png [+ LR_bicubic/X{scale}/<name>x{scale}.png]")
    hr_dir = root / "HR"
    hr_paths = list_images(hr_dir) if hr_dir.is_dir() else []
    if not hr_paths:
        raise DataError(f"no HR images in {hr_dir}; expected {hr_dir}/*.png")
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


def div2k_sub_pairs(dir_data, n_images: int, scale: int) -> List[Pair]:
    """DIV2KSUB (the paper's training set): ``DIV2K/GT_sub/*.png`` with ``DIV2K/GT_sub_bicLRx<s>/*.png``,
    paired by sorted order; the first ``n_images`` pairs."""
    hr_dir = find_folder(dir_data, "DIV2K/GT_sub", f"DIV2K/GT_sub/*.png and DIV2K/GT_sub_bicLRx{scale}/*.png")
    lr_dir = hr_dir.parent / f"GT_sub_bicLRx{scale}"
    if not lr_dir.is_dir():
        raise DataError(f"LR folder {lr_dir} not found; expected the x{scale} bicubic sub-images of {hr_dir}")
    hr_paths, lr_paths = list_images(hr_dir), list_images(lr_dir)
    if len(hr_paths) != len(lr_paths):
        raise DataError(f"{hr_dir} holds {len(hr_paths)} images but {lr_dir} holds {len(lr_paths)}")
    if len(hr_paths) < n_images:
        raise DataError(f"{hr_dir} holds {len(hr_paths)} images, fewer than --n_train {n_images}")
    return [(hr.stem, hr, lr) for hr, lr in zip(hr_paths[:n_images], lr_paths[:n_images])]
