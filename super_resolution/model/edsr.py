"""EDSR (Lim et al. 2017) and its compressed variants: one architecture, three kinds of block convs.

sub_mean -> head conv -> body (R residual blocks ``conv -> ReLU -> conv``, times res_scale, + input;
then one conv) + head output -> upsampler -> tail conv -> add_mean (docs/official-code.md#edsr).
"""

from __future__ import annotations

from torch import nn

from .block_convs import BlockConvs, basis_convs, block_basis_counts, dense_convs, factor_convs
from .common import MeanShift, ResidualBlock, Upsampler, conv3x3, mean_colour


class EDSR(nn.Module):
    def __init__(self, *, scale: int, n_resblocks: int, n_feats: int, res_scale: float,
                 block_convs: BlockConvs, n_colors: int = 3, rgb_range: float = 255):
        super().__init__()
        mean = mean_colour(n_colors)
        self.sub_mean = MeanShift(rgb_range, -1, mean)
        self.head = nn.Sequential(conv3x3(n_colors, n_feats))
        blocks = []
        for _ in range(n_resblocks):
            conv1, conv2 = block_convs(n_feats)
            # not in place: a Factor conv1 ends in its own ReLU, whose output its backward pass needs
            blocks.append(ResidualBlock([conv1, nn.ReLU(), conv2], res_scale))
        self.body = nn.Sequential(*blocks, conv3x3(n_feats, n_feats))
        self.tail = nn.Sequential(Upsampler(scale, n_feats), conv3x3(n_feats, n_colors))
        self.add_mean = MeanShift(rgb_range, +1, mean)

    def forward(self, x):
        h = self.head(self.sub_mean(x))
        return self.add_mean(self.tail(self.body(h) + h))


def _edsr(args, block_convs: BlockConvs) -> EDSR:
    return EDSR(scale=args.scale[0], n_resblocks=args.n_resblocks, n_feats=args.n_feats,
                res_scale=args.res_scale, block_convs=block_convs, n_colors=args.n_colors,
                rgb_range=args.rgb_range)


def build_edsr(args) -> EDSR:
    return _edsr(args, dense_convs)


def build_edsr_basis(args) -> EDSR:
    return _edsr(args, basis_convs(args.n_feats, args.basis_size, block_basis_counts(args), args.share_basis))


def build_edsr_factor(args) -> EDSR:
    return _edsr(args, factor_convs(args.sic_layer, act=nn.ReLU))
