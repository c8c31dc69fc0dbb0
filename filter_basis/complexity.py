"""Complexity report: parameters, weight parameters and forward FLOPs of a model, against a baseline.

FLOPs come from :class:`torch.utils.flop_counter.FlopCounterMode`; nothing here knows a FLOP formula.
The forward pass runs on the ``meta`` device (parameters and buffers are swapped for meta tensors with
:func:`torch.func.functional_call`), so counting a 43M-parameter EDSR at 1280x720 takes no real compute
and leaves the model untouched.  Parameters are counted by identity, so a tensor shared by several
layers (a shared :class:`~filter_basis.layers.Basis`) counts once.  "Weight parameters" are the tensors
with more than one dimension: the paper's way of counting (no biases, no normalisation).  Basis layers
count in their decomposed form, the compressed model's own FLOPs, whichever form they compute in;
:func:`training_flops` counts a training step with the forms the layers train in.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.utils.flop_counter import FlopCounterMode

from .layers import forced_form

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


@dataclass(frozen=True)
class Row:
    """Cost of one module (its own parameters and operations) or of one block (everything inside)."""

    name: str
    kind: str
    params: int
    weight_params: int
    flops: int


@dataclass
class Summary:
    """What :func:`summarize` found; ``to_dict()`` is the object of the ``--summary`` contract."""

    input_size: tuple
    params: int
    weight_params: int
    flops: int
    modules: list = field(default_factory=list)
    blocks: list = field(default_factory=list)
    baseline_weight_params: Optional[int] = None
    block: Optional[str] = None
    block_weight_params: Optional[int] = None
    baseline_block_weight_params: Optional[int] = None

    @property
    def compression_pct(self) -> Optional[float]:
        return _percent(self.weight_params, self.baseline_weight_params)

    @property
    def block_compression_pct(self) -> Optional[float]:
        return _percent(self.block_weight_params, self.baseline_block_weight_params)

    def to_dict(self) -> dict:
        """The contract-2 keys known here (the CLI adds ``model`` and ``baseline``); unknown ones left out."""
        values = {
            "params": self.params,
            "weight_params": self.weight_params,
            "flops": self.flops,
            "baseline_weight_params": self.baseline_weight_params,
            "compression_pct": self.compression_pct,
            "block_weight_params": self.block_weight_params,
            "baseline_block_weight_params": self.baseline_block_weight_params,
            "block_compression_pct": self.block_compression_pct,
        }
        return {key: value for key, value in values.items() if value is not None}

    def table(self) -> str:
        """Module rows (own parameters and FLOPs, summing to the totals), block rows, then totals."""
        lines = [f"input {tuple(self.input_size)} (batch of one)", ""]
        lines += _format_rows("module", [r for r in self.modules if r.params or r.flops], self.flops)
        if self.blocks:
            lines += [""] + _format_rows("block", self.blocks, self.flops)
        lines += ["", f"params {self.params:,}   weight params {self.weight_params:,}   "
                      f"FLOPs {self.flops:,} ({self.flops / 1e9:.3f} G)"]
        if self.compression_pct is not None:
            lines.append(f"compression {self.compression_pct:.1f}% of {self.baseline_weight_params:,} "
                         f"baseline weight params")
        if self.block is not None:
            line = f"block {self.block}: {self.block_weight_params:,} weight params"
            if self.block_compression_pct is not None:
                line += (f", {self.block_compression_pct:.1f}% of {self.baseline_block_weight_params:,} "
                         f"in the baseline")
            lines.append(line)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def summarize(model: nn.Module, input_size: Sequence[int], baseline: Optional[nn.Module] = None, *,
              block: Optional[str] = None, blocks: Optional[Sequence[str]] = None) -> Summary:
    """Count parameters and forward FLOPs of ``model`` for one input of shape ``input_size``.

    Args:
        model: any module; it may live on the meta device.  It is run in eval mode on meta tensors
            (its training flags are restored afterwards); nothing of it is modified.
        input_size: the input shape without the batch dimension, e.g. ``(3, 32, 32)``.
        baseline: the uncompressed model to compare weight parameters with (only counted, not run).
        block: path of one module (e.g. ``"body.0"``, the first residual block of an SR model) whose
            weight parameters are compared with the module at the same path of ``baseline``.
        blocks: paths of the block rows; by default the direct children of the outermost containers
            (``nn.Sequential``, ``nn.ModuleList``, ``nn.ModuleDict``).
    """
    own_flops, inclusive_flops, total_flops = _count_flops(model, tuple(input_size))
    module_rows, block_rows = [], []
    seen = set()
    for name, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False) if id(p) not in seen]
        seen.update(id(p) for p in own)
        module_rows.append(Row(name, type(module).__name__, _numel(own), _numel(own, weights_only=True),
                               own_flops.get(module, 0)))
    for name in blocks if blocks is not None else _default_blocks(model):
        module = _submodule(model, name, "model")
        params = list(module.parameters())
        block_rows.append(Row(name, type(module).__name__, _numel(params),
                              _numel(params, weights_only=True), inclusive_flops.get(module, 0)))
    params = list(model.parameters())
    summary = Summary(tuple(input_size), _numel(params), _numel(params, weights_only=True), total_flops,
                      module_rows, block_rows)
    if baseline is not None:
        summary.baseline_weight_params = _numel(list(baseline.parameters()), weights_only=True)
    if block is not None:
        summary.block = block
        summary.block_weight_params = _numel(list(_submodule(model, block, "model").parameters()),
                                             weights_only=True)
        if baseline is not None:
            baseline_block = _submodule(baseline, block, "baseline")
            summary.baseline_block_weight_params = _numel(list(baseline_block.parameters()),
                                                          weights_only=True)
    return summary


def training_flops(model: nn.Module, input_size: Sequence[int], batch: int = 1) -> tuple:
    """FLOPs of one training step's forward and backward per input, and the form of every basis layer.

    The model runs in training mode on meta tensors (nothing of it changes) for a batch of ``batch``
    inputs of shape ``input_size``, every :class:`~filter_basis.layers.BasisConv2d` in the form it
    trains in (its ``form``; ``'auto'`` decides for this input shape).  Returns ``(flops per input,
    {layer path: 'decomposed' or 'merged'})``; the per-step cost of composing merged weights is shared
    by the batch.  Gradients of the input itself are not computed, as in training.
    """
    from .layers import BasisConv2d

    tensors = _meta_tensors(model, requires_grad=True)
    forms = {}
    names = {}
    for name, module in model.named_modules():
        if isinstance(module, BasisConv2d):
            names.setdefault(module, name)

    def record(module, args):
        if module in names:
            forms.setdefault(names[module], module.resolved_form(args[0].shape))

    floating = [t.dtype for t in tensors.values() if t.is_floating_point()]
    x = torch.empty((batch, *input_size), dtype=floating[0] if floating else torch.float32, device="meta")
    training = {module: module.training for module in model.modules()}
    counter = FlopCounterMode(display=False)
    handle = register_module_forward_pre_hook(record)
    try:
        model.train()
        with torch.enable_grad(), counter:
            output = functional_call(model, tensors, (x,), tie_weights=False, strict=False)
            if output.requires_grad:  # a model without parameters (Bicubic) has no backward
                output.float().sum().backward()
    finally:
        handle.remove()
        for module, flag in training.items():
            module.training = flag
    return round(counter.get_total_flops() / batch), forms


def _meta_tensors(model: nn.Module, requires_grad: bool = False) -> dict:
    """A meta tensor for every parameter and buffer path; one per distinct tensor, so sharing stays.

    Each distinct module's own tensors are swapped once, at the module's first path: a shared module
    (e.g. a Basis used by several layers) listed under several paths would otherwise be swapped twice
    and "restored" to the meta tensor."""
    meta_by_id, tensors = {}, {}
    for path, module in model.named_modules():
        prefix = f"{path}." if path else ""
        for name, tensor in [*module.named_parameters(recurse=False),
                             *module.named_buffers(recurse=False)]:
            if id(tensor) not in meta_by_id:
                meta = torch.empty_like(tensor, device="meta")
                if requires_grad and isinstance(tensor, nn.Parameter) and tensor.requires_grad:
                    meta.requires_grad_(True)
                meta_by_id[id(tensor)] = meta
            tensors[prefix + name] = meta_by_id[id(tensor)]
    return tensors


# ---------------------------------------------------------------------------------------------- FLOPs
def _count_flops(model: nn.Module, input_size: tuple):
    """Run ``model`` once on meta tensors under FlopCounterMode and attribute the FLOPs to modules.

    Returns ``(own, inclusive, total)``: per module object the FLOPs of the operations its own forward
    runs outside its submodules, the FLOPs of everything inside it, and the model's total.  A stack of
    forward calls subtracts nested calls exactly, so own counts add up to the total even when a module
    is shared or called several times.
    """
    known = {module for module in model.modules()}
    tensors = _meta_tensors(model)
    floating = [t.dtype for t in tensors.values() if t.is_floating_point()]
    x = torch.empty((1, *input_size), dtype=floating[0] if floating else torch.float32, device="meta")

    counter = FlopCounterMode(display=False)
    own, inclusive = defaultdict(int), defaultdict(int)
    stack = []

    def enter(module, args):
        stack.append([module, counter.get_total_flops(), 0])

    def leave(module, args, output):
        module_, start, nested = stack.pop()
        spent = counter.get_total_flops() - start
        if module_ in known:
            inclusive[module_] += spent
            own[module_] += spent - nested
            if stack:
                stack[-1][2] += spent

    training = {module: module.training for module in known}
    handles = [register_module_forward_pre_hook(enter), register_module_forward_hook(leave)]
    try:
        model.eval()
        with torch.no_grad(), forced_form("decomposed"), counter:
            functional_call(model, tensors, (x,), tie_weights=False, strict=False)
    finally:
        for handle in handles:
            handle.remove()
        for module, flag in training.items():
            module.training = flag
    return dict(own), dict(inclusive), counter.get_total_flops()


def weight_params(module: nn.Module) -> int:
    """The paper's count: parameters with more than one dimension (conv and linear weights), a tensor
    shared by several layers counted once.  The one definition every report, tool and test uses."""
    return _numel(list(module.parameters()), weights_only=True)


# ------------------------------------------------------------------------------------------- helpers
def _numel(params: list, weights_only: bool = False) -> int:
    return sum(p.numel() for p in params if not weights_only or p.dim() > 1)


def _percent(part: Optional[int], whole: Optional[int]) -> Optional[float]:
    if part is None or not whole:
        return None
    return 100.0 * part / whole


def _submodule(model: nn.Module, path: str, what: str) -> nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError:
        raise ValueError(f"summarize: the {what} ({type(model).__name__}) has no module {path!r}") from None


def _default_blocks(model: nn.Module) -> list:
    """Direct children of the outermost containers, in order (e.g. ``body.0`` ... of an EDSR)."""
    names = []

    def visit(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            path = f"{prefix}{name}"
            if isinstance(module, _CONTAINERS):
                names.append(path)
            else:
                visit(path + ".", child)

    visit("", model)
    return names


def _format_rows(title: str, rows: list, total_flops: int) -> list:
    width = max([len(title)] + [len(r.name or r.kind) for r in rows])
    kind_width = max([4] + [len(r.kind) for r in rows])
    header = (f"{title:<{width}}  {'type':<{kind_width}}  {'params':>12}  {'weight params':>13}  "
              f"{'FLOPs':>16}  {'FLOPs %':>7}")
    lines = [header, "-" * len(header)]
    for r in rows:
        share = 100.0 * r.flops / total_flops if total_flops else 0.0
        lines.append(f"{r.name or r.kind:<{width}}  {r.kind:<{kind_width}}  {r.params:>12,}  "
                     f"{r.weight_params:>13,}  {r.flops:>16,}  {share:>7.2f}")
    return lines
