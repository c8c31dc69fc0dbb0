"""The training loop both trees share; a tree subclasses :class:`Trainer` and fills in three hooks.

Hooks: :meth:`Trainer.train_step` (forward + loss of one batch), :meth:`Trainer.test_step` (metric
sums of one test batch) and :meth:`Trainer.best_key` (which result the best model is chosen by, from the
options alone, so that readers of a folder rank its epochs by the same rule).  Epochs,
DistributedDataParallel, mixed precision, skipped and non-finite batches, the schedule, logging,
results, plots and checkpoints are handled here, identically for both trees.
"""

from __future__ import annotations

import abc
import argparse
import math
import time
import warnings
from typing import Mapping, Optional

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..errors import CheckpointError, RunStopped
from .checkpoint import load_state_dict_strict, rng_state, seed_everything, set_rng_state
from .device import Runtime
from .distributed import DistEnv, all_reduce_sum, broadcast_buffers, gather_objects
from .experiment import Experiment
from .losses import WeightedLoss
from .meters import MetricSums, flatten, nest
from .optim import Schedule, build_optimizer, build_scheduler
from .preemption import Preemption
from .progress import interactive, progress_bar
from .resume import check_model_state, fresh_seed, plain_options
from .tensorboard import Monitor

MAX_NONFINITE = 5  # consecutive batches with a NaN/inf loss before training stops
INITIAL_ERROR_LAST = 1e8  # official starting value of the previous epoch's loss for --skip_threshold


LIST_OUTPUTS = 20  # a test run names each file it wrote up to this many per folder, else folder and count


def output_lines(paths: list) -> list:
    """Lines naming the files a test run wrote: each path, or per folder the folder and the count."""
    folders: dict = {}
    for path in paths:
        folders.setdefault(path.parent, []).append(path)
    lines = []
    for folder, files in folders.items():
        if len(files) <= LIST_OUTPUTS:
            lines += [f"wrote {path}" for path in files]
        else:
            lines.append(f"wrote {len(files)} images to {folder}")
    return lines


class TrainingStopped(RunStopped):
    """Training cannot go on (the loss keeps diverging); reported as one line, exit status 1."""


class Trainer(abc.ABC):
    """Train ``model`` on ``train_loader`` and evaluate it on every loader of ``test_loaders``."""

    higher_is_better = False  # direction of score(): False for errors, True for PSNR
    # the tree's weight of the basis term of --loss_norm (docs/official-code.md#loss_norm)
    loss_norm_lambda: float

    def __init__(self, args: argparse.Namespace, model: nn.Module, loss: WeightedLoss, runtime: Runtime,
                 env: DistEnv, experiment: Experiment, train_loader, test_loaders: dict, *,
                 schedule: Schedule):
        self.args, self.runtime, self.env, self.experiment = args, runtime, env, experiment
        self.device = runtime.device
        self.model = model
        net = model
        if env.enabled:
            on_gpu = self.device.type == "cuda"
            net = DistributedDataParallel(model, device_ids=[self.device.index] if on_gpu else None)
        self.net = torch.compile(net) if args.compile else net
        # Tests run the plain module: the DDP wrapper's forward is a collective (it broadcasts buffers),
        # which a process whose test shard is empty (fewer test images than processes) never joins.
        self.eval_net = self.net if not env.enabled else torch.compile(model) if args.compile else model
        self.loss = loss.to(self.device)
        self.train_loader, self.test_loaders = train_loader, test_loaders
        self.optimizer = build_optimizer(args, model.parameters())
        self.scheduler = build_scheduler(self.optimizer, schedule)  # the tree's Tree.schedule(args)
        self.scaler = runtime.grad_scaler()
        self.epoch = 0
        self.best = None  # {"epoch": int, "score": float}
        self.error_last = INITIAL_ERROR_LAST
        self.fitted_start = False  # --basis_init: evaluate and save the fitted model as epoch 0 first
        self.show_bars = env.is_main and interactive()
        self.monitor = Monitor.for_trainer(self)  # --tensorboard
        self.preemption = Preemption(self)  # stop on a scheduler's notice; mid-epoch states (docs/cluster.md)

    # ----- hooks a tree implements -----
    @abc.abstractmethod
    def train_step(self, batch) -> tuple:
        """Forward one training batch; return ``(loss, number of samples)``. Runs under autocast."""

    @abc.abstractmethod
    def test_step(self, batch, meter: MetricSums, set_name: str) -> None:
        """Add the metric sums of one test batch to ``meter`` (keys 'a/b' nest in results.json); forward
        with ``self.eval_net``, not the training wrapper ``self.net``."""

    @classmethod
    @abc.abstractmethod
    def best_key(cls, options: Mapping) -> tuple:
        """``(test set, results.json metrics key such as 'Set5_x2/psnr')`` the best model is chosen by
        (see ``higher_is_better``), from the options as ``args.json`` holds them."""

    def score(self, metrics: dict) -> float:
        """The number the best model is chosen by: the :meth:`best_key` result."""
        return flatten(metrics)[self.best_key(vars(self.args))[1]]

    def best_entry(self, best: Optional[dict] = None) -> Optional[dict]:
        """The best epoch (``self.best`` unless given) as run.json records it (None before the first
        evaluation)."""
        best = best or self.best
        if best is None:
            return None
        test_set, key = self.best_key(vars(self.args))
        return {"epoch": best["epoch"], "test_set": test_set, "metric": key.rpartition("/")[2], "key": key,
                "direction": "max" if self.higher_is_better else "min", "value": best["score"]}

    def _test_best(self, metrics: dict) -> Optional[dict]:
        """A test-only folder's one evaluation as its best (None when it has no ranked metric: Demo)."""
        try:
            return self.best_entry({"epoch": self.epoch, "score": self.score(metrics)})
        except KeyError:
            return None

    def saved_outputs(self) -> list:
        """Files a test run wrote besides the record (SR: the super-resolved images); printed after it."""
        return []

    # ----- helpers for the hooks -----
    def to_device(self, tensor: torch.Tensor, cast: bool = True) -> torch.Tensor:
        return self.runtime.to_device(tensor, cast)

    def log(self, line: str) -> None:
        self.experiment.log(line)

    def release(self) -> None:
        """Once the run is over: close the --tensorboard writer and drop the DistributedDataParallel
        wrapper, whose reducer holds the process group: its threads would otherwise outlive the group's
        teardown and meet interpreter exit (a Gloo worker then aborts the process: "terminate called
        without an active exception")."""
        if self.env.enabled:  # (the test network is the plain model, or a compiled one, without DDP)
            self.net = self.model
        self.monitor.close()

    # ----- the loop -----
    def fit(self) -> None:
        """--test_only: one evaluation; otherwise train up to --epochs (0: no end), evaluating after each."""
        if self.fitted_start:  # the fitted, untrained model: a record, checkpoints and a state at epoch 0
            self._finish_epoch({"fitted": True}, self.evaluate())
            if self.args.test_only:
                return
        elif self.args.test_only:
            metrics = self.evaluate()
            if metrics:  # (a Demo set has nothing to measure)
                self.log(self._describe(self.epoch, metrics))
            for line in output_lines(self.saved_outputs()):
                self.log(line)
            self.experiment.record({"epoch": self.epoch, "metrics": metrics, **self.experiment.tested})
            self.experiment.evaluated(self._test_best(metrics))
            return
        while not self.args.epochs or self.epoch < self.args.epochs:
            epoch = self.epoch + 1
            stats = self.train_epoch(epoch)
            metrics = self.evaluate()
            with warnings.catch_warnings():  # an epoch whose batches were all skipped made no optimiser step
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
                self.scheduler.step()
            self.epoch = epoch
            self._finish_epoch(stats, metrics)
            self.monitor.epoch(self, stats, metrics)
            self.preemption.epoch_done()

    def train_epoch(self, epoch: int) -> dict:
        self.net.train()
        sampler = self.train_loader.sampler
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        lr = self.optimizer.param_groups[0]["lr"]
        self.log(f"[Epoch {epoch}] learning rate {lr:.2e}")
        resumed = self.preemption.start_epoch(epoch, self.train_loader)  # all of it, or what a stop left
        meter, nonfinite, skipped = resumed.meter, resumed.nonfinite, resumed.skipped
        data_time = resumed.data_time
        start = tick = time.perf_counter() - resumed.elapsed
        bar = progress_bar(resumed.batches, f"epoch {epoch}", self.show_bars)
        for i, batch in enumerate(bar, resumed.done + 1):
            data_time += time.perf_counter() - tick
            with self.runtime.autocast():
                loss, n = self.train_step(batch)
            value = self._agreed_value(loss)
            if not math.isfinite(value):
                nonfinite += 1
                self.log(f"[Epoch {epoch}] batch {i}: non-finite loss ({value}), batch skipped")
                if nonfinite >= MAX_NONFINITE:
                    raise TrainingStopped(f"stopping at epoch {epoch}, batch {i}: the loss was not "
                                          f"finite for {MAX_NONFINITE} batches in a row; lower --lr or "
                                          f"check the data")
            elif value >= self.args.skip_threshold * self.error_last:
                skipped += 1
                self.log(f"[Epoch {epoch}] batch {i}: loss {value:.4g} exceeds --skip_threshold "
                         f"{self.args.skip_threshold:g} x {self.error_last:.4g}, batch skipped")
            else:
                nonfinite = 0
                self._step(loss)
                meter.add("total", loss.detach().double() * n, n)  # no float16 sums (--precision half)
                for name, term in self.loss.last.items():
                    meter.add(name, term.double() * n, n)
                if self.show_bars:
                    bar.set_postfix(loss=f"{value:.4g}", refresh=False)
                if i % self.args.print_every == 0:
                    self.experiment.log(f"[Epoch {epoch}] [{i}/{len(self.train_loader)}] loss {value:.4f} "
                                        f"{time.perf_counter() - start:.1f}s", echo_line=not self.show_bars)
            tick = time.perf_counter()
            self.preemption.step_done(epoch, i, meter, nonfinite, skipped, data_time, tick - start)
        self.runtime.synchronize()
        elapsed = time.perf_counter() - start
        totals = meter.totals(self.env, self.device)
        samples = totals.get("total", (0.0, 0))[1]
        means = {k: s / n for k, (s, n) in totals.items() if n}
        if "total" in means:
            self.error_last = means["total"]
        terms = " ".join(f"{name} {means[name]:.4f}" for _, name in self.loss.terms if name in means)
        self.log(f"[Epoch {epoch}] train loss {means.get('total', float('nan')):.4f} ({terms}), "
                 f"{samples} samples in {elapsed:.1f}s, data wait {data_time:.1f}s"
                 + (f", {skipped} batches skipped" if skipped else ""))
        return {"train_loss": means.get("total", float("nan")), "lr": lr, "time_s": elapsed,
                "data_time_s": data_time, "samples_per_s": samples / elapsed if elapsed > 0 else 0.0}

    def _agreed_value(self, loss: torch.Tensor) -> float:
        """The loss every process sees (the mean over ranks), so all skip or step the same batches."""
        value = loss.detach().float().reshape(1)
        if self.env.enabled:
            value = all_reduce_sum(self.env, value.clone()) / self.env.world_size
        return value.item()

    def step(self, batch) -> torch.Tensor:
        """One optimisation step on ``batch`` as the loop makes it (forward under autocast, loss, backward,
        optimiser step), without the loop's bookkeeping: what ``scripts/benchmark_train.py`` times."""
        with self.runtime.autocast():
            loss, _ = self.train_step(batch)
        self._step(loss)
        return loss

    def _step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Metrics over every test set, reduced over processes; nested as in results.json.

        Hooks run ``self.eval_net``; every process first takes rank 0's buffers (the saved model's).
        """
        broadcast_buffers(self.env, self.model)
        self.eval_net.eval()
        meter = MetricSums()
        for name, loader in self.test_loaders.items():
            for batch in progress_bar(loader, f"test {name}", self.show_bars):
                with self.runtime.autocast():
                    self.test_step(batch, meter, name)
        return nest(meter.means(self.env, self.device))

    def _finish_epoch(self, stats: dict, metrics: dict) -> None:
        score = self.score(metrics)
        improved = self.best is None or (score > self.best["score"] if self.higher_is_better
                                         else score < self.best["score"])
        if improved:
            self.best = {"epoch": self.epoch, "score": score}
        self.log(self._describe(self.epoch, metrics))
        weights = self.model.state_dict()
        state = self.training_state(weights)
        self.experiment.record({"epoch": self.epoch, "metrics": metrics, **stats})
        self.experiment.save_models(weights, self.epoch, improved, self.args.save_models)
        self.experiment.save_basis_images(self.model)
        self.experiment.save_state(state)
        self.experiment.epoch_done(self.epoch, self.best_entry(), self.args.epochs)  # after the state

    def training_state(self, weights: dict) -> dict:
        """What a continued run starts from (collective: every process calls it; the random states and
        the device batches' generator are gathered, one per process)."""
        rng = gather_objects(self.env, rng_state())
        data = gather_objects(self.env, self.train_loader.state_dict()) \
            if hasattr(self.train_loader, "state_dict") else None
        return {
            "epoch": self.epoch, "model": weights, "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "best": self.best,
            "error_last": self.error_last, "rng": rng, "data": data, "options": plain_options(self.args),
        }

    def load_state(self, state: dict) -> None:
        """Continue exactly where a saved run stopped (model, optimiser, schedule, RNG and data order).

        Called before the experiment folder is written: a state that does not fit is refused with the
        folder untouched.  A process the saved run did not have (more processes now) gets a random
        stream of its own, not a copy of another rank's.
        """
        source = f"--load {self.args.load!r}: the saved model"
        check_model_state(self.model, state.get("model"), source)
        try:
            load_state_dict_strict(self.model, state["model"], source)
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if state["scaler"]:
                self.scaler.load_state_dict(state["scaler"])
            self.epoch, self.best, self.error_last = state["epoch"], state["best"], state["error_last"]
            rng = state["rng"]
            if self.env.rank < len(rng):
                set_rng_state(rng[self.env.rank])
            else:  # a process the saved run did not have: its own streams, not a copy of rank 0's
                seed_everything(fresh_seed(self.args.seed, self.env.rank, self.epoch))
            data = state.get("data")  # the augmentation generator of batches made on the device
            if data and hasattr(self.train_loader, "load_state_dict") and self.env.rank < len(data):
                self.train_loader.load_state_dict(data[self.env.rank])
            self.preemption.load(state)  # a state saved in the middle of an epoch: where to go on
        except torch.OutOfMemoryError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise CheckpointError(f"--load {self.args.load!r}: the training state does not fit these options "
                                  f"({type(error).__name__}: {first})") from None

    def _describe(self, epoch: int, metrics: dict) -> str:
        values = " ".join(f"{k} {v:.4f}" for k, v in flatten(metrics).items())
        best = f" (best {self.best['score']:.4f} @ epoch {self.best['epoch']})" if self.best else ""
        return f"[Epoch {epoch}] test: {values}{best}"
