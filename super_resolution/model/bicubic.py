"""``--model Bicubic``: MATLAB-compatible bicubic upscaling as a model without parameters.

The bicubic row of every SR table then comes out of the same test pipeline, metrics and experiment
folder as the networks.  It upscales with ``bicubic-pytorch``'s port of MATLAB ``imresize``, the same
resize that makes the benchmark LR images.  There is nothing to train: only ``--test_only`` (and
``--summary``) accept it.
"""

from __future__ import annotations

import torch
from bicubic_pytorch import core
from torch import nn

from filter_basis.errors import OptionError


class Bicubic(nn.Module):
    """(N, C, h, w) -> (N, C, h * scale, w * scale), values unclipped (the test pipeline quantises)."""

    def __init__(self, scale: int):
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_meta:  # --summary counts on the meta device, where the resize's index arithmetic cannot run
            return x.new_empty(*x.shape[:-2], x.shape[-2] * self.scale, x.shape[-1] * self.scale)
        return core.imresize(x, scale=self.scale).to(x.dtype)


def build_bicubic(args) -> Bicubic:
    if not (args.test_only or args.summary):
        raise OptionError("--model Bicubic has no parameters to train; use it with --test_only")
    return Bicubic(args.scale[0])
