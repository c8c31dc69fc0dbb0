"""The "Group" comparison method: filter group approximation (Peng et al., ECCV 2018).

A ``k x k`` convolution is replaced by a grouped ``k x k`` convolution followed by a ``1 x 1`` one that
mixes the groups.  How a model's ``--group_size`` becomes a number of groups differs between the official
model families (channels per group for VGG/ResNet, a group count for DenseNet), so this layer takes the
number of groups and leaves that rule to the model.
"""

from __future__ import annotations

from typing import Optional

from torch import nn

from .checks import check_positive_ints
from .norm_act import ModuleFactory, build_slot


class GroupConv2d(nn.Module):
    """Grouped ``k x k`` (in -> grouped_out, stride) [-> mid] -> ``1 x 1`` (grouped_out -> out) [-> post].

    Args:
        groups: number of groups of the ``k x k`` convolution; must divide ``in_channels`` and
            ``grouped_out``.
        bias: biases of both convolutions.
        grouped_out: output width of the grouped convolution (default ``in_channels``; DenseNet_Group
            maps straight to the growth rate).
        mid: factory ``f(grouped_out) -> nn.Module`` between the two convolutions, or ``None``.
        post: factory ``f(out_channels) -> nn.Module`` after the ``1 x 1`` convolution, or ``None``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, bias: bool = True, *, grouped_out: Optional[int] = None,
                 mid: Optional[ModuleFactory] = None, post: Optional[ModuleFactory] = None):
        super().__init__()
        grouped_out = in_channels if grouped_out is None else grouped_out
        label = f"GroupConv2d({in_channels}->{out_channels}, groups={groups})"
        check_positive_ints(label, in_channels=in_channels, out_channels=out_channels,
                            kernel_size=kernel_size, stride=stride, groups=groups, grouped_out=grouped_out)
        if in_channels % groups or grouped_out % groups:
            raise ValueError(f"{label}: groups {groups} must divide in_channels {in_channels} and the "
                             f"grouped convolution's output width {grouped_out}")
        self.grouped = nn.Conv2d(in_channels, grouped_out, kernel_size, stride, kernel_size // 2,
                                 groups=groups, bias=bias)
        self.mid = build_slot(mid, grouped_out, label, "mid")
        self.projection = nn.Conv2d(grouped_out, out_channels, 1, bias=bias)
        self.post = build_slot(post, out_channels, label, "post")

    def forward(self, x):
        y = self.grouped(x)
        if self.mid is not None:
            y = self.mid(y)
        y = self.projection(y)
        return y if self.post is None else self.post(y)
