"""The "Factor" comparison method: a convolution replaced by a chain of SIC layers.

A SIC layer (from "Factorized Convolutional Neural Networks") is a depthwise ``k x k`` convolution
followed by a pointwise ``1 x 1`` one, with the layer input added back when the shape allows it, then an
activation.  Where BatchNorm sits and which way the chain widens differ per model family of the official
code (docs/official-code.md#factor-sic-layers), so both are options here.
"""

from __future__ import annotations

from torch import nn

from .checks import check_positive_ints
from .norm_act import Activation, make_activation


class SIC(nn.Module):
    """Depthwise ``k x k`` [-> BN] -> pointwise ``1 x 1`` [-> BN] -> + input (iff same shape) -> act.

    The stride is applied by the depthwise convolution.  The input is added only when
    ``in_channels == out_channels`` and ``stride == 1``.  ``act`` is a zero-argument factory, a module
    instance (shared as it is, e.g. SRResNet's single PReLU) or ``None``.  Submodules ``body`` (the
    convolutions and norms, in order) and ``act`` follow the official key layout.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 bias: bool = True, *, dw_norm: bool = False, pw_norm: bool = False,
                 act: Activation = nn.ReLU):
        super().__init__()
        check_positive_ints(f"SIC({in_channels}->{out_channels})", in_channels=in_channels,
                        out_channels=out_channels, kernel_size=kernel_size, stride=stride)
        layers = [nn.Conv2d(in_channels, in_channels, kernel_size, stride, kernel_size // 2,
                            groups=in_channels, bias=bias)]
        if dw_norm:
            layers.append(nn.BatchNorm2d(in_channels))
        layers.append(nn.Conv2d(in_channels, out_channels, 1, bias=bias))
        if pw_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        self.body = nn.Sequential(*layers)
        self.act = make_activation(act)
        self.residual = in_channels == out_channels and stride == 1

    def forward(self, x):
        y = self.body(x)
        if self.residual:
            y = y + x
        return y if self.act is None else self.act(y)

    def extra_repr(self) -> str:
        return f"residual={self.residual}"


class FactorConv2d(nn.Module):
    """A chain of ``n_layers`` :class:`SIC` layers standing in for one ``k x k`` convolution.

    ``widen="last"`` (VGG, ResNet): SIC(in->in), ..., SIC(in->out); ``widen="first"`` (DenseNet):
    SIC(in->out), SIC(out->out), ...  The stride is applied by the first SIC.  The remaining keyword
    arguments are passed to every SIC (an activation instance is therefore shared by all of them).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 n_layers: int = 2, bias: bool = True, *, dw_norm: bool = False, pw_norm: bool = False,
                 act: Activation = nn.ReLU, widen: str = "last"):
        super().__init__()
        label = f"FactorConv2d({in_channels}->{out_channels})"
        check_positive_ints(label, n_layers=n_layers)
        if widen not in ("first", "last"):
            raise ValueError(f"{label}: widen must be 'first' or 'last', got {widen!r}")
        if widen == "last":
            widths = [in_channels] * n_layers + [out_channels]
        else:
            widths = [in_channels] + [out_channels] * n_layers
        self.layers = nn.Sequential(*(
            SIC(widths[i], widths[i + 1], kernel_size, stride if i == 0 else 1, bias,
                dw_norm=dw_norm, pw_norm=pw_norm, act=act)
            for i in range(n_layers)))

    def forward(self, x):
        return self.layers(x)
