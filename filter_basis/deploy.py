"""Deployment: an inference copy of a model with BatchNorm folded and every basis layer in its cheaper form.

:func:`fuse` folds eval-mode BatchNorm (running statistics present) where it is provably an affine map
of one convolution's output, or input.  The module structure is read first; it needs no tracing, so
models with data-dependent Python control flow get all of it:

* ``nn.Conv2d`` (any groups, dilation, padding) directly followed by the BN in an ``nn.Sequential``,
  wherever the Sequential sits: the model's containers, a SIC body, the ``mid``/``post`` of a compressed
  layer.  Nested Sequentials are read as one chain and ``nn.Identity`` is skipped.
* A :class:`BasisConv2d` or :class:`GroupConv2d` whose ``post`` is empty (or becomes empty) counts as a
  convolution there: a BN after it goes into its projection.
* The BN heading a layer's ``post``: into the projection.
* The BN heading ``mid``: for a GroupConv2d into the grouped convolution; for a BasisConv2d into the
  input side of the projection when the BN is all ``mid`` holds and the projection has no padding (the
  shift then reaches every output position alike), otherwise into the basis convolution when the layer has
  one split.  The basis filters are scaled per filter, which would change every other layer sharing the
  basis: a shared basis is only given up (the layer gets its own scaled copy) with
  ``unshare_bases=True``, since one copy per layer can multiply the parameters of a model compressed by
  sharing (DenseNet_Basis: one basis for 36 layers).  With several splits and an activation after the BN,
  the BN stays: each split would need its own scale of the one shared basis.

Then, if ``torch.fx`` can trace the model (the compressed layers and SIC kept whole), its graph shows
the pairs the structure cannot, such as torchvision's ``self.conv1`` / ``self.bn1`` attributes: a BN
whose input is a convolution's output that nothing else uses.  An untraceable model skips this step
(the report says so).

A BN stays where folding would be wrong or impossible: training-time statistics only
(``track_running_stats=False``), a BN or convolution reachable by several module paths or called twice
(folding would change the other use), a BN whose input is not a convolution's output alone (pre-activation
blocks, a conv output also feeding a shortcut).  Folded BNs become ``nn.Identity``; a ``mid``/``post``
left with nothing becomes ``None``.

Then every :class:`BasisConv2d` with nothing between basis and projection and a ``1 x 1`` projection is
compared with the dense convolution it represents (``to_conv()``; a remaining ``post``, e.g. a ReLU,
follows it) and takes the form with fewer FLOPs per output position, by the rule the layer itself uses
in training (:meth:`BasisConv2d.form_flops`, which counts as FlopCounterMode does).  Both forms compute
every output position with the same work, so the ratio does not depend on the resolution; the weight is
composed once here, so its cost does not count; ties go to the dense form (one kernel call).  Layers with
anything left between basis and projection (``mid``, e.g. BN and ReLU), or a wider projection kernel, stay
decomposed; ``merge=False`` keeps every basis layer decomposed (its ``form`` set to ``'decomposed'``).
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from torch import nn

from .complexity import summarize
from .layers import SIC, Basis, BasisConv2d, GroupConv2d
from .surgery import replace_module

_NORMS = (nn.BatchNorm2d, nn.SyncBatchNorm)
_TWO_STAGE = (BasisConv2d, GroupConv2d)
_LEAVES = (*_TWO_STAGE, SIC)  # folded by structure; torch.fx keeps them whole


# ------------------------------------------------------------------------------------------- report
@dataclass(frozen=True)
class FoldedNorm:
    """One BatchNorm folded away: its path and what now carries its scale and shift."""

    norm: str
    into: str


@dataclass(frozen=True)
class BasisLayerForm:
    """The form one BasisConv2d took; FLOPs are per output position (``None``: no dense form exists)."""

    name: str
    form: str  # "dense" or "decomposed"
    flops_decomposed: int
    flops_dense: Optional[int]
    reason: str


@dataclass
class FuseReport:
    """What :func:`fuse` did; ``str(report)`` is a readable table."""

    folded: list = field(default_factory=list)
    kept_norms: list = field(default_factory=list)
    layers: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0
    input_size: Optional[tuple] = None
    flops_before: Optional[int] = None
    flops_after: Optional[int] = None

    @property
    def merged(self) -> list:
        return [layer.name for layer in self.layers if layer.form == "dense"]

    @property
    def decomposed(self) -> list:
        return [layer.name for layer in self.layers if layer.form == "decomposed"]

    def table(self) -> str:
        lines = [f"fuse: {len(self.folded)} BatchNorm folded, {len(self.kept_norms)} kept; "
                 f"{len(self.merged)} basis layers merged into dense convs, {len(self.decomposed)} kept "
                 f"decomposed"]
        lines.append(f"parameters (shared counted once): {self.params_before:,} -> {self.params_after:,}")
        if self.flops_before is not None:
            lines.append(f"FLOPs at input {self.input_size}: {self.flops_before:,} -> {self.flops_after:,} "
                         f"({100.0 * self.flops_after / max(self.flops_before, 1):.1f}%)")
        if self.folded:
            width = max(len("folded BatchNorm"), *(len(f.norm) for f in self.folded))
            lines += ["", f"{'folded BatchNorm':<{width}}  into", "-" * (width + 6)]
            lines += [f"{f.norm:<{width}}  {f.into}" for f in self.folded]
        if self.kept_norms:
            lines += ["", "kept BatchNorm: " + ", ".join(self.kept_norms)]
        lines += ["note: " + note for note in self.notes]
        if self.layers:
            width = max(len("basis layer"), *(len(layer.name or "(model)") for layer in self.layers))
            header = (f"{'basis layer':<{width}}  {'form':<10}  {'FLOPs/pos decomposed':>20}  "
                      f"{'FLOPs/pos dense':>15}  reason")
            lines += ["", header, "-" * len(header)]
            for layer in self.layers:
                dense = "-" if layer.flops_dense is None else f"{layer.flops_dense:,}"
                lines.append(f"{layer.name or '(model)':<{width}}  {layer.form:<10}  "
                             f"{layer.flops_decomposed:>20,}  {dense:>15}  {layer.reason}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


# --------------------------------------------------------------------------------------------- fuse
def fuse(model: nn.Module, input_size: Optional[Sequence[int]] = None, *, merge: bool = True,
         unshare_bases: bool = False) -> nn.Module:
    """An eval-mode copy of ``model`` with BatchNorm folded and basis layers in their cheaper form.

    The arguments are those of :func:`fuse_with_report`, which also returns what was done.
    """
    return fuse_with_report(model, input_size, merge=merge, unshare_bases=unshare_bases)[0]


def fuse_with_report(model: nn.Module, input_size: Optional[Sequence[int]] = None, *, merge: bool = True,
                     unshare_bases: bool = False) -> tuple:
    """:func:`fuse`, and a :class:`FuseReport` of what was folded, merged and kept (with FLOPs when
    ``input_size`` is given): ``fused, report = fuse_with_report(model, (3, 32, 32))``.

    Args:
        model: a model in eval mode (its BatchNorm running statistics are what gets folded); it is not
            modified.  A model with any module in training mode raises ``ValueError``.
        input_size: input shape without the batch dimension, e.g. ``(3, 32, 32)``; only used to report
            the model's FLOPs before and after.
        merge: let linear basis layers become dense convolutions where that costs fewer FLOPs; ``False``
            keeps every basis layer decomposed (fewest parameters: the compressed model's own count).
        unshare_bases: fold a BN after a one-split basis convolution even when the basis is shared, by
            giving that layer its own copy of the basis (fewer operations, more parameters).

    Returns:
        ``(fused, report)``: the fused copy, whose outputs equal the original's eval outputs up to float
        rounding, and the :class:`FuseReport`.
    """
    training = [name or "(model)" for name, module in model.named_modules() if module.training]
    if training:
        raise ValueError(f"fuse() folds BatchNorm running statistics and needs an eval-mode model; call "
                         f"model.eval() first ({len(training)} modules in training mode, e.g. {training[0]})")
    if input_size is not None and (len(input_size) != 3 or any(int(v) < 1 for v in input_size)):
        raise ValueError(f"fuse(): input_size must be (channels, height, width) without the batch "
                         f"dimension, got {tuple(input_size)}")

    fused = copy.deepcopy(model)
    result = FuseReport(params_before=_count_params(model),
                        input_size=None if input_size is None else tuple(input_size))
    with torch.no_grad():
        _Folder(fused, result, unshare_bases).run()
        fused = _choose_forms(fused, result, merge)
    result.kept_norms = [name for name, module in fused.named_modules() if isinstance(module, _NORMS)]
    result.params_after = _count_params(fused)
    if input_size is not None:
        result.flops_before = summarize(model, input_size).flops
        result.flops_after = summarize(fused, input_size).flops
    return fused, result


def _count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------- BN folding
class _Folder:
    """Folds BNs as the module docstring lists: module structure first, then a torch.fx graph if any."""

    def __init__(self, model: nn.Module, result: FuseReport, unshare_bases: bool):
        self.model = model
        self.result = result
        self.unshare_bases = unshare_bases
        self.names = {id(module): name for name, module in model.named_modules()}
        self.uses = Counter(id(module) for _, module in model.named_modules(remove_duplicate=False))
        self.visited = set()

    def run(self) -> None:
        self.fold_structure(self.model)
        if not isinstance(self.model, _LEAVES):  # a lone layer holds no pairs for a graph to show
            self.fold_traced()

    def fold_structure(self, module: nn.Module) -> None:
        """Children first, so a layer's ``post`` is settled before the Sequential around it is read."""
        if id(module) in self.visited:
            return
        self.visited.add(id(module))
        for child in module.children():
            self.fold_structure(child)
        if isinstance(module, _TWO_STAGE):
            self._fold_layer(module)
        elif _is_plain_sequential(module):
            chain = _chain(module)
            for (parent, key), (norm_parent, norm_key) in zip(chain, chain[1:]):
                self._fold_after(getattr(parent, key), norm_parent, norm_key)

    def fold_traced(self) -> None:
        """Pairs the structure does not show (``self.conv1`` / ``self.bn1`` attributes): a BN whose graph
        input is a convolution's output used by nothing else.  Untraceable models skip this step."""
        try:
            graph = _LayerTracer().trace(self.model)
        except Exception as error:  # any tracing failure only means there is no graph to read
            self.result.notes.append(f"torch.fx could not trace the model ({type(error).__name__}), so only "
                                     f"BatchNorm placed by the module structure was folded")
            return
        calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
        for node in graph.nodes:
            if node.op != "call_module" or calls[node.target] != 1 or not node.args:
                continue
            source = node.args[0]
            while _is_call(source, nn.Identity, self.model) and len(source.users) == 1:
                source = source.args[0]
            if _is_call(source, nn.Module, self.model) and calls[source.target] == 1 \
                    and len(source.users) == 1:
                parent, _, key = node.target.rpartition(".")
                producer = self.model.get_submodule(source.target)
                self._fold_after(producer, self.model.get_submodule(parent), key)

    def _fold_layer(self, layer: nn.Module) -> None:
        post = _chain(layer, "post")
        if post:
            self._fold_after(layer.projection, *post[0])
        mid = _chain(layer, "mid")
        norm = self._foldable(*mid[0]) if mid else None
        if norm is not None:
            if isinstance(layer, GroupConv2d):
                self._fold_after(layer.grouped, *mid[0])
            elif len(mid) == 1 and _takes_input_affine(layer.projection) and self._single(layer.projection):
                _fold_into_input(layer.projection, *_affine(norm))
                self._record(mid[0], f"{self.names[id(layer.projection)]} (input side)")
            elif layer.n_splits == 1 and self._single(layer):
                shared = not self._single(layer.basis)
                if self.unshare_bases or not shared:
                    _fold_into_basis(layer, *_affine(norm))
                    self._record(mid[0], f"{self.names[id(layer)]}.basis" + (" (own copy)" if shared else ""))
                else:
                    self.result.notes.append(f"{self.names[id(norm)]} kept: its layer shares the basis "
                                             f"(unshare_bases=True folds it into a copy)")
        for key in ("mid", "post"):
            if getattr(layer, key) is not None and not _chain(layer, key):
                setattr(layer, key, None)

    def _fold_after(self, producer: nn.Module, parent: nn.Module, key: str) -> None:
        """Fold the BN at ``parent.key`` into ``producer``, the module computing the BN's input."""
        norm = self._foldable(parent, key)
        target = _output_conv(producer)
        if norm is None or target is None or not self._single(target):
            return
        _fold_into_output(target, *_affine(norm))
        self._record((parent, key), self.names[id(target)])

    def _foldable(self, parent: nn.Module, key: str) -> Optional[nn.Module]:
        norm = getattr(parent, key)
        usable = isinstance(norm, _NORMS) and norm.running_mean is not None and norm.running_var is not None
        return norm if usable and self._single(norm) else None

    def _single(self, module: nn.Module) -> bool:
        return self.uses[id(module)] == 1

    def _record(self, location: tuple, into: str) -> None:
        parent, key = location
        self.result.folded.append(FoldedNorm(self.names[id(getattr(parent, key))], into))
        setattr(parent, key, nn.Identity())


class _LayerTracer(torch.fx.Tracer):
    """Keeps the compressed layers whole: their insides are folded by structure, not by graph."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, _LEAVES) or super().is_leaf_module(module, qualified_name)


def _is_call(node, kind: type, model: nn.Module) -> bool:
    return isinstance(node, torch.fx.Node) and node.op == "call_module" \
        and isinstance(model.get_submodule(node.target), kind)


def _is_plain_sequential(module: nn.Module) -> bool:
    """An nn.Sequential (or subclass) that runs its children in order, nothing else."""
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _chain(parent: nn.Module, key: Optional[str] = None) -> list:
    """``(parent, key)`` of every module ``parent.key`` (or ``parent`` itself) applies, in order:
    nested plain Sequentials flattened, ``nn.Identity`` and ``None`` skipped."""
    if key is None:
        return [item for name in parent._modules for item in _chain(parent, name)]
    module = getattr(parent, key)
    if module is None or isinstance(module, nn.Identity):
        return []
    if _is_plain_sequential(module):
        return _chain(module)
    return [(parent, key)]


def _output_conv(module: nn.Module) -> Optional[nn.Conv2d]:
    """The convolution whose output is ``module``'s output, when nothing follows it inside ``module``."""
    if type(module) is nn.Conv2d:
        return module
    if isinstance(module, _TWO_STAGE) and not _chain(module, "post"):
        return module.projection
    if _is_plain_sequential(module):
        chain = _chain(module)
        return _output_conv(getattr(*chain[-1])) if chain else None
    return None


def _takes_input_affine(conv: nn.Conv2d) -> bool:
    """A per-input-channel affine map before ``conv`` folds into it: no padding, no groups."""
    return type(conv) is nn.Conv2d and conv.groups == 1 and conv.padding in ((0, 0), "valid")


def _affine(norm: nn.Module) -> tuple:
    """Eval-mode BN as ``y = scale * x + shift`` per channel (float64)."""
    scale = torch.rsqrt(norm.running_var.double() + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight.double()
    shift = -norm.running_mean.double() * scale
    if norm.bias is not None:
        shift = shift + norm.bias.double()
    return scale, shift


def _set_bias(owner: nn.Module, name: str, value: torch.Tensor, like: torch.Tensor) -> None:
    setattr(owner, name, nn.Parameter(value.to(dtype=like.dtype, device=like.device)))


def _fold_into_output(conv: nn.Conv2d, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """``affine(conv(x))`` as one convolution: scale each output filter, map the bias."""
    weight = conv.weight
    bias = conv.bias.double() if conv.bias is not None else 0.0
    weight.copy_(weight.double() * scale.view(-1, 1, 1, 1))
    _set_bias(conv, "bias", bias * scale + shift, weight)


def _fold_into_input(conv: nn.Conv2d, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """``conv(affine(x))`` as one convolution (no padding): scale each input channel, project the shift."""
    weight = conv.weight
    bias = conv.bias.double() if conv.bias is not None else 0.0
    _set_bias(conv, "bias", bias + torch.einsum("oikl,i->o", weight.double(), shift), weight)
    weight.copy_(weight.double() * scale.view(1, -1, 1, 1))


def _fold_into_basis(layer: BasisConv2d, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """BN after a one-split basis convolution: the layer gets its own, scaled basis and a mapped bias."""
    filters = layer.basis_weight()
    basis = Basis(layer.n_basis, layer.basis_size, layer.kernel_size).to(filters.device, filters.dtype)
    basis.weight.copy_(filters.double() * scale.view(-1, 1, 1, 1))
    bias = layer.basis_bias.double() if layer.basis_bias is not None else 0.0
    layer.basis = basis
    _set_bias(layer, "basis_bias", bias * scale + shift, filters)


# ------------------------------------------------------------------------------------ cheaper form
def _choose_forms(model: nn.Module, result: FuseReport, merge: bool) -> nn.Module:
    """Replace each linear BasisConv2d by its dense conv where that costs fewer FLOPs (and ``merge``);
    returns the root, which may itself have been replaced."""
    paths = {}
    for name, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, BasisConv2d):
            paths.setdefault(id(module), (module, []))[1].append(name)
    for layer, names in paths.values():
        flops_decomposed, flops_dense = layer.form_flops()  # per output position: the rule training uses
        if not layer.mergeable:
            reason = "layers between basis and projection" if layer.mid is not None \
                else f"kernel_size2 {layer.kernel_size2}"
            result.layers.append(BasisLayerForm(names[0], "decomposed", flops_decomposed, None, reason))
            continue
        if flops_dense > flops_decomposed or not merge:
            reason = "fewer FLOPs decomposed" if flops_dense > flops_decomposed else "merge=False"
            layer.form = "decomposed"
            result.layers.append(BasisLayerForm(names[0], "decomposed", flops_decomposed, flops_dense,
                                                reason))
            continue
        post, layer.post = layer.post, None
        dense = layer.to_conv()
        layer.post = post
        result.layers.append(BasisLayerForm(names[0], "dense", flops_decomposed, flops_dense,
                                            "fewer or equal FLOPs dense"))
        replacement = dense if post is None else nn.Sequential(dense, post)
        model = replace_module(model, layer, replacement)
    return model

