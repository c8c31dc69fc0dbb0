"""Test-time forward passes: memory-bounded tiling (--chop) and the x8 self-ensemble
(docs/official-code.md#sr-evaluation).

Both take ``forward``, any function from an LR batch to its SR batch, so they compose:
``self_ensemble(lambda x: forward_chop(model, x, scale), lr)``.
"""

from __future__ import annotations

from typing import Callable, List

import torch

Forward = Callable[[torch.Tensor], torch.Tensor]


def forward_chop(forward: Forward, x: torch.Tensor, scale: int, shave: int = 10, min_size: int = 160000,
                 n_tiles: int = 1) -> torch.Tensor:
    """Super-resolve ``x`` in four overlapping quarter tiles, recursively until a tile has fewer than
    ``min_size`` pixels, as the official evaluation did (so its numbers are reproduced exactly).

    Each tile is a half of each side plus ``shave`` pixels; ``n_tiles`` tiles go through ``forward``
    per call.  The result is not identical to a whole-image pass when the receptive field exceeds the
    overlap.  An image too small to hold two overlapping halves goes through whole.
    """
    n, _, h, w = x.shape
    h_half, w_half = h // 2, w // 2
    h_size, w_size = h_half + shave, w_half + shave
    if h_size >= h or w_size >= w:
        return forward(x)
    tiles = [x[..., :h_size, :w_size], x[..., :h_size, w - w_size:],
             x[..., h - h_size:, :w_size], x[..., h - h_size:, w - w_size:]]
    if h_size * w_size < min_size:
        outputs: List[torch.Tensor] = []
        for i in range(0, 4, n_tiles):
            outputs.extend(forward(torch.cat(tiles[i:i + n_tiles], dim=0)).split(n, dim=0))
    else:
        outputs = [forward_chop(forward, tile, scale, shave, min_size, n_tiles) for tile in tiles]

    H, W = scale * h, scale * w
    Hh, Wh = scale * h_half, scale * w_half
    Ht, Wt = scale * h_size, scale * w_size
    top_left, top_right, bottom_left, bottom_right = outputs
    out = top_left.new_empty(n, top_left.shape[1], H, W)
    out[..., :Hh, :Wh] = top_left[..., :Hh, :Wh]
    out[..., :Hh, Wh:] = top_right[..., :Hh, Wt - (W - Wh):]
    out[..., Hh:, :Wh] = bottom_left[..., Ht - (H - Hh):, :Wh]
    out[..., Hh:, Wh:] = bottom_right[..., Ht - (H - Hh):, Wt - (W - Wh):]
    return out


def _flip_w(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-1)


def _flip_h(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-2)


def _transpose(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(-2, -1)


def self_ensemble(forward: Forward, x: torch.Tensor) -> torch.Tensor:
    """Mean of the outputs for the 8 flips/transposes of ``x``, each mapped back to the original
    orientation: [x, v(x), h(x), h(v(x)), t(x), t(v(x)), t(h(x)), t(h(v(x)))] (v: width flip,
    h: height flip, t: transpose)."""
    inputs = [x]
    for transform in (_flip_w, _flip_h, _transpose):
        inputs += [transform(t) for t in inputs]
    total = None
    for index, lr in enumerate(inputs):
        y = forward(lr)
        if index > 3:
            y = _transpose(y)
        if index % 4 > 1:
            y = _flip_h(y)
        if index % 2 == 1:
            y = _flip_w(y)
        total = y if total is None else total + y
    return total / len(inputs)
