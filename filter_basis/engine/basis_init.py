"""``--basis_init FILE`` and ``--target_compression R``: a run that starts from the trained dense baseline.

FILE is loaded into the uncompressed baseline of ``--model`` with the tree's own pretrained loader (so
every layout the tree reads, ours or the official one, works here too); the basis layers are fitted to
its convolutions and every other tensor is copied (:mod:`filter_basis.init_from_dense`).  With
``--target_compression`` the filters per basis are chosen first, and written back into the options
(the tree's ``basis_count_options``) so that ``args.json`` and ``summary.json`` describe the model built.
"""

from __future__ import annotations

import argparse
import json
from typing import Optional

import torch
from torch import nn

from .. import init_from_dense as fit
from ..errors import CheckpointError, OptionError
from .checkpoint import write_atomic, write_text_atomic
from .options import is_given
from .summary import baseline_options

INIT_FILE = "basis_init.json"
ENERGY_PLOT = "basis_init_energy.png"


class DenseInit:
    """The loaded baseline and, after :meth:`apply`, the report of the fit."""

    def __init__(self, tree, args: argparse.Namespace):
        self.args = args
        self.report: Optional[fit.InitReport] = None
        self.choice: Optional[dict] = None
        self.bn_batches = 0
        self.no_data: Optional[str] = None  # why the BatchNorm statistics could not be re-estimated
        with torch.device("meta"):
            probe = tree.build_model(args)
        reason = fit.refusal(probe)
        if reason is not None:
            raise OptionError(f"--basis_init: --model {args.model} cannot start from a dense model: "
                              f"{reason}; closed-form initialisation needs linear basis layers")
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
            groups = fit.plan(probe, self.baseline)
        except ValueError as error:
            raise OptionError(f"--basis_init: {error}") from None
        if args.target_compression is not None:
            self._choose(tree, args, probe, groups)

    def _choose(self, tree, args: argparse.Namespace, probe: nn.Module, groups) -> None:
        """Set the filters per basis for ``--target_compression`` in ``args``."""
        if tree.basis_count_options is None:
            raise OptionError(f"--target_compression: the {tree.name} tree cannot set filter counts")
        costs = fit.filter_costs(probe, groups)
        fixed = fit.weight_params(probe) - sum(g.basis.n_basis * c for g, c in zip(groups, costs))
        baseline = fit.weight_params(self.baseline)
        target = int(args.target_compression * baseline)
        if fixed + sum(costs) > target:
            raise OptionError(f"--target_compression {args.target_compression:g} is too small for --model "
                              f"{args.model}: with one filter per basis it already has "
                              f"{(fixed + sum(costs)) / baseline:.3f} of the baseline's {baseline:,} weights")
        counts = fit.choose_counts(groups, costs, target - fixed)
        options = tree.basis_count_options(args, [g.name for g in groups], counts)
        for name, value in options.items():
            setattr(args, name, value)
        uniform = fit.uniform_counts(groups, costs, target - fixed)
        self.choice = {
            "target_compression": args.target_compression, "baseline_weight_params": baseline,
            "weight_params": fixed + sum(n * c for n, c in zip(counts, costs)),
            "counts": dict(zip((g.name for g in groups), counts)), "options": options,
            "squared_error": fit.squared_error(groups, counts),
            "uniform_counts": dict(zip((g.name for g in groups), uniform)),
            "uniform_squared_error": fit.squared_error(groups, uniform)}

    def counts_record(self) -> Optional[dict]:
        """What run.json keeps of a ``--target_compression`` choice (None without one)."""
        if self.choice is None:
            return None
        keys = ("target_compression", "counts", "options", "weight_params", "baseline_weight_params")
        return {key: self.choice[key] for key in keys}

    def options_line(self) -> str:
        return " ".join(f"--{name} {value}" for name, value in self.choice["options"].items())

    def apply(self, model: nn.Module) -> fit.InitReport:
        """Fit the basis layers of the freshly built ``model`` (CPU, before it is moved) and copy the rest."""
        try:
            self.report = fit.init_from_dense(model, self.baseline)
        except ValueError as error:
            raise OptionError(f"--basis_init: {error}") from None
        return self.report

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
        """Log the fit, write ``basis_init.json`` and the energy plot into the experiment folder."""
        if self.choice is not None:
            experiment.log(f"--target_compression {self.args.target_compression:g}: "
                           f"{self.choice['weight_params']:,} of {self.choice['baseline_weight_params']:,} "
                           f"weights; rebuild with {self.options_line()}")
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
        record = {"file": str(self.args.basis_init), **self.report.to_dict(),
                  "bn_batches": self.bn_batches, "target": self.choice}
        write_text_atomic(experiment.dir / INIT_FILE, json.dumps(record, indent=2) + "\n")
        plot_energy(self.report.bases, experiment.dir / ENERGY_PLOT)


def prepare(tree, args: argparse.Namespace) -> Optional[DenseInit]:
    """A :class:`DenseInit` when ``--basis_init`` is given (after settling --target_compression)."""
    if not is_given(getattr(args, "basis_init", "")):
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
