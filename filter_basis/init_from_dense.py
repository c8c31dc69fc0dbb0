"""Start a basis model from its trained dense baseline: closed-form fit, copied tensors, chosen ranks.

A ``_Basis`` model and its uncompressed baseline share their module paths: the basis layer at ``p`` in
the one replaces the ``nn.Conv2d`` at ``p`` in the other.  :func:`init_from_dense` fits every *linear*
basis layer (nothing between basis and projection, 1x1 projection) to the dense filters at its path in
closed form (:mod:`filter_basis.decompose`: the basis from the stacked filter splits of all the layers
that share it, then each layer's least-squares projection) and copies every other tensor (stem,
BatchNorm, classifier, upsampler).  :func:`choose_counts` picks the number of filters of every basis for a
weight budget, greedily by spectral energy per parameter.  :func:`reestimate_batchnorm` refreshes the
BatchNorm statistics a rank cut has shifted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import torch
from torch import nn

from . import decompose
from .layers.basis_conv import Basis, BasisConv2d

EXACT = 1e-6  # relative errors below this are rounding: the fit reproduces the dense filters


@dataclass
class BasisGroup:
    """One basis and the layers using it, with the dense filters those layers replace."""

    name: str                      # module path of the Basis (its first one when shared)
    basis: Basis
    layers: List[str]              # paths of the basis layers using it
    dense: List[torch.Tensor] = field(default_factory=list)   # their dense weights, same order
    singular_values: Optional[torch.Tensor] = None             # of the stacked filter splits

    @property
    def width(self) -> int:
        return self.basis.width

    @property
    def full_rank(self) -> int:
        """Filters that reproduce the dense filters exactly (the number of singular values)."""
        return int(self.singular_values.numel())

    def energy_kept(self, n_basis: int) -> float:
        """Fraction of the squared singular values the first ``n_basis`` filters keep."""
        energy = self.singular_values.square()
        total = float(energy.sum())
        return float(energy[:n_basis].sum()) / total if total > 0 else 1.0


def refusal(model: nn.Module) -> Optional[str]:
    """Why ``model``'s basis layers cannot be fitted in closed form (``None`` when they all can)."""
    layers = [(path, m) for path, m in model.named_modules() if isinstance(m, BasisConv2d)]
    if not layers:
        return "it has no basis layer (BasisConv2d)"
    for path, layer in layers:
        if not layer.is_linear:
            inside = "a norm/activation between basis and projection" if layer.mid is not None else \
                "a norm/activation after the projection" if layer.post is not None else \
                f"a {layer.kernel_size2}x{layer.kernel_size2} projection"
            return f"its basis layer {path!r} has {inside}, so it is not one dense convolution"
        if layer.slices_basis:
            return f"its basis layer {path!r} uses a slice of a wider shared basis"
    return None


def basis_groups(model: nn.Module) -> List[BasisGroup]:
    """Every basis of ``model`` in order of first use, with the paths of the basis layers using it."""
    names = {}
    for path, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, Basis):
            names.setdefault(id(module), path)
    groups: Dict[int, BasisGroup] = {}
    for path, layer in model.named_modules():
        if isinstance(layer, BasisConv2d):
            key = id(layer.basis)
            if key not in groups:
                groups[key] = BasisGroup(names[key], layer.basis, [])
            groups[key].layers.append(path)
    return list(groups.values())


def dense_counterparts(model: nn.Module, baseline: nn.Module) -> Dict[str, nn.Conv2d]:
    """``{basis layer path: the baseline's nn.Conv2d at that path}``, checked to be the same convolution.

    Raises:
        ValueError: a basis layer has no convolution of its geometry at its path in the baseline.
    """
    pairs = {}
    for path, layer in model.named_modules():
        if not isinstance(layer, BasisConv2d):
            continue
        try:
            conv = baseline.get_submodule(path)
        except AttributeError:
            conv = None
        shape = (layer.out_channels, layer.in_channels, layer.kernel_size, layer.kernel_size)
        if not isinstance(conv, nn.Conv2d) or tuple(conv.weight.shape) != shape or \
                tuple(conv.stride) != tuple(layer.stride) or tuple(conv.padding) != tuple(layer.padding) \
                or conv.groups != 1:
            found = f"{type(conv).__name__} {tuple(conv.weight.shape)}" if isinstance(conv, nn.Conv2d) \
                else type(conv).__name__ if conv is not None else "nothing"
            raise ValueError(f"basis layer {path!r} ({shape}, stride {tuple(layer.stride)}) has no dense "
                             f"counterpart in the baseline: it has {found} there")
        pairs[path] = conv
    return pairs


def spectrum(weights: Sequence[torch.Tensor], basis_size: int) -> torch.Tensor:
    """Singular values (float64, descending) of the stacked filter splits of ``weights``."""
    kh, kw = weights[0].shape[-2:]
    rows = torch.cat([decompose.split_rows(w.detach().double(), basis_size).reshape(-1, basis_size * kh * kw)
                      for w in weights])
    return torch.linalg.svdvals(rows)


def plan(model: nn.Module, baseline: nn.Module) -> List[BasisGroup]:
    """The bases of ``model`` with the dense filters they are fitted to and their spectra.

    ``model`` may live on the meta device (only its structure is read); ``baseline`` holds the trained
    weights.  Raises ValueError when a basis layer has no dense counterpart.
    """
    pairs = dense_counterparts(model, baseline)
    groups = basis_groups(model)
    for group in groups:
        group.dense = [pairs[path].weight.detach() for path in group.layers]
        group.singular_values = spectrum(group.dense, group.width)
    return groups


@dataclass(frozen=True)
class LayerFit:
    path: str
    basis: str
    n_basis: int
    relative_error: float
    energy_kept: float  # fraction of the layer's squared filter norm the fit keeps: 1 - error ** 2


@dataclass
class InitReport:
    """What :func:`init_from_dense` did: per layer and per basis, errors and kept energies."""

    layers: List[LayerFit]
    bases: List[dict]  # {"name", "layers", "n_basis", "full_rank", "energy_kept", "relative_error"}
    copied: int        # tensors copied from the baseline

    @property
    def total_relative_error(self) -> float:
        """sqrt(sum of squared errors / sum of squared dense filters) over all basis layers."""
        num = sum(b["error_sq"] for b in self.bases)
        den = sum(b["norm_sq"] for b in self.bases)
        return math.sqrt(num / den) if den > 0 else 0.0

    @property
    def exact(self) -> bool:
        return all(f.relative_error < EXACT for f in self.layers)

    def to_dict(self) -> dict:
        return {"total_relative_error": self.total_relative_error, "copied_tensors": self.copied,
                "bases": [{k: v for k, v in b.items() if k not in ("error_sq", "norm_sq")}
                          for b in self.bases],
                "layers": [vars(f) for f in self.layers]}

    def lines(self) -> List[str]:
        out = [f"basis_init: {len(self.layers)} basis layers fitted to the dense filters, {self.copied} "
               f"tensors copied; total relative error {self.total_relative_error:.4f}"]
        for b in self.bases:
            out.append(f"  basis {b['name']}: {b['n_basis']}/{b['full_rank']} filters, energy kept "
                       f"{b['energy_kept']:.4f}, relative error {b['relative_error']:.4f} "
                       f"({len(b['layers'])} layer(s))")
        out += [f"    {f.path}: relative error {f.relative_error:.4f}, energy kept {f.energy_kept:.4f}"
                for f in self.layers]
        return out


@torch.no_grad()
def init_from_dense(model: nn.Module, baseline: nn.Module) -> InitReport:
    """Fit ``model``'s basis layers to ``baseline``'s convolutions and copy every other tensor, in place.

    Biases: the projection takes
    the dense bias (zero without one), the basis bias is zero, so at full rank the model computes the
    baseline's function.

    Raises:
        ValueError: a basis layer is not linear or has no counterpart, or a tensor outside the basis
            layers has no equal-shaped tensor under the same key in the baseline.
    """
    reason = refusal(model)
    if reason is not None:
        raise ValueError(f"cannot fit the basis layers in closed form: {reason}")
    groups = plan(model, baseline)
    fits, bases = [], []
    for group in groups:
        basis = decompose.fit_basis(group.dense, group.width, group.basis.n_basis)
        group.basis.weight.copy_(basis.to(group.basis.weight))
        error_sq = norm_sq = 0.0
        for path, dense in zip(group.layers, group.dense):
            layer = model.get_submodule(path)
            conv = baseline.get_submodule(path)
            proj = decompose.coefficients(dense, basis.to(dense))
            layer.projection.weight.copy_(proj.reshape(layer.projection.weight.shape))
            if layer.projection.bias is not None:
                layer.projection.bias.copy_(conv.bias if conv.bias is not None else
                                            torch.zeros_like(layer.projection.bias))
            if layer.basis_bias is not None:
                layer.basis_bias.zero_()
            error = decompose.relative_error(dense, layer.merged_weight())
            ref = float(dense.double().square().sum())
            error_sq += error ** 2 * ref
            norm_sq += ref
            fits.append(LayerFit(path, group.name, group.basis.n_basis, error, 1 - error ** 2))
        bases.append({"name": group.name, "layers": group.layers, "n_basis": group.basis.n_basis,
                      "full_rank": group.full_rank, "energy_kept": group.energy_kept(group.basis.n_basis),
                      "relative_error": math.sqrt(error_sq / norm_sq) if norm_sq > 0 else 0.0,
                      "singular_values": [float(s) for s in group.singular_values],
                      "error_sq": error_sq, "norm_sq": norm_sq})
    copied = _copy_the_rest(model, baseline, set(_layer_prefixes(model)))
    return InitReport(fits, bases, copied)


def _layer_prefixes(model: nn.Module) -> List[str]:
    return [f"{path}." for path, m in model.named_modules() if isinstance(m, BasisConv2d)]


def _copy_the_rest(model: nn.Module, baseline: nn.Module, basis_prefixes: set) -> int:
    """Copy every tensor outside the basis layers from the baseline (same key, same shape)."""
    ours = model.state_dict(keep_vars=True)
    theirs = baseline.state_dict()
    bases = {id(m.weight) for m in model.modules() if isinstance(m, Basis)}
    done = set()
    for key, tensor in ours.items():
        if id(tensor) in bases or id(tensor) in done or any(key.startswith(p) for p in basis_prefixes):
            continue
        source = theirs.get(key)
        if source is None or source.shape != tensor.shape:
            found = "nothing" if source is None else f"shape {tuple(source.shape)}"
            raise ValueError(f"the baseline has {found} under {key!r}, the basis model needs "
                             f"{tuple(tensor.shape)} there")
        tensor.data.copy_(source)
        done.add(id(tensor))
    return len(done)


# ---------------------------------------------------------------------------- rank choice
def filter_costs(model: nn.Module, groups: Sequence[BasisGroup]) -> List[int]:
    """Weight parameters one more filter of each basis costs: its basis filter plus the projection
    columns it adds in every layer using it (the paper's counting: tensors with more than one dim)."""
    costs = []
    for group in groups:
        k = group.basis.kernel_size
        cost = group.width * k * k
        for path in group.layers:
            layer = model.get_submodule(path)
            cost += layer.out_channels * layer.n_splits * layer.kernel_size2 ** 2
        costs.append(cost)
    return costs


def choose_counts(groups: Sequence[BasisGroup], costs: Sequence[int], budget: int) -> List[int]:
    """Filters per basis, at least one each, spending at most ``budget`` weight parameters on filters,
    taken greedily by squared singular value per parameter over all bases together.

    Raises:
        ValueError: one filter per basis already exceeds the budget.
    """
    counts = [1] * len(groups)
    left = budget - sum(costs)
    if left < 0:
        raise ValueError(f"one filter per basis already needs {sum(costs):,} weight parameters, more than "
                         f"the {budget:,} the budget leaves for the bases")
    candidates = []
    for b, (group, cost) in enumerate(zip(groups, costs)):
        energy = group.singular_values.square().tolist()
        candidates += [(e / cost, b, i) for i, e in enumerate(energy) if i > 0 and e > 0]
    candidates.sort(key=lambda c: (-c[0], c[1], c[2]))
    for _, b, i in candidates:
        if i == counts[b] and costs[b] <= left:  # prefixes only: a filter after the last one taken
            counts[b] += 1
            left -= costs[b]
    return counts


def uniform_counts(groups: Sequence[BasisGroup], costs: Sequence[int], budget: int) -> List[int]:
    """The same fraction of full rank in every basis (at least one filter), the largest within budget."""
    best = [1] * len(groups)
    for step in range(1, 1001):
        counts = [max(1, int(g.full_rank * step / 1000)) for g in groups]
        if sum(n * c for n, c in zip(counts, costs)) > budget:
            break
        best = counts
    return best


def squared_error(groups: Sequence[BasisGroup], counts: Sequence[int]) -> float:
    """Total squared reconstruction error of all basis layers with these counts (discarded energy)."""
    return sum(float(g.singular_values[n:].square().sum()) for g, n in zip(groups, counts))


# ---------------------------------------------------------------------------- BatchNorm statistics
@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor],
                         forward: Optional[Callable[[torch.Tensor], object]] = None) -> int:
    """Recompute every BatchNorm's running mean/variance as the plain average over ``batches``.

    Returns the number of batches seen (0: nothing changed).  Weights are not touched; the model's
    train/eval mode and the BatchNorm momenta are restored afterwards.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    saved = [(m, m.momentum, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
             for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: the mean over all batches seen
    model.train()
    seen = 0
    try:
        for x in batches:
            (forward or model)(x)
            seen += 1
    finally:
        model.train(was_training)
        for m, momentum, mean, var, tracked in saved:
            m.momentum = momentum
            if not seen:
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(tracked)
    return seen
