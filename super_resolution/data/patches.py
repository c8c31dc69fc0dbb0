"""Training-sample randomness: aligned LR/HR patches, flips/transposes, LR noise
(docs/official-code.md#sr-data).

All draws use torch's generator, so seeding, DataLoader workers and resumed runs stay reproducible.
"""

from __future__ import annotations

import re
from typing import Callable, Optional, Tuple

import numpy as np
import torch

from filter_basis.errors import DataError, OptionError

Noise = Callable[[np.ndarray], np.ndarray]


def _randint(high: int) -> int:
    return int(torch.randint(high, ()).item())


def random_patch(lr: np.ndarray, hr: np.ndarray, patch_size: int,
                 scale: int) -> Tuple[np.ndarray, np.ndarray]:
    """An LR patch of ``patch_size // scale`` at a uniform corner and the HR patch ``scale`` x that."""
    ip = patch_size // scale
    lh, lw = lr.shape[:2]
    if lh < ip or lw < ip:
        raise DataError(f"LR image of {lh}x{lw} is smaller than the LR patch {ip}x{ip} "
                        f"(--patch_size {patch_size} / scale {scale})")
    iy, ix = _randint(lh - ip + 1), _randint(lw - ip + 1)
    ty, tx = scale * iy, scale * ix
    return lr[iy:iy + ip, ix:ix + ip], hr[ty:ty + ip * scale, tx:tx + ip * scale]


def augment(*images: np.ndarray) -> Tuple[np.ndarray, ...]:
    """The same random width flip, height flip and transpose (each p = 0.5) for all images."""
    flip_w, flip_h, transpose = (bool(torch.rand(()) < 0.5) for _ in range(3))

    def apply(image: np.ndarray) -> np.ndarray:
        if flip_w:
            image = image[:, ::-1]
        if flip_h:
            image = image[::-1]
        if transpose:
            image = image.transpose(1, 0, 2)
        return np.ascontiguousarray(image)

    return tuple(apply(image) for image in images)


def parse_noise(spec: str) -> Optional[Noise]:
    """``--noise``: ``.`` none; ``G<n>`` Gaussian, std n pixel levels (rounded); ``S<n>`` Poisson
    shot noise at n photons per level, de-meaned per channel, added to the image (as intended: the
    official code added the noisy image itself, docs/official-code.md#defects, D13).  Results are clipped
    to 0..255."""
    if spec == ".":
        return None
    match = re.fullmatch(r"([GS])(\d+(?:\.\d+)?)", spec)
    if not match or float(match.group(2)) <= 0:
        raise OptionError(f"--noise {spec!r} is not accepted; use '.', G<std> (e.g. G10) "
                          "or S<level> (e.g. S5)")
    kind, level = match.group(1), float(match.group(2))

    def add_noise(image: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(image.astype(np.float64))
        if kind == "G":
            noise = torch.randn(x.shape, dtype=torch.float64).mul(level).round()
        else:
            noise = torch.poisson(x * level) / level - x
            noise = noise - noise.mean(dim=(0, 1), keepdim=True)
        noisy = (x + noise).clamp(0, 255)
        return noisy.round().numpy().astype(image.dtype) if image.dtype == np.uint8 else noisy.numpy()

    return add_noise
