"""Turn the convolutions of any trained network into basis convolutions, in place.

:func:`basisify` walks a model, decides per ``nn.Conv2d`` whether it is converted (name patterns, kernel
size, width, and whether the layer can be expressed with the requested split width at all), fits the
basis in closed form from the trained weights (one joint fit per shared basis) and swaps the layers.
What happened to every convolution is returned as a :class:`ConversionReport`.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from . import decompose
from .layers.basis_conv import Basis, BasisConv2d, conversion_obstacle
from .layers.checks import check_positive_ints
from .surgery import replace_module

Patterns = Union[str, Sequence[str]]


@dataclass(frozen=True)
class ReplacedLayer:
    """A convolution that became a :class:`BasisConv2d`; ``params_after`` excludes a shared basis."""

    path: str
    in_channels: int
    out_channels: int
    kernel_size: int
    n_splits: int
    basis: str  # "own", or the name of the shared basis
    relative_error: float
    params_before: int
    params_after: int


@dataclass(frozen=True)
class SkippedLayer:
    """A convolution left as it was, and why."""

    path: str
    reason: str


@dataclass
class ConversionReport:
    """What :func:`basisify` did.  ``str(report)`` is a readable table."""

    basis_size: int
    n_basis: int
    replaced: List[ReplacedLayer] = field(default_factory=list)
    skipped: List[SkippedLayer] = field(default_factory=list)
    shared_bases: Dict[str, int] = field(default_factory=dict)  # name -> parameters, counted once

    @property
    def params_before(self) -> int:
        """Parameters of the replaced convolutions."""
        return sum(r.params_before for r in self.replaced)

    @property
    def params_after(self) -> int:
        """Parameters of their replacements, every shared basis counted once."""
        return sum(r.params_after for r in self.replaced) + sum(self.shared_bases.values())

    def __str__(self) -> str:
        head = ("layer", "in", "out", "k", "splits", "basis", "rel. error", "params", "-> params")
        rows = [(r.path, r.in_channels, r.out_channels, r.kernel_size, r.n_splits, r.basis,
                 f"{r.relative_error:.2e}", f"{r.params_before:,}", f"{r.params_after:,}")
                for r in self.replaced]
        rows += [(f"{name} (shared basis)", "", "", "", "", "", "", "", f"{n:,}")
                 for name, n in self.shared_bases.items()]
        rows.append(("total", "", "", "", "", "", "", f"{self.params_before:,}", f"{self.params_after:,}"))
        widths = [max(len(str(row[i])) for row in [head, *rows]) for i in range(len(head))]
        lines = [f"basisify: basis_size {self.basis_size}, n_basis {self.n_basis}: "
                 f"{len(self.replaced)} convolutions replaced, {len(self.skipped)} left as they are"]
        for row in [head, *rows]:
            lines.append("  ".join(str(v).ljust(w) if i == 0 else str(v).rjust(w)
                                   for i, (v, w) in enumerate(zip(row, widths))).rstrip())
        if self.skipped:
            lines.append("left as they are:")
            width = max(len(s.path) for s in self.skipped)
            lines += [f"  {s.path.ljust(width)}  {s.reason}" for s in self.skipped]
        return "\n".join(lines)


def _as_list(patterns: Optional[Patterns]) -> List[str]:
    if patterns is None:
        return []
    return [patterns] if isinstance(patterns, str) else list(patterns)


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _first_match(path: str, patterns: List[str]) -> Optional[str]:
    return next((p for p in patterns if fnmatchcase(path, p)), None)


def _find_convs(model: nn.Module) -> Dict[str, nn.Conv2d]:
    """Every ``nn.Conv2d`` by path, except the projections inside existing basis layers."""
    inside_basis = set()
    convs = {}
    for path, module in model.named_modules():
        if isinstance(module, BasisConv2d):
            inside_basis.update(id(m) for m in module.modules())
        elif isinstance(module, nn.Conv2d) and id(module) not in inside_basis:
            convs[path] = module
    return convs


def _skip_reason(path: str, conv: nn.Conv2d, basis_size: int, include: List[str], exclude: List[str],
                 kernel_sizes: Optional[Collection[int]], min_channels: int) -> Optional[str]:
    if include and _first_match(path, include) is None:
        return "not matched by include"
    pattern = _first_match(path, exclude)
    if pattern is not None:
        return f"matched by exclude {pattern!r}"
    obstacle = conversion_obstacle(conv, basis_size)
    if obstacle is not None:
        return obstacle
    k = conv.kernel_size[0]
    if (k == 1) if kernel_sizes is None else (k not in kernel_sizes):
        wanted = "every size but 1" if kernel_sizes is None else sorted(kernel_sizes)
        return f"kernel size {k} not wanted (kernel_sizes: {wanted})"
    if conv.in_channels < min_channels:
        return f"in_channels {conv.in_channels} < min_channels {min_channels}"
    return None


def _share_specs(share: Union[bool, Patterns, Sequence[Patterns]]) -> Optional[List[List[str]]]:
    """The share groups as lists of patterns (``None`` for ``share=False/True``)."""
    if isinstance(share, bool) or share is None:
        return None
    return [[share]] if isinstance(share, str) else [_as_list(spec) for spec in share]


def _share_groups(paths: List[str], share: Union[bool, Patterns, Sequence[Patterns]],
                  convs: Dict[str, nn.Conv2d]) -> Dict[str, List[str]]:
    """Shared-basis name -> the converted paths that use it (convs owning their basis are absent)."""
    specs = _share_specs(share)
    groups: Dict[str, List[str]] = {}
    if specs is None:
        if share:
            for path in paths:
                k = convs[path].kernel_size[0]
                groups.setdefault(f"basis_{k}x{k}", []).append(path)
        return groups
    for path in paths:
        hits = [i for i, spec in enumerate(specs) if _first_match(path, spec) is not None]
        if len(hits) > 1:
            raise ValueError(f"basisify: layer {path!r} matches share groups {hits}; "
                             f"a layer can use only one basis")
        if hits:
            groups.setdefault(f"shared_{hits[0]}", []).append(path)
    for name, members in groups.items():
        sizes = sorted({convs[p].kernel_size[0] for p in members})
        if len(sizes) > 1:
            raise ValueError(f"basisify: share group {name} mixes kernel sizes {sizes} "
                             f"({', '.join(members)})")
    return groups


def _own_params(layer: nn.Module, exclude: Optional[nn.Parameter] = None) -> int:
    return sum(p.numel() for p in layer.parameters() if p is not exclude)


@torch.no_grad()
def basisify(model: nn.Module, basis_size: int, n_basis: int, *, include: Optional[Patterns] = None,
             exclude: Optional[Patterns] = None, kernel_sizes: Optional[Collection[int]] = None,
             min_channels: int = 1,
             share: Union[bool, Patterns, Sequence[Patterns]] = False) -> ConversionReport:
    """Replace the eligible ``nn.Conv2d`` layers of ``model`` by :class:`BasisConv2d`, in place.

    Each replacement is initialised in closed form from the trained weights (``BasisConv2d.from_conv``),
    so at full rank (``n_basis >= basis_size * k * k``) the model computes the same function.

    Args:
        basis_size, n_basis: split width and number of basis filters of every replacement.
        include: glob pattern(s) on module paths (``"layer1.*"``); only matching convolutions are
            converted.  A pattern without wildcards names one layer: if that layer cannot be converted
            the call fails instead of skipping it.  A pattern matching no convolution is an error.
        exclude: glob pattern(s) of convolutions to leave as they are.
        kernel_sizes: square kernel sizes to convert; ``None`` means every size but 1.
        min_channels: convolutions with fewer input channels are left as they are.
        share: ``False``: every layer owns its basis; ``True``: one basis per kernel size, shared by
            all converted layers; a list of groups (each a pattern or a list of patterns; a single
            pattern is one group): the converted layers of a group share one basis, the others own
            theirs.  A shared basis is fitted jointly to the filters of all its layers.

    Returns:
        A :class:`ConversionReport` listing every replaced layer (relative reconstruction error,
        parameters before and after) and every skipped one with the reason.

    Raises:
        ValueError: bad numbers, a pattern that matches nothing, a layer named explicitly that cannot
            be converted, a layer in two share groups, a share group mixing kernel sizes.
    """
    check_positive_ints("basisify", basis_size=basis_size, n_basis=n_basis, min_channels=min_channels)
    if isinstance(model, nn.Conv2d):
        raise ValueError("basisify: the model is a single nn.Conv2d, which cannot be replaced in place; "
                         "use BasisConv2d.from_conv")
    include, exclude = _as_list(include), _as_list(exclude)
    convs = _find_convs(model)
    for pattern in include + exclude + [p for spec in _share_specs(share) or [] for p in spec]:
        if not any(fnmatchcase(path, pattern) for path in convs):
            raise ValueError(f"basisify: pattern {pattern!r} matches no nn.Conv2d of the model")
    named = {p for p in include if not _is_glob(p)}

    report = ConversionReport(basis_size, n_basis)
    chosen = []
    for path, conv in convs.items():
        reason = _skip_reason(path, conv, basis_size, include, exclude, kernel_sizes, min_channels)
        if reason is None:
            chosen.append(path)
        elif path in named:
            raise ValueError(f"basisify: layer {path!r} was asked for by name but cannot be converted: "
                             f"{reason}")
        else:
            report.skipped.append(SkippedLayer(path, reason))

    basis_of: Dict[str, tuple] = {}  # path -> (shared basis name, Basis)
    for name, members in _share_groups(chosen, share, convs).items():
        weights = [convs[p].weight for p in members]
        k = weights[0].shape[-1]
        basis = Basis(n_basis, basis_size, k).to(device=weights[0].device, dtype=weights[0].dtype)
        basis.weight.copy_(decompose.fit_basis(weights, basis_size, n_basis))
        report.shared_bases[name] = basis.weight.numel()
        basis_of.update((p, (name, basis)) for p in members)

    for path in chosen:
        conv = convs[path]
        name, basis = basis_of.get(path, ("own", None))
        layer = BasisConv2d.from_conv(conv, basis_size, n_basis, basis=basis, name=path).train(conv.training)
        replace_module(model, conv, layer)
        report.replaced.append(ReplacedLayer(
            path, conv.in_channels, conv.out_channels, conv.kernel_size[0], layer.n_splits, name,
            layer.reconstruction_error, _own_params(conv),
            _own_params(layer, exclude=None if basis is None else basis.weight)))
    return report
