"""The VGG of the paper (docs/official-code.md#vgg), written once for every convolution type.

With ``--data_train ImageNet`` the same features get torchvision's ImageNet head (``vgg16``/``vgg19``
for the dense baseline, whose flat torchvision keys ``torchvision_key`` maps onto ours).

``VGG`` takes a layer factory ``layer(index, in_channels, out_channels)`` for its numbered entries
(indices count the max-pools too, as the official ``features.<i>`` keys do).  The baseline uses
conv -> ReLU everywhere (no BatchNorm, as the official baseline class); the compressed models keep the
first entries as conv -> BN -> ReLU and decompose the rest with a basis convolution (``VGG_Basis``), a
SIC chain (``VGG_Factor``) or a grouped + 1x1 pair (``VGG_Group``), each with BN -> ReLU inside and after.
"""

from __future__ import annotations

import re
from typing import Callable, Optional

import torch
from torch import nn

from filter_basis.engine.options import basis_counts
from filter_basis.errors import OptionError
from filter_basis.layers import BasisConv2d, FactorConv2d, GroupConv2d, norm_act

from .init import init_vgg, official_init
from .options import check_divides, check_kernel, check_positive, cifar_num_classes, is_imagenet, num_classes

CONFIGS = {
    "11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
           512, 512, 512, 512, "M"],
}
# --vgg_decom_type -> last entry index kept as a plain conv (the official thresholds).
LAST_PLAIN = {"all": 3, "select": 8}
Layer = Callable[[int, int, int], nn.Module]  # (index, in_channels, out_channels) -> module


class VGG(nn.Module):
    """The entries of ``config`` (widths and "M" for 2x2 max-pooling), then a linear classifier (CIFAR)
    or, with ``imagenet``, torchvision's 7x7 adaptive average pooling and three-layer classifier
    (``classifier.0/3/6``: 25088 -> 4096 -> 4096 -> classes, ReLU and dropout between)."""

    def __init__(self, config: list, num_classes: int, layer: Layer, imagenet: bool = False):
        super().__init__()
        features, width = [], 3
        for index, entry in enumerate(config):
            if entry == "M":
                features.append(nn.MaxPool2d(2))
            else:
                features.append(layer(index, width, entry))
                width = entry
        self.features = nn.Sequential(*features)
        if imagenet:
            self.avgpool = nn.AdaptiveAvgPool2d(7)
            self.classifier = nn.Sequential(
                nn.Linear(width * 7 * 7, 4096), nn.ReLU(inplace=True), nn.Dropout(),
                nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(), nn.Linear(4096, num_classes))
        else:
            self.avgpool = None
            self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        if self.avgpool is not None:
            x = self.avgpool(x)
        return self.classifier(torch.flatten(x, 1))


def _config(args) -> list:
    check_kernel("--kernel_size", args.kernel_size)
    if args.vgg_type not in CONFIGS:
        raise OptionError(f"--vgg_type {args.vgg_type!r} is not known; use one of {', '.join(CONFIGS)}")
    return CONFIGS[args.vgg_type]


def _plain(args, batch_norm: bool) -> Layer:
    k, bias = args.kernel_size, not args.no_bias

    def layer(index, cin, cout):
        norm = [nn.BatchNorm2d(cout)] if batch_norm else []
        return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=bias), *norm, nn.ReLU(inplace=True))
    return layer


def _last_plain(args) -> int:
    if args.vgg_decom_type not in LAST_PLAIN:
        raise OptionError(f"--vgg_decom_type {args.vgg_decom_type!r} is not known; use all or select")
    return LAST_PLAIN[args.vgg_decom_type]


def _vgg(args, layer: Layer) -> VGG:
    """The CIFAR VGG, or with ``--data_train ImageNet`` the ImageNet one (same features, torchvision's
    head)."""
    config = _config(args)
    if is_imagenet(args):
        return VGG(config, num_classes(args), layer, imagenet=True)
    return VGG(config, cifar_num_classes(args), layer)


def _compressed(args, decomposed: Layer, init=init_vgg) -> VGG:
    """Entries up to the ``--vgg_decom_type`` threshold plain (conv -> BN -> ReLU), the rest decomposed."""
    last_plain = _last_plain(args)
    plain = _plain(args, batch_norm=True)
    model = _vgg(args, lambda i, cin, cout: plain(i, cin, cout) if i <= last_plain
                 else decomposed(i, cin, cout))
    if init is not None:
        init(model)
    return model


def _decomposed_inputs(args) -> list:
    """Input widths of the decomposed entries."""
    config, last_plain = _config(args), _last_plain(args)
    widths = [3] + [c for c in config if c != "M"]
    numbered = [i for i, c in enumerate(config) if c != "M"]
    return [widths[n] for n, i in enumerate(numbered) if i > last_plain]


def build_vgg(args) -> VGG:
    """conv -> ReLU entries, no BatchNorm (the official baseline; on ImageNet torchvision's vgg<type>)."""
    model = _vgg(args, _plain(args, batch_norm=False))
    init_vgg(model)
    return model


def build_vgg_basis(args) -> VGG:
    """Every decomposed entry owns its basis ``(n_basis, basis_size, k, k)``: basis conv -> BN -> ReLU ->
    1x1 projection -> BN -> ReLU.  ``--n_basis_str`` gives each decomposed entry its own n_basis."""
    check_positive("--n_basis", args.n_basis)
    inputs = _decomposed_inputs(args)
    check_divides("--basis_size", args.basis_size, inputs, "decomposed-layer input")
    counts = iter(basis_counts(args, len(inputs), f"--model {args.model} --vgg_type {args.vgg_type} "
                                                  f"--vgg_decom_type {args.vgg_decom_type}"))
    return _compressed(args, lambda i, cin, cout: BasisConv2d(
        cin, cout, args.kernel_size, args.basis_size, next(counts), bias=not args.no_bias,
        mid=norm_act(), post=norm_act()))


def build_vgg_factor(args) -> VGG:
    """Two SICs (dw 3x3 -> BN -> 1x1 -> BN -> [+ input] -> ReLU), the second one widening.  The official
    VGG_Factor keeps PyTorch's defaults; --init scaled initialises the rest as the baseline (init_vgg)."""
    return _compressed(args, lambda i, cin, cout: FactorConv2d(
        cin, cout, args.kernel_size, n_layers=2, bias=not args.no_bias, dw_norm=True, pw_norm=True,
        act=nn.ReLU, widen="last"), init=None if official_init(args) else init_vgg)


def build_vgg_group(args) -> VGG:
    """Grouped k x k with ``--group_size`` channels per group -> BN -> ReLU -> 1x1 -> BN -> ReLU."""
    check_divides("--group_size", args.group_size, _decomposed_inputs(args), "decomposed-layer input")
    return _compressed(args, lambda i, cin, cout: GroupConv2d(
        cin, cout, args.kernel_size, groups=cin // args.group_size, bias=not args.no_bias,
        mid=norm_act(), post=norm_act()))


# Official state_dict key -> ours (regular expressions applied in order; see
# tests/data/official/official_state_dicts/).
# A decomposed entry was one ``conv`` sequence: its k x k conv, BN, ReLU, the 1x1 projection, BN, ReLU.
_MID_PROJECTION_POST = [(r"\.conv\.1\.", ".mid.0."), (r"\.conv\.3\.", ".projection."),
                        (r"\.conv\.4\.", ".post.0.")]
OFFICIAL_KEYS = {
    "VGG_Basis": [(r"\.conv\.0\.weight$", ".basis.weight"), (r"\.conv\.0\.bias$", ".basis_bias"),
                  *_MID_PROJECTION_POST],
    "VGG_Factor": [(r"\.conv\.0\.body\.", ".layers.")],
    "VGG_Group": [(r"\.conv\.0\.", ".grouped."), *_MID_PROJECTION_POST],
}


def torchvision_key(args) -> Callable[[str], Optional[str]]:
    """torchvision's ``vgg<type>`` keys -> ours: its flat ``features.<j>`` (conv, ReLU and pool modules
    counted one by one) -> our entry ``features.<i>.0``; ``classifier.0/3/6`` are the same; our own keys
    pass unchanged."""
    entries, flat = {}, 0
    for index, entry in enumerate(_config(args)):
        if entry != "M":
            entries[flat] = index
        flat += 1 if entry == "M" else 2  # conv + ReLU

    def rename(key: str) -> str:
        found = re.fullmatch(r"features\.(\d+)\.(weight|bias)", key)
        if found is None or int(found.group(1)) not in entries:
            return key
        return f"features.{entries[int(found.group(1))]}.0.{found.group(2)}"
    return rename
