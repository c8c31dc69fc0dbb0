"""Parts every SR model shares: mean shift, residual block, upsampler (docs/official-code.md#shared-parts)."""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from filter_basis.errors import OptionError

from ..colour import rgb_to_y

RGB_MEAN = (0.4488, 0.4371, 0.4040)  # DIV2K mean colour, as fractions of rgb_range


def conv3x3(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Conv2d:
    """The plain convolution of the SR models: stride 1, 'same' padding, bias on."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)


class MeanShift(nn.Conv2d):
    """A 1x1 convolution that subtracts (sign -1) or adds (sign +1) the dataset mean colour.

    It starts at the nominal values and, as in the official code (docs/official-code.md#defects, D4),
    stays trainable: its parameters are in the optimizer and in checkpoints, so they are loaded rather than
    assumed.
    """

    def __init__(self, rgb_range: float, sign: int, mean: Sequence[float] = RGB_MEAN):
        channels = len(mean)
        super().__init__(channels, channels, kernel_size=1)
        nn.init.dirac_(self.weight)  # identity (the std is 1)
        with torch.no_grad():
            for channel, value in enumerate(mean):
                self.bias[channel] = sign * rgb_range * value


def mean_colour(n_colors: int) -> tuple:
    """The mean of the training images in the model's colour space: RGB, or BT.601 luma for 1 channel."""
    if n_colors == 3:
        return RGB_MEAN
    if n_colors == 1:
        return (rgb_to_y(*(255 * value for value in RGB_MEAN)) / 255,)
    raise OptionError(f"--n_colors {n_colors} is not supported; use 3 (RGB) or 1 (Y channel)")


class ResidualBlock(nn.Module):
    """``x + res_scale * body(x)``: no activation after the addition (EDSR and SRResNet blocks)."""

    def __init__(self, layers: Sequence[nn.Module], res_scale: float = 1.0):
        super().__init__()
        self.body = nn.Sequential(*layers)
        self.res_scale = res_scale

    def forward(self, x):
        y = self.body(x)
        if self.res_scale != 1:
            y = y * self.res_scale
        return y + x

    def extra_repr(self) -> str:
        return f"res_scale={self.res_scale}"


class Upsampler(nn.Sequential):
    """Sub-pixel upsampling: log2(s) stages of conv (n -> 4n) + PixelShuffle(2), or one x3 stage.

    Each stage optionally ends with a NEW activation from ``act`` (SRResNet's upsampler PReLUs are
    not the model's shared one).  Convs are 3x3, stride 1, bias on: what the official upsampler meant
    (docs/official-code.md#defects, D1).
    """

    def __init__(self, scale: int, n_feats: int, act: Optional[Callable[[], nn.Module]] = None):
        if scale == 3:
            factors = [3]
        elif scale >= 2 and scale & (scale - 1) == 0:
            factors = [2] * int(math.log2(scale))
        else:
            raise OptionError(f"--scale {scale} is not supported by the upsampler; use 2, 3, 4 or "
                              "another power of 2")
        layers = []
        for r in factors:
            layers += [conv3x3(n_feats, r * r * n_feats), nn.PixelShuffle(r)]
            if act is not None:
                layers.append(act())
        super().__init__(*layers)
