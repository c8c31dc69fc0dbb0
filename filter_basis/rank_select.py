"""How many filters each basis gets under a budget of weights and/or forward FLOPs.

Costs are linear in the counts: a basis' filter costs its own ``width x k x k`` weights plus the projection
columns it adds in every layer using it, and, in FLOPs, ``2 x`` the multiply-adds of its basis-convolution
map and projection columns at the layers' output sizes (as ``FlopCounterMode``, hence ``--summary``,
counts them).  So ``cost(counts) = fixed + sum(count_b x cost_b)``, exactly.

Two selections (see docs/compressing.md):

- ``energy``: greedy by squared singular value of the stacked dense filters per weight (or FLOP);
- ``sensitivity``: for every basis, the calibration loss of the dense network with that basis' layers cut
  to each of ~8 candidate counts (the others at full rank), then one global greedy choice by loss
  increase per cost saved until the budget holds (and single filters added back while it still holds).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from . import decompose
from .layers.basis_conv import BasisConv2d

FRACTIONS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 3 / 8, 1 / 2, 3 / 4, 1.0)


@dataclass
class Budget:
    """Limits on weights and/or FLOPs: ``fixed[i] + sum(n_b * costs[b][i]) <= limits[i]``."""

    names: List[str]
    fixed: List[float]
    costs: List[List[float]]  # per basis, per resource
    limits: List[float]

    def spent(self, counts: Sequence[int]) -> List[float]:
        return [
            self.fixed[i] + sum(n * c[i] for n, c in zip(counts, self.costs)) for i in range(len(self.names))
        ]

    def holds(self, counts: Sequence[int]) -> bool:
        return all(s <= lim for s, lim in zip(self.spent(counts), self.limits))

    def weight(self, b: int, filters: int, counts: Sequence[int]) -> float:
        """The cost of ``filters`` filters of basis ``b``, in fractions of each resource's overrun
        (the most binding resource counts), so one number orders moves under one or two budgets."""
        spent = self.spent(counts)
        scores = []
        for i, lim in enumerate(self.limits):
            over = max(spent[i] - lim, 0.0)
            scale = over if over > 0 else max(lim, 1.0)
            scores.append(filters * self.costs[b][i] / scale)
        return max(scores)


def build_budget(probe: nn.Module, baseline: nn.Module, groups, target_compression: Optional[float],
                 target_flops: Optional[float], input_size: Optional[Sequence[int]] = None) -> tuple:
    """``(Budget, {resource: the baseline's amount})`` for a weights and/or FLOPs target.

    ``probe`` (any device, meta included) is the basis model as built; its counts need not be the chosen
    ones: costs are linear in them.  FLOPs are counted for one input of ``input_size``."""
    from .complexity import weight_params
    from .init_from_dense import filter_costs

    names, fixed, costs, limits, wholes = [], [], [[] for _ in groups], [], {}
    if target_compression is not None:
        per = filter_costs(probe, groups)
        whole = weight_params(baseline)
        names.append("weights")
        fixed.append(weight_params(probe) - sum(g.basis.n_basis * c for g, c in zip(groups, per)))
        limits.append(int(target_compression * whole))
        wholes["weights"] = whole
        for c, value in zip(costs, per):
            c.append(value)
    if target_flops is not None:
        from .complexity import summarize

        per, total = flops_per_filter(probe, groups, input_size)
        whole = summarize(baseline, tuple(input_size)).flops
        names.append("flops")
        fixed.append(total - sum(g.basis.n_basis * c for g, c in zip(groups, per)))
        limits.append(int(target_flops * whole))
        wholes["flops"] = whole
        for c, value in zip(costs, per):
            c.append(value)
    return Budget(names, fixed, costs, limits), wholes


def flops_per_filter(model: nn.Module, groups, input_size: Sequence[int]) -> tuple:
    """``(FLOPs one more filter of each basis costs, the model's forward FLOPs)`` for one input of
    ``input_size``, counted as ``--summary`` counts them (on meta tensors)."""
    positions: Dict[str, int] = {}
    handles = []
    layers = {p: m for p, m in model.named_modules() if isinstance(m, BasisConv2d)}
    for path, layer in layers.items():

        def hook(module, args, path=path):
            positions[path] = module.output_positions(args[0].shape)

        handles.append(layer.register_forward_pre_hook(hook))
    from .complexity import summarize

    try:
        total_flops = summarize(model, tuple(input_size)).flops
    finally:
        for h in handles:
            h.remove()
    costs = []
    for group in groups:
        total = 0
        for path in group.layers:
            layer = layers[path]
            pos = positions.get(path, 0)
            total += 2 * layer.n_splits * layer.basis_size * layer.kernel_size**2 * pos
            total += 2 * layer.out_channels * layer.n_splits * layer.kernel_size2**2 * pos
        costs.append(total)
    return costs, total_flops


def candidates(full: int) -> List[int]:
    return sorted({max(1, round(full * f)) for f in FRACTIONS})


def energy_counts(spectra: Sequence[torch.Tensor], budget: Budget) -> List[int]:
    """Greedy by squared singular value per (binding) cost; prefixes only."""
    counts = [1] * len(spectra)
    items = []
    for b, values in enumerate(spectra):
        energy = values.square().tolist()
        items += [(b, i, e) for i, e in enumerate(energy) if i > 0 and e > 0]
    base = list(counts)
    items.sort(key=lambda t: (-t[2] / budget.weight(t[0], 1, base), t[0], t[1]))
    for b, i, _ in items:
        if i == counts[b]:
            trial = list(counts)
            trial[b] += 1
            if budget.holds(trial):
                counts = trial
    return counts


def _interpolate(curve: Dict[int, float], n: int) -> float:
    points = sorted(curve)
    if n <= points[0]:
        return curve[points[0]]
    for a, c in zip(points, points[1:]):
        if a <= n <= c:
            return curve[a] + (curve[c] - curve[a]) * (n - a) / (c - a)
    return curve[points[-1]]


def sensitivity_counts(curves: Sequence[Dict[int, float]], budget: Budget) -> List[int]:
    """Start at full rank, cut the basis with the least loss increase per cost saved until the budget
    holds, then add single filters back where the interpolated loss falls most per cost while it holds."""
    grids = [sorted(c) for c in curves]
    idx = [len(g) - 1 for g in grids]
    counts = [g[-1] for g in grids]
    while not budget.holds(counts):
        best = None
        for b, g in enumerate(grids):
            if idx[b] == 0:
                continue
            lower = g[idx[b] - 1]
            rise = curves[b][lower] - curves[b][g[idx[b]]]
            saved = budget.weight(b, counts[b] - lower, counts)
            key = (max(rise, 0.0) / saved, b)
            if best is None or key < best[0]:
                best = (key, b, lower)
        if best is None:
            break
        _, b, lower = best
        idx[b] -= 1
        counts[b] = lower
    while True:
        best = None
        for b, g in enumerate(grids):
            if counts[b] >= g[-1]:
                continue
            trial = list(counts)
            trial[b] += 1
            if not budget.holds(trial):
                continue
            gain = _interpolate(curves[b], counts[b]) - _interpolate(curves[b], counts[b] + 1)
            key = (-gain / budget.weight(b, 1, counts), b)
            if best is None or key < best[0]:
                best = (key, b)
        if best is None:
            break
        counts[best[1]] += 1
    return counts


def _approx(weight: torch.Tensor, layer: BasisConv2d, basis: torch.Tensor) -> torch.Tensor:
    """The dense filters ``layer`` represents with ``basis`` (its slice) and least-squares projection."""
    own = basis[:, -layer.basis_size :] if layer.inverse_index else basis[:, : layer.basis_size]
    return decompose.compose(own, decompose.coefficients(weight, own.to(weight))).to(weight)


@torch.no_grad()
def measure_curves(
    baseline: nn.Module,
    groups,
    convs: Dict[str, nn.Conv2d],
    layers: Dict[str, BasisConv2d],
    bases: Callable[[int, int], torch.Tensor],
    batches: Sequence[torch.Tensor],
    forward: Callable = lambda m, x: m(x),
    full: Optional[Sequence[int]] = None,
) -> List[Dict[int, float]]:
    """Per basis, ``{count: calibration loss}`` with that basis' dense convolutions replaced by their
    approximation from its first ``count`` filters (``bases(b, count)``), the rest of ``baseline`` as it is.
    The loss is the output's mean squared error relative to the dense output's mean square."""
    baseline.eval()
    reference = [forward(baseline, x).detach() for x in batches]
    scale = sum(float(r.double().square().mean()) for r in reference) / len(reference)
    curves = []
    for b, group in enumerate(groups):
        members = [p for p in group.layers if convs.get(p) is not None]
        top = full[b] if full is not None else group.full_rank
        curve = {}
        for n in candidates(top):
            if n >= top:
                curve[n] = 0.0
                continue
            basis = bases(b, n)
            saved = []
            for p in members:
                conv = convs[p]
                saved.append(conv.weight.detach().clone())
                conv.weight.copy_(_approx(conv.weight, layers[p], basis))
            try:
                loss = sum(
                    float((forward(baseline, x).double() - r.double()).square().mean())
                    for x, r in zip(batches, reference)
                ) / len(batches)
            finally:
                for p, w in zip(members, saved):
                    convs[p].weight.copy_(w)
            curve[n] = loss / scale if scale > 0 else loss
        curves.append(curve)
    return curves


def plot_curves(
    curves: Sequence[Dict[int, float]], names: Sequence[str], counts: Sequence[int], path
) -> None:
    """Each basis' loss against its filter count (log scale), the chosen count marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .engine.checkpoint import write_atomic

    figure = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for curve, name, n in zip(curves, names, counts):
        xs = sorted(curve)
        (line,) = axes.plot(
            xs,
            [max(curve[x], 1e-12) for x in xs],
            marker=".",
            label=name if len(names) <= 12 else None,
            linewidth=1,
        )
        axes.plot([n], [max(_interpolate(curve, n), 1e-12)], "o", color=line.get_color())
    axes.set_xlabel("basis filters (others at full rank)")
    axes.set_ylabel("calibration loss (relative output MSE)")
    axes.set_yscale("log")
    axes.set_title("basis_init: sensitivity per basis (dots: chosen filters)")
    axes.grid(True, alpha=0.3)
    if len(names) <= 12:
        axes.legend(fontsize="small")
    figure.tight_layout()
    write_atomic(path, lambda f: figure.savefig(f, format="png"))
