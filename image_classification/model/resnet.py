"""The ResNets of the paper (docs/official-code.md#resnet), written once for every convolution type.

``ResNet`` (CIFAR) and ``ImageNetResNet`` (``resnet_imagenet.py``, with ``--data_train ImageNet``) take a
conv factory ``conv(in_channels, out_channels, stride, stage) -> nn.Module`` for the 3x3 convolutions of
their residual blocks; the four registered models differ only in that factory: dense (``ResNet``), basis
with one basis per stage (``ResNet_Basis``), SIC chains (``ResNet_Factor``) and grouped + 1x1 pairs
(``ResNet_Group``).  Everything else is the same for all.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from filter_basis import init_scale
from filter_basis.errors import OptionError
from filter_basis.layers import Basis, BasisConv2d, FactorConv2d, GroupConv2d

from .checkpoint import GROUP_PAIR_KEYS
from .init import init_kaiming, official_init
from .options import (
    check_depth,
    check_divides,
    check_kernel,
    check_positive,
    cifar_num_classes,
    is_imagenet,
    num_classes,
)
from .resnet_imagenet import LAYOUTS, ImageNetResNet, init_torchvision
from .resnet_imagenet import WIDTHS as IMAGENET_WIDTHS

WIDTHS = (16, 32, 64)
ConvFactory = Callable[[int, int, int, int], nn.Module]


class OptionAShortcut(nn.Module):
    """Parameter-free shortcut for a block that halves the resolution and widens: 2x2 average pooling,
    then zero channels on both sides of the channel axis (the input sits in the middle)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.pad = (out_channels - in_channels) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(F.avg_pool2d(x, 2), (0, 0, 0, 0, self.pad, self.pad))


class ResBlock(nn.Module):
    """conv -> BN -> ReLU -> conv -> BN, plus the shortcut, then ReLU."""

    def __init__(self, in_channels: int, planes: int, stride: int, stage: int, conv: ConvFactory):
        super().__init__()
        self.body = nn.Sequential(
            conv(in_channels, planes, stride, stage), nn.BatchNorm2d(planes), nn.ReLU(inplace=True),
            conv(planes, planes, 1, stage), nn.BatchNorm2d(planes))
        changes_shape = stride != 1 or in_channels != planes
        self.shortcut = OptionAShortcut(in_channels, planes) if changes_shape else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR ResNet with ``(depth - 2) / 6`` blocks in each of three stages (16, 32, 64 channels).

    ``shared`` modules (e.g. the stage bases) are registered at the top level under their names.
    """

    def __init__(self, depth: int, num_classes: int, conv: ConvFactory, kernel_size: int = 3,
                 shared: Optional[Dict[str, nn.Module]] = None):
        super().__init__()
        n = check_depth("ResNet", depth, 2, 6)
        for name, module in (shared or {}).items():
            self.add_module(name, module)
        stem = nn.Sequential(nn.Conv2d(3, WIDTHS[0], kernel_size, padding=kernel_size // 2),
                             nn.BatchNorm2d(WIDTHS[0]), nn.ReLU(inplace=True))
        stages, width = [], WIDTHS[0]
        for stage, planes in enumerate(WIDTHS, start=1):
            blocks = []
            for b in range(n):
                stride = 2 if stage > 1 and b == 0 else 1
                blocks.append(ResBlock(width, planes, stride, stage, conv))
                width = planes
            stages.append(nn.Sequential(*blocks))
        self.features = nn.Sequential(stem, *stages, nn.AvgPool2d(8))
        self.classifier = nn.Linear(WIDTHS[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


# ---------------------------------------------------------------------------- the four conv choices
def dense_convs(args) -> ConvFactory:
    k = args.kernel_size
    return lambda cin, cout, stride, stage: nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)


def stage_bases(args, widths=WIDTHS) -> Dict[str, Basis]:
    """``basis1..``: one basis per stage, ``(n_basis<i>, basis_size<i>, k, k)``."""
    bases = {}
    for i, width in enumerate(widths, start=1):
        size, n_basis = getattr(args, f"basis_size{i}"), getattr(args, f"n_basis{i}")
        check_divides(f"--basis_size{i}", size, [width], f"stage-{i}")
        check_positive(f"--n_basis{i}", n_basis)
        bases[f"basis{i}"] = Basis(n_basis, size, args.kernel_size)
    return bases


def basis_convs(args, bases: Dict[str, Basis], widths=WIDTHS,
                kernel_size2: Optional[int] = None) -> ConvFactory:
    """Every conv borrows the basis of the stage whose width its INPUT has, so the first conv of a stage
    that is still on the previous stage's width uses the previous stage's basis."""
    kernel_size2 = args.k_size2 if kernel_size2 is None else kernel_size2
    check_kernel("--k_size2", kernel_size2)
    by_width = dict(zip(widths, bases.values()))

    def conv(cin, cout, stride, stage):
        basis = by_width[cin]
        return BasisConv2d(cin, cout, args.kernel_size, basis.width, basis.n_basis, stride,
                           kernel_size2=kernel_size2, basis=basis)
    return conv


def factor_convs(args) -> ConvFactory:
    return lambda cin, cout, stride, stage: FactorConv2d(cin, cout, args.kernel_size, stride, n_layers=2,
                                                         bias=False, act=nn.ReLU, widen="last")


def group_convs(args, imagenet: bool = False) -> ConvFactory:
    """CIFAR: ``--group_size`` channels per group in stage 3, 4 in stages 1-2 (hard-wired officially);
    ImageNet: ``--group_size`` channels per group in all four stages."""
    widths = IMAGENET_WIDTHS if imagenet else WIDTHS[1:]
    check_divides("--group_size", args.group_size, widths, "3x3-conv input" if imagenet else "stage-3 input")

    def conv(cin, cout, stride, stage):
        group_size = args.group_size if imagenet or stage == 3 else 4
        return GroupConv2d(cin, cout, args.kernel_size, stride, groups=cin // group_size)
    return conv


# ---------------------------------------------------------------------------- registered builders
def _build(args, conv: ConvFactory, shared: Optional[Dict[str, nn.Module]] = None, init=None) -> nn.Module:
    check_kernel("--kernel_size", args.kernel_size)
    if is_imagenet(args):  # the block type follows the depth, whatever --bottleneck says
        if args.depth not in LAYOUTS:
            raise OptionError(f"--depth {args.depth}: the ImageNet ResNets have depth "
                              f"{', '.join(map(str, LAYOUTS))}")
        model = ImageNetResNet(args.depth, num_classes(args), conv, shared)
        init_torchvision(model)
        return model
    if args.bottleneck:
        raise OptionError(f"--model {args.model} --bottleneck: the CIFAR ResNets have basic blocks only; "
                          "bottleneck ResNets are the ImageNet ones (--data_train ImageNet --depth 50, 101, "
                          "152)")
    model = ResNet(args.depth, cifar_num_classes(args), conv, args.kernel_size, shared)
    if init is not None:
        init(model)
    return model


def _compressed_init(args):
    """The official ResNet_Basis and ResNet_Group re-initialise every layer (init_kaiming) where the dense
    ResNet keeps PyTorch's defaults; --init scaled keeps the baseline's defaults (docs/initialisation.md)."""
    return init_kaiming if official_init(args) else None


def build_resnet(args) -> nn.Module:
    return _build(args, dense_convs(args))


def build_resnet_basis(args) -> nn.Module:
    """CIFAR: ``--k_size2`` x ``--k_size2`` projections; ImageNet: 1x1 projections (the paper's choice)."""
    if is_imagenet(args):
        bases = stage_bases(args, IMAGENET_WIDTHS)
        return _build(args, basis_convs(args, bases, IMAGENET_WIDTHS, kernel_size2=1), shared=bases)
    bases = stage_bases(args)
    return _build(args, basis_convs(args, bases), shared=bases, init=_compressed_init(args))


def build_resnet_factor(args) -> nn.Module:
    return _build(args, factor_convs(args))


def build_resnet_group(args) -> nn.Module:
    return _build(args, group_convs(args, is_imagenet(args)), init=_compressed_init(args))


def factor_target(args) -> Optional[Callable]:
    """--init scaled, CIFAR ResNet_Factor: the second factor conv of a block ends its residual branch with a
    ReLU the dense block does not have (the branch is non-negative), so its last SIC starts at the gain
    :func:`~filter_basis.init_scale.nonnegative_branch_gain` (docs/initialisation.md)."""
    if args.model != "ResNet_Factor" or is_imagenet(args):
        return None

    def target(path: str, layer: nn.Module, dense_gain: float) -> Optional[float]:
        return init_scale.nonnegative_branch_gain(dense_gain) if path.endswith(".body.3") else None
    return target


def basis_count_options(args, names: list, counts: list) -> dict:
    """``--target_compression``: ResNet_Basis has one basis per stage, set by ``--n_basis1..3``."""
    options = {}
    for name, count in zip(names, counts):
        if not (name.startswith("basis") and name[5:].isdigit()):
            raise OptionError(f"--target_compression: --model {args.model} has no option for basis {name!r}")
        options[f"n_basis{name[5:]}"] = count
    return options


# Official state_dict key -> ours (regular expressions applied in order; see
# tests/data/official/official_state_dicts/).
OFFICIAL_KEYS = {
    "ResNet_Basis": [(r"^basis(\d)$", r"basis\1.weight"),
                     (r"\.conv\.0\.basis_weight$", ".basis.weight"),
                     (r"\.conv\.0\.basis_bias$", ".basis_bias"),
                     (r"\.conv\.1\.", ".projection.")],
    "ResNet_Factor": [(r"\.body\.(\d+)\.body\.(\d+)\.body\.", r".body.\1.layers.\2.body.")],
    "ResNet_Group": GROUP_PAIR_KEYS,
}
