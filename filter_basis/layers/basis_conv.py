"""The basis convolution of the paper: one shared filter bank applied to every channel split.

Input channels are cut into ``G = in_channels / basis_size`` consecutive splits.  Every split is
convolved with the same ``n_basis`` filters of shape ``(basis_size, k, k)``; the ``G * n_basis`` maps
(split-major: channel ``g * n_basis + j`` is split ``g`` against filter ``j``, as in the official code)
are mixed into ``out_channels`` by a ``kernel_size2 x kernel_size2`` projection convolution.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from .. import decompose
from .checks import check_positive_ints
from .norm_act import ModuleFactory, build_slot

FORMS = ("auto", "decomposed", "merged")
_forced_form: Optional[str] = None  # set by forced_form(): overrides every layer's own ``form``


def _check_form(form: str) -> str:
    if form not in FORMS:
        raise ValueError(f"basis form {form!r} is not accepted; expected one of {', '.join(FORMS)}")
    return form


def set_basis_form(model: nn.Module, form: str) -> int:
    """Set ``form`` (``'auto'``, ``'decomposed'`` or ``'merged'``) on every :class:`BasisConv2d` in
    ``model``; returns how many layers were set.  Parameters and state_dict are untouched."""
    _check_form(form)
    layers = [m for m in model.modules() if isinstance(m, BasisConv2d)]
    for layer in layers:
        layer.form = form
    return len(layers)


@contextlib.contextmanager
def forced_form(form: Optional[str]) -> Iterator[None]:
    """Run every BasisConv2d in ``form`` inside the block, whatever its own ``form`` (``None``: theirs).

    :func:`~filter_basis.complexity.summarize` counts in the decomposed form, the compressed model's own
    FLOPs, whichever form the layers train in."""
    global _forced_form
    previous, _forced_form = _forced_form, (None if form is None else _check_form(form))
    try:
        yield
    finally:
        _forced_form = previous


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def conversion_obstacle(conv: nn.Module, basis_size: int) -> Optional[str]:
    """Why ``conv`` cannot become a :class:`BasisConv2d` with that split width (``None`` if it can)."""
    if type(conv) is not nn.Conv2d:
        return f"{type(conv).__name__} is not a plain nn.Conv2d"
    if conv.kernel_size[0] != conv.kernel_size[1]:
        return f"kernel {conv.kernel_size[0]}x{conv.kernel_size[1]} is not square"
    if conv.groups != 1:
        return f"grouped convolution (groups={conv.groups})"
    if conv.dilation != (1, 1):
        return f"dilated convolution (dilation={conv.dilation})"
    if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
        return f"padding {conv.padding!r} with mode {conv.padding_mode!r} (needs numeric zero padding)"
    if conv.in_channels % basis_size:
        return f"basis_size {basis_size} does not divide in_channels {conv.in_channels}"
    return None


class Basis(nn.Module):
    """A bank of ``n_basis`` filters of shape ``(width, k, k)``, shareable by several layers.

    Handing one ``Basis`` to several :class:`BasisConv2d` layers shares it: it is one parameter,
    counted once and updated once, with gradients accumulated from every user.  A layer with a
    smaller ``basis_size`` uses the first (or, with ``inverse_index``, the last) ``basis_size``
    input channels of the bank, as the official DenseNet_Basis does.
    """

    def __init__(self, n_basis: int, width: int, kernel_size: int = 3):
        super().__init__()
        check_positive_ints("Basis", n_basis=n_basis, width=width, kernel_size=kernel_size)
        self.weight = nn.Parameter(torch.empty(n_basis, width, kernel_size, kernel_size))
        self.reset_parameters()

    @property
    def n_basis(self) -> int:
        return self.weight.shape[0]

    @property
    def width(self) -> int:
        return self.weight.shape[1]

    @property
    def kernel_size(self) -> int:
        return self.weight.shape[2]

    def reset_parameters(self) -> None:
        # Kaiming-uniform with a = 0 over fan_in = width * k * k, as the official raw basis tensors.
        nn.init.kaiming_uniform_(self.weight, a=0)

    def filters(self, basis_size: int, inverse_index: bool = False) -> torch.Tensor:
        """The ``(n_basis, basis_size, k, k)`` slice a layer with that split width convolves with."""
        if basis_size == self.width:
            return self.weight
        return self.weight[:, -basis_size:] if inverse_index else self.weight[:, :basis_size]

    def extra_repr(self) -> str:
        return f"n_basis={self.n_basis}, width={self.width}, kernel_size={self.kernel_size}"


class BasisConv2d(nn.Module):
    """A ``k x k`` convolution expressed with a filter basis shared by all channel splits.

    Args:
        in_channels, out_channels, kernel_size: as for :class:`torch.nn.Conv2d`.
        basis_size: input channels per split (must divide ``in_channels``).
        n_basis: number of basis filters (``None``: the size of the shared ``basis``).
        stride: stride of the basis convolution (the projection has stride 1).
        padding: padding of the basis convolution; ``None`` means ``kernel_size // 2``.
        bias: biases of both the basis convolution (``n_basis``, shared by all splits) and the
            projection (``out_channels``), as in the official layers.
        kernel_size2: kernel of the projection (1 in the paper; DenseNet_Basis uses 3).
        basis: a :class:`Basis` to share instead of owning one.  Even with a shared basis weight each
            layer owns its basis bias.
        inverse_index: with a wider shared basis, use its last ``basis_size`` channels.
        mid: factory ``f(G * n_basis) -> nn.Module`` applied between basis convolution and projection
            (e.g. BatchNorm + ReLU); ``None`` for nothing.
        post: factory ``f(out_channels) -> nn.Module`` applied after the projection; ``None`` for nothing.
        name: how errors refer to this layer (e.g. its path in a model).

    Every configuration error raises ``ValueError`` at construction, naming the layer and the numbers.
    ``reconstruction_error`` holds the relative weight error of a layer made by :meth:`from_conv`.

    ``form`` says how a :attr:`mergeable` layer (no ``mid``, 1x1 projection) computes its forward:
    ``'decomposed'`` (basis convolution, then projection), ``'merged'`` (one dense convolution with the
    weight and bias composed from basis and projection on every call, so gradients reach both) or
    ``'auto'`` (the class default:
    whichever :meth:`form_flops` counts cheaper for the input shape, decided once per shape).  Both
    forms compute the same function from the same parameters; other layers are always decomposed.
    """

    form: str = "auto"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        basis_size: int,
        n_basis: Optional[int],
        stride: Union[int, tuple] = 1,
        padding: Optional[Union[int, tuple]] = None,
        bias: bool = True,
        kernel_size2: int = 1,
        basis: Optional[Basis] = None,
        *,
        inverse_index: bool = False,
        mid: Optional[ModuleFactory] = None,
        post: Optional[ModuleFactory] = None,
        name: Optional[str] = None,
    ):
        super().__init__()
        label = name or f"BasisConv2d({in_channels}->{out_channels}, kernel_size={kernel_size})"
        if n_basis is None:
            if basis is None:
                raise ValueError(f"{label}: n_basis is required when no shared basis is given")
            n_basis = basis.n_basis
        check_positive_ints(label, in_channels=in_channels, out_channels=out_channels,
                            kernel_size=kernel_size, basis_size=basis_size, n_basis=n_basis,
                            kernel_size2=kernel_size2)
        stride, padding = _pair(stride), _pair(kernel_size // 2 if padding is None else padding)
        if not all(isinstance(s, int) and s >= 1 for s in stride) or \
                not all(isinstance(p, int) and p >= 0 for p in padding):
            raise ValueError(f"{label}: stride must be integers >= 1 and padding integers >= 0, "
                             f"got stride={stride}, padding={padding}")
        if in_channels % basis_size:
            raise ValueError(f"{label}: basis_size {basis_size} does not divide in_channels "
                             f"{in_channels}")
        if basis is not None:
            if not isinstance(basis, Basis):
                raise ValueError(f"{label}: basis must be a Basis module, got {type(basis).__name__}")
            if basis.kernel_size != kernel_size:
                raise ValueError(f"{label}: shared basis has kernel_size {basis.kernel_size}, "
                                 f"the layer needs {kernel_size}")
            if basis.width < basis_size:
                raise ValueError(f"{label}: shared basis is {basis.width} channels wide, narrower than "
                                 f"basis_size {basis_size}")
            if basis.n_basis != n_basis:
                raise ValueError(f"{label}: shared basis has {basis.n_basis} filters, n_basis is {n_basis}")
        else:
            basis = Basis(n_basis, basis_size, kernel_size)

        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.basis_size = basis_size
        self.n_basis = n_basis
        self.n_splits = in_channels // basis_size
        self.stride = stride
        self.padding = padding
        self.kernel_size2 = kernel_size2
        self.inverse_index = inverse_index
        self.label = label
        self.reconstruction_error: Optional[float] = None  # set by from_conv

        self.basis = basis
        self.basis_bias = nn.Parameter(torch.zeros(n_basis)) if bias else None
        self.mid = build_slot(mid, self.n_splits * n_basis, label, "mid")
        self.projection = nn.Conv2d(self.n_splits * n_basis, out_channels, kernel_size2,
                                    padding=kernel_size2 // 2, bias=bias)
        self.post = build_slot(post, out_channels, label, "post")
        self.reset_projection()

    # ------------------------------------------------------------------ parameters
    def reset_projection(self) -> None:
        """Kaiming-uniform (a = 0) projection weight and zero biases (official EDSR_Basis scheme)."""
        nn.init.kaiming_uniform_(self.projection.weight, a=0)
        if self.projection.bias is not None:
            nn.init.zeros_(self.projection.bias)

    @property
    def slices_basis(self) -> bool:
        """True when the layer uses a slice of a wider shared basis (DenseNet_Basis)."""
        return self.basis.width != self.basis_size

    def basis_weight(self) -> torch.Tensor:
        """The ``(n_basis, basis_size, k, k)`` filters this layer convolves every split with."""
        return self.basis.filters(self.basis_size, self.inverse_index)

    @property
    def is_linear(self) -> bool:
        """True when the layer is one dense convolution in disguise (nothing between or after)."""
        return self.mid is None and self.post is None and self.kernel_size2 == 1

    @property
    def mergeable(self) -> bool:
        """True when basis and projection compose into one dense convolution (``post`` may follow it)."""
        return self.mid is None and self.kernel_size2 == 1

    # ------------------------------------------------------------------ forward
    def basis_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The split-major ``G * n_basis`` maps, computed with ONE convolution call.

        The splits are folded into the batch, so one ordinary convolution serves them all: a free view
        for NCHW input; channels_last input is copied once in and once out to keep its layout (on the
        CPU this beat a grouped call with the basis repeated per split, which oneDNN runs slower than
        the naive per-split loop for VGG's 128-channel splits on 4x4 and 2x2 maps).
        """
        weight = self.basis_weight()
        g = self.n_splits
        if g == 1:
            return F.conv2d(x, weight, self.basis_bias, self.stride, self.padding)
        n, _, h, w = x.shape
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        splits = x.unflatten(1, (g, self.basis_size))  # (n, g, basis_size, h, w)
        if channels_last:  # every split its own NHWC image: (n, g, h, w, basis_size) in memory
            splits = splits.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
        y = F.conv2d(splits.reshape(n * g, self.basis_size, h, w), weight, self.basis_bias,
                     self.stride, self.padding)
        y = y.reshape(n, g, self.n_basis, y.shape[-2], y.shape[-1])
        if channels_last:  # one NHWC image again, channels split-major: (n, h, w, g, n_basis) in memory
            return y.permute(0, 3, 4, 1, 2).contiguous().flatten(3).permute(0, 3, 1, 2)
        return y.flatten(1, 2)

    def merged_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Basis and projection as one dense convolution, its weight and bias composed on this call."""
        weight = self.composed_weight()
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            weight = weight.contiguous(memory_format=torch.channels_last)
        return F.conv2d(x, weight, self._composed_bias(), self.stride, self.padding)

    def output_positions(self, input_shape) -> int:
        """Batch x output height x output width for an ``(N, C, H, W)`` input."""
        n, _, h, w = input_shape
        (ph, pw), (sh, sw), k = self.padding, self.stride, self.kernel_size
        return n * ((h + 2 * ph - k) // sh + 1) * ((w + 2 * pw - k) // sw + 1)

    def form_flops(self, positions: Optional[int] = None) -> tuple:
        """Forward FLOPs ``(decomposed, merged)`` for ``positions`` output positions (batch x height x
        width), counted as FlopCounterMode counts them: 2 per multiply-add, biases free.

        The merged count includes composing the weight from basis and projection, which the
        merged form does on every call; with ``positions=None`` both are per output position without the
        composition (deployment composes once).  ``merged`` is ``None`` unless the layer is
        :attr:`mergeable`; ``post`` costs the same in both forms and is not counted.
        Forward and backward cost three times the forward in either form, so the forward decides.
        """
        per_basis = 2 * self.n_splits * self.n_basis * self.basis_size * self.kernel_size ** 2
        per_projection = 2 * self.out_channels * self.n_splits * self.n_basis * self.kernel_size2 ** 2
        if not self.mergeable:
            return (per_basis + per_projection) * (positions or 1), None
        per_dense = 2 * self.out_channels * self.in_channels * self.kernel_size ** 2
        if positions is None:
            return per_basis + per_projection, per_dense
        compose = self.out_channels * per_basis  # (out*G, n) @ (n, b*k*k); the bias's matrix-vector is free
        return (per_basis + per_projection) * positions, per_dense * positions + compose

    def resolved_form(self, input_shape) -> str:
        """``'decomposed'`` or ``'merged'``: the form this layer computes an input of that shape in."""
        form = _check_form(_forced_form or self.form)
        if not self.mergeable:
            return "decomposed"
        if form != "auto":
            return form
        key = tuple(input_shape)
        if torch.compiler.is_compiling():  # decided while tracing; the compiled graph keeps the choice
            return self._cheaper_form(key)
        cache = self.__dict__.setdefault("_auto_forms", {})
        if key not in cache:
            cache[key] = self._cheaper_form(key)
        return cache[key]

    def _cheaper_form(self, input_shape: tuple) -> str:
        decomposed, merged = self.form_flops(self.output_positions(input_shape))
        return "merged" if merged <= decomposed else "decomposed"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{self.label}: expects (N, {self.in_channels}, H, W) input, "
                             f"got {tuple(x.shape)}")
        if self.resolved_form(x.shape) == "merged":
            y = self.merged_forward(x)
            return y if self.post is None else self.post(y)
        y = self.basis_forward(x)
        if self.mid is not None:
            y = self.mid(y)
        y = self.projection(y)
        if self.post is not None:
            y = self.post(y)
        return y

    # ------------------------------------------------------------------ dense equivalents
    def _require_linear(self, what: str) -> None:
        if not self.is_linear:
            raise ValueError(f"{self.label}: {what} needs a linear BasisConv2d (no mid/post layers, "
                             f"kernel_size2 1); this one has mid={self.mid is not None}, "
                             f"post={self.post is not None}, kernel_size2={self.kernel_size2}")

    def composed_weight(self) -> torch.Tensor:
        """The ``(out_channels, in_channels, k, k)`` filters basis and projection compose (split-major),
        ignoring ``mid``/``post``: what the official loss_norm regulariser compares with dense filters.
        Differentiable; equals :meth:`merged_weight` for linear layers."""
        if self.kernel_size2 != 1:
            raise ValueError(f"{self.label}: a {self.kernel_size2}x{self.kernel_size2} projection does not "
                             f"compose with the basis into {self.kernel_size}x{self.kernel_size} filters")
        proj = self.projection.weight.reshape(self.out_channels, -1)
        return decompose.compose(self.basis_weight(), proj)

    def merged_weight(self) -> torch.Tensor:
        """The dense ``(out_channels, in_channels, k, k)`` weight this linear layer represents."""
        self._require_linear("merged_weight()")
        return self.composed_weight()

    def merged_bias(self) -> Optional[torch.Tensor]:
        """The dense bias: projection bias plus the projected basis biases (``None`` without biases)."""
        self._require_linear("merged_bias()")
        return self._composed_bias()

    def _composed_bias(self) -> Optional[torch.Tensor]:
        bias = self.projection.bias
        if self.basis_bias is not None:
            # every split sees the same basis bias: sum the splits' coefficients, then one product
            proj = self.projection.weight.reshape(self.out_channels, self.n_splits, self.n_basis)
            projected = proj.sum(1) @ self.basis_bias
            bias = projected if bias is None else bias + projected
        return bias

    def to_conv(self) -> nn.Conv2d:
        """A dense :class:`nn.Conv2d` computing the same function (linear layers only)."""
        weight = self.merged_weight()
        bias = self.merged_bias()
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                         self.padding, bias=bias is not None, device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            conv.weight.copy_(weight)
            if bias is not None:
                conv.bias.copy_(bias)
        return conv

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, basis_size: int, n_basis: Optional[int],
                  basis: Optional[Basis] = None, name: Optional[str] = None) -> BasisConv2d:
        """Initialise basis and projection from a trained ``nn.Conv2d`` in closed form.

        The basis is the top ``n_basis`` right-singular vectors of the stacked filter splits (or the
        given shared ``basis``, kept as it is, ``n_basis`` then ``None`` or its size); the projection is
        the least-squares fit.  Exact when
        ``n_basis`` reaches the rank (at most ``basis_size * k * k``).  The relative Frobenius error of
        the represented weight is stored in ``layer.reconstruction_error``.
        """
        obstacle = conversion_obstacle(conv, basis_size)
        if obstacle is not None:
            raise ValueError(f"{name or f'from_conv({conv})'}: cannot convert: {obstacle}")
        weight = conv.weight.detach()
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size[0], basis_size, n_basis,
                    stride=conv.stride, padding=conv.padding, bias=conv.bias is not None, basis=basis,
                    name=name)
        layer.to(device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            if basis is None:
                layer.basis.weight.copy_(decompose.fit_basis([weight], basis_size, n_basis))
            proj = decompose.coefficients(weight, layer.basis_weight())
            layer.projection.weight.copy_(proj.reshape(layer.projection.weight.shape))
            if conv.bias is not None:
                layer.projection.bias.copy_(conv.bias.detach())
                layer.basis_bias.zero_()
        layer.reconstruction_error = decompose.relative_error(weight, layer.merged_weight())
        return layer

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"basis_size={self.basis_size}, n_basis={self.n_basis}, splits={self.n_splits}")
        if self.stride != (1, 1):
            s += f", stride={self.stride}"
        if self.padding != (self.kernel_size // 2,) * 2:
            s += f", padding={self.padding}"
        if self.kernel_size2 != 1:
            s += f", kernel_size2={self.kernel_size2}"
        if self.basis_bias is None:
            s += ", bias=False"
        if self.slices_basis:
            s += f", basis_slice={'last' if self.inverse_index else 'first'}"
        return s
