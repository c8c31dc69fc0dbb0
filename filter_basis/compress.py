"""One call from a trained dense network to a compressed one: :func:`compress` (docs/compressing.md).

It basisifies the convolutions (:func:`filter_basis.convert.basisify`), chooses the number of basis
filters of every basis for a budget of weights and/or forward FLOPs (:mod:`filter_basis.rank_select`),
fits the result to what the dense network computes on calibration batches
(:func:`filter_basis.data_fit.fit_by_data`) and re-estimates BatchNorm statistics.  The model given is
left as it is.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Iterable, List, Optional, Sequence

import torch
from torch import nn

from . import data_fit, rank_select
from .convert import basisify
from .init_from_dense import basis_groups, reestimate_batchnorm, spectrum

SENSITIVITY_BATCHES = 8


@dataclass
class CompressionReport:
    """What :func:`compress` chose and how well the result reproduces the dense network."""

    counts: dict                      # basis name -> filters
    layers: dict                      # basis name -> the layer paths using it
    spent: dict                       # "weights"/"flops" -> amount of the result
    baseline: dict                    # the same of the dense network
    curves: Optional[list] = None     # per basis {count: calibration loss} (sensitivity)
    fit: Optional[data_fit.DataFitReport] = None
    bn_batches: int = 0
    notes: List[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"compress: {len(self.counts)} bases; "
                 + ", ".join(f"{n} {self.spent[n]:,} of {self.baseline[n]:,} "
                             f"({100 * self.spent[n] / self.baseline[n]:.1f}%)" for n in self.spent)]
        lines += [f"  {name}: {n} filters ({', '.join(self.layers[name])})"
                  for name, n in self.counts.items()]
        if self.fit is not None:
            lines += self.fit.lines()
        return "\n".join(lines + self.notes)


def _inputs(calibration: Iterable, count: int) -> list:
    batches = []
    for item in calibration:
        if len(batches) >= count:
            break
        batches.append(item[0] if isinstance(item, (tuple, list)) else item)
    if not batches:
        raise ValueError("compress: the calibration iterable yielded no batch")
    return batches


def compress(model: nn.Module, calibration: Iterable, *, basis_size: int,
             target_compression: Optional[float] = None, target_flops: Optional[float] = None,
             input_size: Optional[Sequence[int]] = None, rank_select_by: str = "sensitivity",
             fit_batches: int = 32, bn_batches: Optional[int] = None, include=None, exclude=None,
             kernel_sizes=None, min_channels: int = 1, share=False, steps: Optional[int] = None,
             rounds: int = 0,
             forward: Optional[Callable[[nn.Module, torch.Tensor], torch.Tensor]] = None) -> tuple:
    """Compress a trained dense ``model`` to a budget; returns ``(compressed model, CompressionReport)``.

    Args:
        model: the trained dense network (not modified).
        calibration: batches of inputs (or tuples whose first item is the input), e.g. a DataLoader of
            training data; the first ``fit_batches`` are read, on the device of ``model``.
        basis_size: input channels per split of every converted convolution.
        target_compression: the result's weight parameters (tensors with more than one dimension) at
            most this fraction of ``model``'s.
        target_flops: its forward FLOPs for one input of ``input_size`` (``(C, H, W)``) at most this
            fraction of ``model``'s, counted as ``--summary`` counts them.  At least one target is needed.
        rank_select_by: ``"sensitivity"`` (measured calibration loss per basis and count) or ``"energy"``.
        bn_batches: calibration batches to re-estimate BatchNorm on (default: all that were read).
        include, exclude, kernel_sizes, min_channels, share: which convolutions become basis layers
            and which share a basis, as for :func:`~filter_basis.convert.basisify`.
        steps: Adam steps per non-linear unit of the data fit (default :data:`data_fit.STEPS`).
        rounds: alternating refinement rounds of the linear layers' bases and projections after the fit
            (``--fit_rounds``; 0: none).
        forward: ``forward(model, x)`` when the model is not called as ``model(x)``.

    Raises:
        ValueError: no target, a budget that cannot be reached (naming the smallest reachable value),
            or a part that cannot be fitted.
    """
    if target_compression is None and target_flops is None:
        raise ValueError("compress: give target_compression and/or target_flops")
    if target_flops is not None and input_size is None:
        raise ValueError("compress: target_flops needs input_size (C, H, W) to count FLOPs at")
    if rank_select_by not in ("sensitivity", "energy"):
        raise ValueError(f"compress: rank_select_by {rank_select_by!r}; expected 'sensitivity' or 'energy'")
    call = forward or (lambda m, x: m(x))
    batches = _inputs(calibration, fit_batches)
    dense = copy.deepcopy(model).eval()
    options = dict(include=include, exclude=exclude, kernel_sizes=kernel_sizes, min_channels=min_channels,
                   share=share)
    probe = copy.deepcopy(model)
    basisify(probe, basis_size, 1, **options)
    groups = basis_groups(probe)
    if not groups:
        raise ValueError("compress: no convolution of the model can be converted (see basisify's report)")
    convs = {p: dense.get_submodule(p) for g in groups for p in g.layers}
    for group in groups:
        group.dense = [convs[p].weight.detach() for p in group.layers]
        group.singular_values = spectrum(group.dense, group.width)
    budget, wholes = rank_select.build_budget(probe, dense, groups, target_compression, target_flops,
                                              input_size)
    for name, spent, limit in zip(budget.names, budget.spent([1] * len(groups)), budget.limits):
        if spent > limit:
            raise ValueError(f"compress: the {name} budget cannot be reached: one filter per basis already "
                             f"needs {spent / wholes[name]:.4f} of the model's {name}")
    curves = None
    if rank_select_by == "energy":
        counts = rank_select.energy_counts([g.singular_values for g in groups], budget)
    else:
        layers = {p: probe.get_submodule(p) for p in convs}
        few = batches[:SENSITIVITY_BATCHES]
        covs = data_fit.split_covariances(dense, convs, {p: layers[p].basis_size for p in convs}, few, call)
        bases = [data_fit.whitened_basis([convs[p].weight for p in g.layers],
                                         [covs.get(p) for p in g.layers], g.width, g.full_rank)[0]
                 for g in groups]
        curves = rank_select.measure_curves(dense, groups, convs, layers, lambda b, n: bases[b][:n], few,
                                            call)
        counts = rank_select.sensitivity_counts(curves, budget)
    result = copy.deepcopy(model)
    for group, n in zip(groups, counts):
        share_group = [group.layers] if len(group.layers) > 1 else False
        basisify(result, basis_size, n, **{**options, "include": group.layers, "share": share_group})
    report = CompressionReport(dict(zip((g.name for g in groups), counts)),
                               {g.name: g.layers for g in groups},
                               dict(zip(budget.names, (int(v) for v in budget.spent(counts)))), wholes,
                               curves)
    report.fit = data_fit.fit_by_data(result, dense, batches, call, steps, rounds)
    has_norms = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in result.modules())
    if has_norms and not report.fit.exact:
        chosen = batches if bn_batches is None else batches[:bn_batches]
        report.bn_batches = reestimate_batchnorm(result, chosen, None if forward is None else
                                                 (lambda x: forward(result, x)))
    result.eval()
    return result, report
