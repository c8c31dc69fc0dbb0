"""``--init scaled|official``: how the compressed layers of a freshly built model are initialised.

``official`` keeps the official code's initialisation: the basis and the projection of a basis layer are
each Kaiming-uniform (gain sqrt(2)), with nothing between them that normalises, so every basis layer
multiplies the variance of what passes through it by about 4 where the dense convolution it replaces
multiplies it by 1/3 (PyTorch's default); EDSR_Basis with ``--res_scale 1`` then starts with an output
thousands of times larger than EDSR's.

``scaled`` (the default) rescales every basis, factor and group layer after the model is built, so that
the convolution it composes has the variance the dense baseline's initialisation gives the convolution
it replaces.  A tree passes that variance as a :data:`VarianceRule` (e.g. :func:`pytorch_default`), the
same rule its dense layers are initialised with.  What is matched is the *gain* of a layer: the ratio
of the second moment of its output to that of a white, zero-mean input, taken in eval mode at
initialisation (fresh BatchNorm layers are the identity there):

- a dense k x k convolution with weight variance ``v`` and ``fan_in`` inputs per output has gain
  ``fan_in * v``;
- a :class:`~filter_basis.layers.BasisConv2d` has gain ``gain(basis) * gain(mid) * gain(projection)``; its
  projection is multiplied by one number so that this is the dense gain (the basis may be shared by
  other layers, so it is left as it is; ``post`` stands where the dense layer's own BatchNorm and
  activation stand and does not count);
- a :class:`~filter_basis.layers.GroupConv2d` likewise: grouped convolution, ``mid``, projection;
- a :class:`~filter_basis.layers.FactorConv2d` is a chain of SIC layers, each ``act(pw(dw(x)) [+ x])``.
  Every SIC but the last is drawn to keep the second moment through its activation, the last one to have
  the dense gain before its activation.  A SIC that adds its input composes the linear map
  ``x + pw(dw(x))``, in which the identity alone has gain 1; so its depthwise filters start as
  ``random - centre tap`` and its pointwise weight as ``identity + random``, which makes the identity
  cancel: the composed map has random diagonal filters and random mixing, of the target gain, exactly
  like a dense convolution of that gain.  A SIC without the identity draws its depthwise filters with
  gain 1 and its pointwise weight with the target gain.  Factor biases start at zero.

Layers whose tensors live on the meta device (complexity counting) have no values to rescale and are
skipped.  See docs/initialisation.md.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import nn

from .errors import OptionError
from .layers import SIC, BasisConv2d, FactorConv2d, GroupConv2d

INIT_SCHEMES = ("scaled", "official")
DEFAULT_INIT = "scaled"

VarianceRule = Callable[[int, int, int, int], float]
"""``rule(in_channels, out_channels, kernel_size, groups) -> weight variance`` of a dense convolution
as the baseline initialises it."""


def pytorch_default(in_channels: int, out_channels: int, kernel_size: int, groups: int = 1) -> float:
    """PyTorch's default ``nn.Conv2d`` weight: uniform in +-1/sqrt(fan_in), variance 1 / (3 fan_in)."""
    return 1 / (3 * in_channels // groups * kernel_size ** 2)


def kaiming_fan_in(in_channels: int, out_channels: int, kernel_size: int, groups: int = 1) -> float:
    """Kaiming with ReLU gain over the fan-in: variance 2 / fan_in."""
    return 2 / (in_channels // groups * kernel_size ** 2)


def kaiming_fan_out(in_channels: int, out_channels: int, kernel_size: int, groups: int = 1) -> float:
    """Kaiming with ReLU gain over the fan-out: variance 2 / (k * k * out_channels)."""
    return 2 / (kernel_size ** 2 * out_channels)


def check_init(value: str) -> str:
    if value not in INIT_SCHEMES:
        raise OptionError(f"--init {value!r} is not accepted; expected one of {', '.join(INIT_SCHEMES)}")
    return value


def scheme(args) -> str:
    """The ``--init`` of ``args`` (``scaled`` when the options predate it)."""
    return check_init(getattr(args, "init", DEFAULT_INIT))


def apply(model: nn.Module, args, rule: VarianceRule, factor_target: Optional[FactorTarget] = None) -> int:
    """The one entry point of the model builders: rescale ``model``'s compressed layers under
    ``--init scaled`` (returns how many), leave everything as built under ``--init official`` (0)."""
    if scheme(args) == "official":
        return 0
    return scale_compressed(model, rule, factor_target)


# ------------------------------------------------------------------------------------------ gains
def conv_gain(conv: nn.Conv2d) -> float:
    """``fan_in * mean(weight^2)``: the second-moment gain of ``conv`` for a white input."""
    weight = conv.weight.detach()
    return weight[0].numel() * weight.double().pow(2).mean().item()


def dense_gain(rule: VarianceRule, in_channels: int, out_channels: int, kernel_size: int,
               groups: int = 1) -> float:
    """The gain of the dense convolution ``rule`` initialises: ``fan_in * variance``."""
    return in_channels // groups * kernel_size ** 2 * rule(in_channels, out_channels, kernel_size, groups)


def slot_gain(module: Optional[nn.Module]) -> float:
    """The second-moment gain of a ``mid`` slot or a SIC activation at initialisation, in eval mode, for a
    zero-mean symmetric input: BatchNorm gamma^2 / (running_var + eps), ReLU 1/2, PReLU and LeakyReLU
    (1 + slope^2) / 2."""
    if module is None:
        return 1.0
    parts = list(module) if isinstance(module, nn.Sequential) else [module]
    gain = 1.0
    for part in parts:
        if isinstance(part, nn.BatchNorm2d):
            scale = part.weight.detach().double() if part.weight is not None else torch.ones(1)
            gain *= (scale.pow(2) / (part.running_var.double() + part.eps)).mean().item()
        elif isinstance(part, nn.ReLU):
            gain *= 0.5
        elif isinstance(part, nn.PReLU):
            gain *= (1 + part.weight.detach().double().pow(2).mean().item()) / 2
        elif isinstance(part, nn.LeakyReLU):
            gain *= (1 + part.negative_slope ** 2) / 2
        elif isinstance(part, nn.Identity):
            pass
        else:
            raise ValueError(f"--init scaled: no gain known for {type(part).__name__} inside a compressed "
                             f"layer; use --init official")
    return gain


# ------------------------------------------------------------------------------------------ layers
def _is_meta(module: nn.Module) -> bool:
    return any(p.is_meta for p in module.parameters())


def _scale_to(conv: nn.Conv2d, gain: float) -> None:
    """Multiply ``conv``'s weight by one number so that :func:`conv_gain` becomes ``gain``."""
    with torch.no_grad():
        conv.weight.mul_(math.sqrt(gain / conv_gain(conv)))


def _zero_biases(*biases: Optional[torch.Tensor]) -> None:
    with torch.no_grad():
        for bias in biases:
            if bias is not None:
                bias.zero_()


def scale_basis_conv(layer: BasisConv2d, rule: VarianceRule) -> None:
    """Rescale the projection: gain(basis) * gain(mid) * gain(projection) = the dense gain."""
    basis = layer.basis_weight().detach()
    basis_gain = basis[0].numel() * basis.double().pow(2).mean().item()
    target = dense_gain(rule, layer.in_channels, layer.out_channels, layer.kernel_size)
    _scale_to(layer.projection, target / (basis_gain * slot_gain(layer.mid)))
    _zero_biases(layer.basis_bias, layer.projection.bias)


def scale_group_conv(layer: GroupConv2d, rule: VarianceRule) -> None:
    """Rescale the 1x1 projection: gain(grouped) * gain(mid) * gain(projection) = the dense gain."""
    grouped = layer.grouped
    target = dense_gain(rule, grouped.in_channels, layer.projection.out_channels, grouped.kernel_size[0])
    _scale_to(layer.projection, target / (conv_gain(grouped) * slot_gain(layer.mid)))
    _zero_biases(grouped.bias, layer.projection.bias)


def _sic_convs(sic: SIC) -> tuple:
    convs = [m for m in sic.body if isinstance(m, nn.Conv2d)]
    return convs[0], convs[1]


def init_sic(sic: SIC, gain: float) -> None:
    """Draw ``sic``'s weights so that its linear map (before the activation) has ``gain``; biases zero."""
    dw, pw = _sic_convs(sic)
    k2 = dw.weight[0].numel()
    channels = pw.in_channels
    _zero_biases(dw.bias, pw.bias)
    with torch.no_grad():
        if not sic.residual:
            dw.weight.normal_(0, math.sqrt(1 / k2))  # every channel kept at its own scale
            pw.weight.normal_(0, math.sqrt(gain / channels))
            return
        # x + pw(dw(x)) with dw = r - centre tap and pw = identity + q: the identity cancels, leaving random
        # diagonal filters r (variance v each tap) and mixing q (r - centre tap) of the same second moment.
        v = gain / (channels * k2)
        dw.weight.normal_(0, math.sqrt(v))
        centre = (dw.weight.shape[2] // 2, dw.weight.shape[3] // 2)
        dw.weight[:, 0, centre[0], centre[1]] -= 1
        pw.weight.normal_(0, math.sqrt(k2 * v / (1 + k2 * v)))
        pw.weight[:, :, 0, 0].fill_diagonal_(1.0)


def nonnegative_branch_gain(dense_gain: float) -> float:
    """The gain for the last SIC of a factor layer that ends a residual branch ``conv -> BN -> ReLU ->
    conv -> BN`` (CIFAR ResNet) where the dense block has none: its final ReLU makes the branch ``b``
    non-negative, and added to a non-negative shortcut ``x`` its mean counts coherently,
    ``E[(x + b)^2] = E[x^2] + E[b^2] + 2 E[x] E[b]`` with ``E[x] E[b] ~ sqrt(E[x^2] E[b^2]) / pi`` for
    rectified Gaussians.  The gain returned makes that growth equal to the dense block's
    ``1 + g`` (``g = dense_gain^2 / 2``, the dense branch's gain): ``E[b^2] = u^2 E[x^2]`` with
    ``u^2 + (2 / pi) u = g``; the branch reaches the last SIC with ``dense_gain / 2`` of ``E[x^2]`` and its
    ReLU halves the rest."""
    g = dense_gain ** 2 / 2
    u = (-2 / math.pi + math.sqrt(4 / math.pi ** 2 + 4 * g)) / 2
    return u ** 2 / (dense_gain / 2) / 0.5


def factor_dense_gain(layer: FactorConv2d, rule: VarianceRule) -> float:
    """The gain of the dense convolution ``layer`` replaces (its first input width, its last output width)."""
    first_dw, _ = _sic_convs(layer.layers[0])
    _, last_pw = _sic_convs(layer.layers[-1])
    return dense_gain(rule, first_dw.in_channels, last_pw.out_channels, first_dw.kernel_size[0])


def scale_factor_conv(layer: FactorConv2d, rule: VarianceRule, target: Optional[float] = None) -> None:
    """Every SIC but the last keeps the second moment through its activation; the last has the dense
    gain before its activation (the dense layer's own activation, where it has one, comes after it), or
    ``target`` when given."""
    sics = list(layer.layers)
    if target is None:
        target = factor_dense_gain(layer, rule)
    for i, sic in enumerate(sics):
        init_sic(sic, target if i == len(sics) - 1 else 1 / slot_gain(sic.act))


FactorTarget = Callable[[str, FactorConv2d, float], Optional[float]]
"""``target(path, layer, dense_gain) -> gain`` of a factor layer's last SIC (``None``: ``dense_gain``)."""


def scale_compressed(model: nn.Module, rule: VarianceRule,
                     factor_target: Optional[FactorTarget] = None) -> int:
    """Rescale every basis, group and factor layer of ``model`` to the gain of the dense convolution
    ``rule`` initialises; returns the number of layers rescaled (meta-device layers are skipped).
    ``factor_target`` lets a model give a factor layer another gain where its architecture needs one
    (see :func:`nonnegative_branch_gain`)."""
    count = 0
    for path, layer in list(model.named_modules()):
        if not isinstance(layer, (BasisConv2d, GroupConv2d, FactorConv2d)) or _is_meta(layer):
            continue
        if isinstance(layer, BasisConv2d):
            scale_basis_conv(layer, rule)
        elif isinstance(layer, GroupConv2d):
            scale_group_conv(layer, rule)
        else:
            target = None
            if factor_target is not None:
                target = factor_target(path, layer, factor_dense_gain(layer, rule))
            scale_factor_conv(layer, rule, target)
        count += 1
    return count
