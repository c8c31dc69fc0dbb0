"""SR quality metrics with the conventions the published numbers use (docs/official-code.md#sr-evaluation).

PSNR follows the official code (luminance of the difference on benchmarks, RGB on DIV2K); SSIM, which
the official code did not compute, follows the usual SR convention through scikit-image.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from skimage.metrics import structural_similarity

from super_resolution.colour import rgb_to_y

# BT.601 luma of a [0, 1] difference image, as the official PSNR (no offset: differences cancel it)
_PSNR_LUMA = (65.738 / 256, 129.057 / 256, 25.064 / 256)


def quantize(sr: torch.Tensor, rgb_range: float) -> torch.Tensor:
    """What saving as 8-bit would keep: scale to 0..255, clamp, round, scale back."""
    pixel_range = 255 / rgb_range
    return sr.mul(pixel_range).clamp(0, 255).round().div(pixel_range)


def _shave(x, border: int):
    """Cut ``border`` pixels from every side of a tensor or array (last two axes)."""
    return x[..., border:-border, border:-border] if border > 0 else x


def calc_psnr(sr: torch.Tensor, hr: torch.Tensor, scale: int, rgb_range: float, benchmark: bool) -> float:
    """PSNR in dB of one image (N = 1) or of the whole batch as one set of pixels.

    Benchmarks (Set5, Set14, B100, Urban100): luminance of ``(sr - hr) / rgb_range``, ``scale`` border
    pixels cut.  DIV2K validation (``benchmark=False``): all colour channels, ``scale + 6`` cut.
    """
    if sr.shape != hr.shape:
        raise ValueError(f"calc_psnr: sr {tuple(sr.shape)} and hr {tuple(hr.shape)} differ in shape")
    diff = (sr.double() - hr.double()) / rgb_range
    if benchmark:
        border = scale
        if diff.shape[-3] == 3:
            coeffs = diff.new_tensor(_PSNR_LUMA).view(3, 1, 1)
            diff = (diff * coeffs).sum(dim=-3, keepdim=True)
    else:
        border = scale + 6
    mse = _shave(diff, border).pow(2).mean().item()
    return math.inf if mse == 0 else -10 * math.log10(mse)


def luminance(image: torch.Tensor, rgb_range: float) -> np.ndarray:
    """The BT.601 Y channel (16..235) of one (C, H, W) image in [0, rgb_range], as float64 numpy.
    A one-channel image is taken to be Y already."""
    x = image.detach().double().cpu() * (255 / rgb_range)
    if x.shape[0] == 1:
        return x[0].numpy()
    return rgb_to_y(x[0], x[1], x[2]).numpy()


def calc_ssim(sr: torch.Tensor, hr: torch.Tensor, scale: int, rgb_range: float) -> float:
    """Mean SSIM over the images of the batch: Y channel, ``scale`` border pixels cut, Gaussian window
    (sigma 1.5), K1 0.01, K2 0.03, data range 255 (the usual SR reporting convention)."""
    if sr.shape != hr.shape:
        raise ValueError(f"calc_ssim: sr {tuple(sr.shape)} and hr {tuple(hr.shape)} differ in shape")
    values = []
    for a, b in zip(sr.reshape(-1, *sr.shape[-3:]), hr.reshape(-1, *hr.shape[-3:])):
        ya, yb = (_shave(luminance(t, rgb_range), scale) for t in (a, b))
        values.append(structural_similarity(ya, yb, gaussian_weights=True, sigma=1.5,
                                            use_sample_covariance=False, data_range=255))
    return float(np.mean(values))
