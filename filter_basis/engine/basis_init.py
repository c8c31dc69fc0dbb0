"""``--basis_init FILE``: a run that starts from the trained dense baseline (docs/compressing.md).

FILE is loaded into the uncompressed baseline of ``--model`` with the tree's own pretrained loader (so
every layout the tree reads, ours or the official one, works here too).  ``--basis_fit data`` (default)
fits the model to the baseline's activations on ``--fit_batches`` training batches
(:mod:`filter_basis.data_fit`); ``--basis_fit weights`` fits the linear basis layers to the dense filters
in closed form (:mod:`filter_basis.init_from_dense`).  With ``--target_compression`` and/or
``--target_flops`` the filters per basis are chosen first (``--rank_select``,
:mod:`filter_basis.rank_select`), and written back into the options (the tree's ``basis_count_options``)
so that ``args.json`` and ``summary.json`` describe the model built.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .. import data_fit, decompose, rank_select
from .. import init_from_dense as fit
from ..errors import CheckpointError, DataError, OptionError
from ..layers.basis_conv import BasisConv2d
from .checkpoint import write_atomic, write_text_atomic
from .options import is_given
from .summary import baseline_options

INIT_FILE = "basis_init.json"
ENERGY_PLOT = "basis_init_energy.png"
SENSITIVITY_PLOT = "basis_init_sensitivity.png"
SENSITIVITY_BATCHES = 8  # calibration batches each point of a sensitivity curve is measured on


class DenseInit:
    """The loaded baseline, the chosen counts and, after :meth:`apply`/:meth:`calibrate`, the fit's report."""

    def __init__(self, tree, args: argparse.Namespace):
        self.args, self.tree = args, tree
        self.mode = getattr(args, "basis_fit", None) or "data"
        self.select = getattr(args, "rank_select", None) or "sensitivity"
        self.report = None  # fit.InitReport (weights) or data_fit.DataFitReport (data)
        self.choice: Optional[dict] = None
        self.curves: Optional[list] = None
        self.bn_batches = 0
        self.no_data: Optional[str] = None  # why the BatchNorm statistics could not be re-estimated
        self._batches: Optional[list] = None
        with torch.device("meta"):
            probe = tree.build_model(args)
        if self.mode == "weights":
            reason = fit.refusal(probe)
            if reason is not None:
                raise OptionError(f"--basis_init --basis_fit weights: --model {args.model} cannot be fitted "
                                  f"in closed form: {reason}; --basis_fit data fits it")
        elif not any(isinstance(m, BasisConv2d) for m in probe.modules()):
            raise OptionError(f"--basis_init: --model {args.model} cannot start from a dense model: it has "
                              f"no basis layer (BasisConv2d)")
        baseline_args = baseline_options(tree, args)
        with torch.random.fork_rng(devices=[]):  # its initial weights are replaced: leave the run's draws
            self.baseline = tree.build_model(baseline_args)
        try:
            tree.load_pretrained(self.baseline, args.basis_init, baseline_args)
        except CheckpointError as error:
            raise CheckpointError(f"--basis_init is not the dense baseline --model {baseline_args.model} of "
                                  f"these options: {error}") from None
        self.baseline.eval()
        try:
            if self.mode == "weights":
                groups = fit.plan(probe, self.baseline)
                pairs = fit.dense_counterparts(probe, self.baseline)
                for group in groups:
                    group.convs = [pairs[p] for p in group.layers]
                    group.dense_basis = (lambda n, g=group: decompose.fit_basis(g.dense, g.width, n))
            else:
                copied = data_fit.matching_keys(probe, self.baseline)
                units = data_fit.plan_units(probe, self.baseline, skip=copied)
                groups = data_groups(probe, data_fit.dense_convs(units))
        except ValueError as error:
            raise OptionError(f"--basis_init: {error}") from None
        self.probe, self.groups = probe, groups
        if self.targets:
            self.budget = self._budget(tree, args, probe, groups)
            if self.select == "energy":
                self._set_counts(self._energy_counts())

    @property
    def targets(self) -> bool:
        args = self.args
        return args.target_compression is not None or getattr(args, "target_flops", None) is not None

    def _budget(self, tree, args, probe, groups) -> rank_select.Budget:
        if tree.basis_count_options is None:
            raise OptionError(f"--target_compression/--target_flops: the {tree.name} tree cannot set filter "
                              f"counts")
        target_flops = getattr(args, "target_flops", None)
        size = tree.summary_input_size(args) if target_flops is not None else None
        budget, self.baseline_counts = rank_select.build_budget(probe, self.baseline, groups,
                                                                args.target_compression, target_flops, size)
        names, limits = budget.names, budget.limits
        smallest = budget.spent([1] * len(groups))
        for name, spent, limit in zip(names, smallest, limits):
            if spent > limit:
                option = "--target_compression" if name == "weights" else "--target_flops"
                value = args.target_compression if name == "weights" else args.target_flops
                whole = self.baseline_counts[name]
                smallest_value = math.ceil(spent / whole * 1000) / 1000
                raise OptionError(f"{option} {value:g} is too small for --model {args.model}: with one "
                                  f"filter per basis it already has {spent / whole:.3f} of the baseline's "
                                  f"{whole:,} {name}; the smallest reachable value is {smallest_value:.3f}")
        return budget

    def _energy_counts(self) -> list:
        budget = self.budget
        if budget.names == ["weights"]:  # today's choice, number for number
            costs = [c[0] for c in budget.costs]
            return fit.choose_counts(self.groups, costs, budget.limits[0] - budget.fixed[0])
        return rank_select.energy_counts([g.singular_values for g in self.groups], budget)

    def _set_counts(self, counts: list) -> None:
        args, groups, budget = self.args, self.groups, self.budget
        options = self.tree.basis_count_options(args, [g.name for g in groups], counts)
        for name, value in options.items():
            setattr(args, name, value)
        spent = budget.spent(counts)
        self.choice = {"rank_select": self.select, "target_compression": args.target_compression,
                       "target_flops": getattr(args, "target_flops", None),
                       "counts": dict(zip((g.name for g in groups), counts)), "options": options,
                       **{f"baseline_{n}": self.baseline_counts[n] for n in budget.names},
                       **{n: int(v) for n, v in zip(budget.names, spent)}}
        if "weights" in budget.names:  # names of the weights-only record kept
            self.choice["baseline_weight_params"] = self.baseline_counts["weights"]
            self.choice["weight_params"] = int(spent[budget.names.index("weights")])
            self.choice["squared_error"] = fit.squared_error(groups, counts)
            if budget.names == ["weights"]:
                costs = [c[0] for c in budget.costs]
                uniform = fit.uniform_counts(groups, costs, budget.limits[0] - budget.fixed[0])
                self.choice["uniform_counts"] = dict(zip((g.name for g in groups), uniform))
                self.choice["uniform_squared_error"] = fit.squared_error(groups, uniform)
        if self.curves is not None:
            self.choice["curves"] = {g.name: sorted([n, v] for n, v in c.items())
                                     for g, c in zip(groups, self.curves)}

    @property
    def pending(self) -> bool:
        """Counts still to be chosen from measurements (--rank_select sensitivity)."""
        return self.targets and self.choice is None

    def calibration(self, loader_factory: Callable, runtime) -> list:
        """The first ``--fit_batches`` training inputs, on the device (read once)."""
        if self._batches is None:
            try:
                loader = loader_factory()
            except DataError as error:
                raise DataError(f"--basis_init: the calibration batches come from the training set: {error}; "
                                f"--basis_fit weights --rank_select energy needs no data") from None
            batches = []
            for batch in loader:
                if len(batches) >= self.args.fit_batches:
                    break
                batches.append(runtime.to_device(batch[0], cast=False).float())
            self._batches = batches
        return self._batches

    def settle(self, loader_factory: Callable, runtime) -> None:
        """--rank_select sensitivity: measure every basis' curve and set the counts in the options."""
        if not self.pending:
            return
        batches = self.calibration(loader_factory, runtime)[:SENSITIVITY_BATCHES]
        baseline = self.baseline.to(runtime.device)
        convs = {p: c for p, c in self.dense_by_layer.items() if c is not None}
        layers = {p: m for p, m in self.probe.named_modules() if isinstance(m, BasisConv2d)}
        covs = data_fit.split_covariances(baseline, convs, {p: layers[p].basis_size for p in convs}, batches)
        full = []
        bases = []
        for group in self.groups:
            members = [p for p in group.layers if p in convs]
            top = group.full_rank
            full.append(top)
            if not members:
                bases.append(None)
                continue
            sliced = any(layers[p].slices_basis for p in members)
            weights = [convs[p].weight for p in members]
            if sliced or self.mode == "weights":
                bases.append(group.dense_basis(top).to(weights[0]))
            else:
                bases.append(data_fit.whitened_basis(weights, [covs.get(p) for p in members], group.width,
                                                     top)[0])
        self.curves = rank_select.measure_curves(baseline, self.groups, convs, layers,
                                                 lambda b, n: bases[b][:n], batches, full=full)
        self._set_counts(rank_select.sensitivity_counts(self.curves, self.budget))
        baseline.to("cpu")

    def counts_record(self) -> Optional[dict]:
        """What run.json keeps of a ``--target_compression``/``--target_flops`` choice (None without one)."""
        if self.choice is None:
            return None
        keys = ("rank_select", "target_compression", "target_flops", "counts", "options", "weight_params",
                "baseline_weight_params")
        return {key: self.choice[key] for key in keys if key in self.choice}

    def options_line(self) -> str:
        return " ".join(f"--{name} {value}" for name, value in self.choice["options"].items())

    def apply(self, model: nn.Module):
        """--basis_fit weights: fit the basis layers of the freshly built ``model`` (CPU) and copy the rest.
        (The data fit runs in :meth:`calibrate`, on the device, once the data are at hand.)"""
        if self.mode != "weights":
            return None
        try:
            self.report = fit.init_from_dense(model, self.baseline)
        except ValueError as error:
            raise OptionError(f"--basis_init: {error}") from None
        return self.report

    def calibrate(self, model: nn.Module, loader_factory: Callable, runtime) -> None:
        """--basis_fit data: fit ``model`` (on the device) to the baseline's activations."""
        if self.mode != "data":
            return
        batches = self.calibration(loader_factory, runtime)
        baseline = self.baseline.to(runtime.device)
        try:
            self.report = data_fit.fit_by_data(model, baseline, batches,
                                               rounds=getattr(self.args, "fit_rounds", 0) or 0)
        except ValueError as error:
            raise OptionError(f"--basis_init: {error}") from None
        finally:
            baseline.to("cpu")

    @property
    def dense_by_layer(self) -> dict:
        return {p: c for g in self.groups for p, c in zip(g.layers, g.convs)}

    def needs_batches(self, model: nn.Module) -> bool:
        """BatchNorm statistics to re-estimate: ``--bn_batches`` > 0, BatchNorm layers, and a fit that is
        not exact (an exact one left the function unchanged)."""
        return bool(self.args.bn_batches) and not self.report.exact and any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())

    def reestimate(self, model: nn.Module, loader, runtime) -> None:
        """Re-estimate the BatchNorm statistics on the first ``--bn_batches`` batches of ``loader``."""
        if loader is None or not self.needs_batches(model):
            return

        def first_inputs():
            for i, batch in enumerate(loader):
                if i >= self.args.bn_batches:
                    return
                yield runtime.to_device(batch[0])

        with runtime.autocast():
            self.bn_batches = fit.reestimate_batchnorm(model, first_inputs())

    def write(self, experiment) -> None:
        """Log the fit, write ``basis_init.json`` and its plot into the experiment folder."""
        if self.choice is not None:
            spent = ", ".join(f"{self.choice[n]:,} of {self.choice[f'baseline_{n}']:,} {n}"
                              for n in ("weights", "flops") if n in self.choice)
            experiment.log(f"basis_init: --rank_select {self.select} chose {spent}; rebuild with "
                           f"{self.options_line()}")
            for name, curve in (self.choice.get("curves") or {}).items():
                experiment.log(f"  {name}: " + ", ".join(f"{n}: {v:.4g}" for n, v in curve)
                               + f" -> {self.choice['counts'][name]} filters")
        if self.mode == "data":
            experiment.log(f"basis_init: --basis_fit data on --fit_batches {self.args.fit_batches} training "
                           f"batches ({self.report.batches} read)")
        for line in self.report.lines():
            experiment.log(line)
        if self.bn_batches:
            experiment.log(f"basis_init: BatchNorm statistics re-estimated on {self.bn_batches} training "
                           f"batches")
        elif self.no_data:
            experiment.log(f"basis_init: BatchNorm statistics kept from the baseline (no training data: "
                           f"{self.no_data})")
        if not experiment.writes:
            return
        record = {"file": str(self.args.basis_init), "basis_fit": self.mode, **self.report.to_dict(),
                  "bn_batches": self.bn_batches, "target": self.choice}
        write_text_atomic(experiment.dir / INIT_FILE, json.dumps(record, indent=2) + "\n")
        if self.curves is not None:
            rank_select.plot_curves(self.curves, [g.name for g in self.groups],
                                    list(self.choice["counts"].values()), experiment.dir / SENSITIVITY_PLOT)
        if self.mode == "weights":
            plot_energy(self.report.bases, experiment.dir / ENERGY_PLOT)


def data_groups(probe: nn.Module, convs: dict) -> list:
    """The bases of ``probe`` with the dense filters their layers have (zero-padded for a basis slice)."""
    groups = fit.basis_groups(probe)
    layers = {p: m for p, m in probe.named_modules() if isinstance(m, BasisConv2d)}
    for group in groups:
        group.convs = [convs.get(p) for p in group.layers]
        weights = []
        for p, conv in zip(group.layers, group.convs):
            if conv is None:
                continue
            w = conv.weight.detach()
            layer = layers[p]
            if layer.slices_basis:
                w = w.reshape(w.shape[0], layer.n_splits, layer.basis_size, *w.shape[-2:])
                pad = group.width - layer.basis_size
                w = F.pad(w, (0, 0, 0, 0, pad, 0) if layer.inverse_index else (0, 0, 0, 0, 0, pad))
                w = w.reshape(w.shape[0], -1, *w.shape[-2:])
            weights.append(w)
        group.dense = weights
        k = group.basis.kernel_size
        group.singular_values = fit.spectrum(weights, group.width) if weights else \
            torch.zeros(group.width * k * k, dtype=torch.float64)
        group.dense_basis = (lambda n, weights=weights, width=group.width:
                             decompose.fit_basis(weights, width, n))
    return groups


def prepare(tree, args: argparse.Namespace, experiment=None) -> Optional[DenseInit]:
    """A :class:`DenseInit` when ``--basis_init`` is given and the run starts afresh.  A run continued
    with --load has its fitted (and trained) weights in its training state: nothing is refitted, the
    counts an earlier --target_compression/--target_flops chose are taken from the run's options."""
    if not is_given(getattr(args, "basis_init", "")):
        return None
    if experiment is not None and experiment.resuming:
        if args.target_compression is not None or getattr(args, "target_flops", None) is not None:
            saved = experiment.saved_options()
            for name, value in saved.items():
                if name.startswith("n_basis") and hasattr(args, name):
                    setattr(args, name, value)
        return None
    return DenseInit(tree, args)


def plot_energy(bases: list, path) -> None:
    """Per basis, the cumulative fraction of squared singular values, with the chosen number marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for basis in bases:
        energy = torch.tensor(basis["singular_values"], dtype=torch.float64).square()
        cumulative = (energy.cumsum(0) / energy.sum().clamp_min(1e-300)).tolist()
        xs = list(range(1, len(cumulative) + 1))
        line, = axes.plot(xs, cumulative, label=basis["name"] if len(bases) <= 12 else None, linewidth=1)
        n = min(basis["n_basis"], len(cumulative))
        axes.plot([n], [cumulative[n - 1]], "o", color=line.get_color())
    axes.set_xlabel("basis filters")
    axes.set_ylabel("cumulative energy (squared singular values)")
    axes.set_title("basis_init: energy kept per basis (dots: chosen filters)")
    axes.set_ylim(0, 1.02)
    axes.grid(True, alpha=0.3)
    if len(bases) <= 12:
        axes.legend(fontsize="small")
    figure.tight_layout()
    write_atomic(path, lambda f: figure.savefig(f, format="png"))
