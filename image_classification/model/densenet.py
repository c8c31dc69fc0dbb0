"""The CIFAR DenseNet of the paper (docs/official-code.md#densenet), written once for every convolution type.

A dense layer is BN -> ReLU -> ``conv(in_channels, k)`` and appends its ``k`` new channels to its input;
with ``--bottleneck`` (DenseNet-BC) it is BN -> ReLU -> 1x1 conv (C -> 4k) -> BN -> ReLU -> ``conv(4k, k)``,
with half as many layers per block, and the transitions compress C to floor(``--reduction`` x C).
The registered models differ only in that conv factory and in the transition: dense 3x3 (``DenseNet``),
a basis convolution slicing one network-wide basis (``DenseNet_Basis``, with its residual two-conv
transition), SIC chains (``DenseNet_Factor``) and grouped + 1x1 pairs (``DenseNet_Group``).
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from filter_basis.data_fit import reduced_rank_fit
from filter_basis.errors import OptionError
from filter_basis.layers import Basis, BasisConv2d, FactorConv2d, GroupConv2d, norm_act

from .checkpoint import GROUP_PAIR_KEYS
from .init import init_kaiming, official_init
from .options import check_depth, check_divides, check_kernel, check_positive, cifar_num_classes

BOTTLENECK_WIDTH = 4  # DenseNet-BC: the 1x1 conv makes 4k channels for the 3x3 conv
LayerConv = Callable[[int, int], nn.Module]  # (in_channels, growth) -> module
Transition = Callable[[int, int], nn.Module]  # (in_channels, out_channels) -> module


class DenseLayer(nn.Module):
    """BN -> ReLU -> conv (C -> k), output = [input, new channels].  ``bottleneck``: BN -> ReLU -> 1x1 conv
    (C -> 4k) -> BN -> ReLU -> conv (4k -> k) instead."""

    def __init__(self, in_channels: int, growth: int, conv: LayerConv, bottleneck: bool = False):
        super().__init__()
        if bottleneck:
            width = BOTTLENECK_WIDTH * growth
            self.body = nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True),
                                      nn.Conv2d(in_channels, width, 1, bias=False), nn.BatchNorm2d(width),
                                      nn.ReLU(inplace=True), conv(width, growth))
        else:
            self.body = nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True),
                                      conv(in_channels, growth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], 1)


def plain_transition(in_channels: int, out_channels: int) -> nn.Module:
    """BN -> ReLU -> conv 1x1 -> avg-pool 2."""
    return nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True),
                         nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.AvgPool2d(2))


class ResidualTransition(nn.Module):
    """DenseNet_Basis transition: BN -> ReLU -> 1x1 (C -> C/g) -> 1x1 (C/g -> C), plus the un-normalised
    input, then avg-pool 2."""

    def __init__(self, channels: int, transition_group: int):
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
                                  nn.Conv2d(channels, channels // transition_group, 1, bias=False),
                                  nn.Conv2d(channels // transition_group, channels, 1, bias=False))
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.body(x) + x)

    @torch.no_grad()
    def fit_start(self, teacher: nn.Module, inputs: list) -> bool:
        """The data fit's start (``filter_basis.data_fit``): make ``body(x) + x`` reproduce the dense
        transition ``teacher`` (BN -> ReLU -> conv 1x1 -> avg-pool) on ``inputs`` before pooling.  With the
        dense BatchNorm, ``body(x) = up(down(r))`` for ``r = relu(bn(x))``: the best rank-``C/g`` map from
        ``r`` to ``W r - x`` (reduced-rank least squares).  False (nothing set) for another teacher."""
        norm, _, down, up = self.body
        dense = [m for m in teacher.modules() if isinstance(m, nn.Conv2d)]
        norms = [m for m in teacher.modules() if isinstance(m, nn.BatchNorm2d)]
        if len(dense) != 1 or len(norms) != 1 or dense[0].weight.shape[:2] != (up.out_channels,
                                                                                down.in_channels):
            return False
        norm.load_state_dict(norms[0].state_dict())
        r = [torch.relu(norm(x)).double() for x in inputs]
        weight = dense[0].weight.detach().double()
        pair_up, pair_down = reduced_rank_fit(
            r, [F.conv2d(ri, weight) - x.double() for ri, x in zip(r, inputs)], down.out_channels)
        up.weight.copy_(pair_up.reshape(up.weight.shape).to(up.weight))
        down.weight.copy_(pair_down.reshape(down.weight.shape).to(down.weight))
        return True


def layer_widths(depth: int, k: int, reduction: float = 1, bottleneck: bool = False) -> list:
    """Input widths of the dense layers, one list per block (a transition maps C to floor(reduction C));
    ``(depth - 4) / 3`` layers per block, half as many with ``bottleneck`` (two convs per layer)."""
    n = check_depth("DenseNet-BC" if bottleneck else "DenseNet", depth, 4, 6 if bottleneck else 3)
    blocks, width = [], 2 * k
    for block in range(3):
        blocks.append([width + i * k for i in range(n)])
        width += n * k
        if block < 2:
            width = int(math.floor(reduction * width))
    return blocks


class DenseNet(nn.Module):
    """CIFAR DenseNet: stem conv (3 -> 2k), three dense blocks of ``(depth - 4) / 3`` layers with two
    transitions between them, BN -> ReLU -> avg-pool 8, linear classifier."""

    def __init__(self, depth: int, num_classes: int, k: int, reduction: float, conv: LayerConv,
                 transition: Transition = plain_transition, shared: Optional[Dict[str, nn.Module]] = None,
                 bottleneck: bool = False):
        super().__init__()
        blocks = layer_widths(depth, k, reduction, bottleneck)
        for name, module in (shared or {}).items():
            self.add_module(name, module)
        features = [nn.Conv2d(3, 2 * k, 3, padding=1, bias=False)]
        for block, widths in enumerate(blocks):
            features.append(nn.Sequential(*(DenseLayer(c, k, conv, bottleneck) for c in widths)))
            if block < 2:
                features.append(transition(widths[-1] + k, blocks[block + 1][0]))
        width = blocks[-1][-1] + k
        features += [nn.BatchNorm2d(width), nn.ReLU(inplace=True), nn.AvgPool2d(8)]
        self.features = nn.Sequential(*features)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


# ---------------------------------------------------------------------------- the four conv choices
def _check(args) -> None:
    cifar_num_classes(args)  # refuses ImageNet first
    check_positive("--k", args.k)
    if not 0 < args.reduction <= 1:
        raise OptionError(f"--reduction {args.reduction} must be in (0, 1]")


def _build(args, conv: LayerConv, transition: Transition = plain_transition, shared=None) -> DenseNet:
    _check(args)
    model = DenseNet(args.depth, cifar_num_classes(args), args.k, args.reduction, conv, transition, shared,
                     args.bottleneck)
    init_kaiming(model)
    if not official_init(args):
        start_transitions_as_identity(model)
    return model


def start_transitions_as_identity(model: nn.Module) -> None:
    """--init scaled: a residual transition computes ``x + conv(conv(ReLU(BN(x))))`` where the plain one it
    replaces computes ``conv(ReLU(BN(x)))`` with gain 1 (Kaiming, fan-in); the identity alone already has
    that gain, so the second 1x1 conv starts at zero and the branch grows from there as it trains
    (docs/initialisation.md)."""
    for module in model.modules():
        if isinstance(module, ResidualTransition):
            nn.init.zeros_(module.body[3].weight)


def build_densenet(args) -> DenseNet:
    return _build(args, lambda c, k: nn.Conv2d(c, k, 3, padding=1, bias=False))


def build_densenet_basis(args) -> DenseNet:
    """One basis ``(n_basis, k (3n + 1) / n_group, k_size1, k_size1)`` for the whole network; a layer with
    C inputs convolves its ``n_group`` splits of C / n_group channels with the first (``--inverse_index``:
    last) C / n_group basis channels, then BN -> ReLU -> projection ``k_size2 x k_size2``.  No DenseNet-BC
    form: the official one left the bottleneck's 3x3 convolutions dense (nothing compressed)."""
    _check(args)
    if args.bottleneck:
        raise OptionError("--bottleneck with --model DenseNet_Basis is refused: the official "
                          "DenseNet_Basis-BC leaves every 3x3 convolution dense (it compresses nothing); "
                          "use DenseNet_Basis without --bottleneck, or DenseNet, DenseNet_Factor or "
                          "DenseNet_Group with --bottleneck")
    if args.reduction != 1:
        raise OptionError(f"--reduction {args.reduction}: DenseNet_Basis transitions are residual and keep "
                          "the width; use --reduction 1")
    for option in ("--n_basis", "--n_group", "--transition_group"):
        check_positive(option, getattr(args, option[2:]))
    check_kernel("--k_size1", args.k_size1)
    check_kernel("--k_size2", args.k_size2)
    widths = layer_widths(args.depth, args.k)
    all_widths = [c for block in widths for c in block]
    check_divides("--n_group", args.n_group, all_widths, "dense-layer input")
    check_divides("--transition_group", args.transition_group, [b[-1] + args.k for b in widths[:2]],
                  "transition")
    basis = Basis(args.n_basis, max(all_widths) // args.n_group, args.k_size1)

    def conv(c, k):
        return BasisConv2d(c, k, args.k_size1, c // args.n_group, args.n_basis, kernel_size2=args.k_size2,
                           basis=basis, inverse_index=args.inverse_index, mid=norm_act())

    return _build(args, conv, lambda c, out: ResidualTransition(c, args.transition_group), {"basis": basis})


def build_densenet_factor(args) -> DenseNet:
    return _build(args, lambda c, k: FactorConv2d(c, k, 3, n_layers=2, bias=False, dw_norm=True,
                                                  act=nn.ReLU, widen="first"))


def _groups(in_channels: int, group_size: int) -> int:
    """The official DenseNet_Group rule: 3 groups up to 252 input channels, ``--group_size`` groups above."""
    return 3 if in_channels <= 252 else group_size


def _conv_inputs(args) -> list:
    """Input widths of the 3x3 convolutions the factory makes (4k everywhere in DenseNet-BC)."""
    widths = [c for block in layer_widths(args.depth, args.k, args.reduction, args.bottleneck) for c in block]
    return [BOTTLENECK_WIDTH * args.k] * len(widths) if args.bottleneck else widths


def build_densenet_group(args) -> DenseNet:
    """Grouped 3x3 (C -> k) and 1x1 (k -> k); ``--group_size`` is a number of GROUPS here (see _groups)."""
    _check(args)
    for c in _conv_inputs(args):
        groups = _groups(c, args.group_size)
        if c % groups or args.k % groups:
            raise OptionError(f"--group_size {args.group_size}, --k {args.k}: {groups} groups must divide "
                              f"the dense-layer input width {c} and --k")
    return _build(args, lambda c, k: GroupConv2d(c, k, 3, groups=_groups(c, args.group_size), bias=False,
                                                 grouped_out=k))


# Official state_dict key -> ours (regular expressions applied in order; see
# tests/data/official/official_state_dicts/).
OFFICIAL_KEYS = {
    "DenseNet_Basis": [(r"^basis$", "basis.weight"),
                       (r"\.body\.0\.conv\.0\.", ".body.0."),
                       (r"\.body\.0\.conv\.2\.basis$", ".body.2.basis.weight"),
                       (r"\.body\.0\.conv\.2\.basis_bias$", ".body.2.basis_bias"),
                       (r"\.body\.0\.conv\.3\.", ".body.2.mid.0."),
                       (r"\.body\.0\.conv\.5\.", ".body.2.projection."),
                       (r"\.module\.", ".body.")],
    "DenseNet_Factor": [(r"\.body\.2\.body\.(\d+)\.body\.", r".body.2.layers.\1.body.")],
    "DenseNet_Group": GROUP_PAIR_KEYS,
}
