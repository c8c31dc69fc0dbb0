"""Preemption: a scheduler's notice ends a run after the current step, with a state to continue from.

A cluster scheduler that preempts or times out a job sends SIGTERM (or SIGUSR1, when asked to) some time
before it kills the job.  While a run trains, those signals only raise a flag.  After every training
step the processes agree on the flag (a one-element all-reduce, so every rank stops after the same
step), then the run saves a *mid-epoch* training state atomically -- everything the epoch-end state
holds (model, optimiser, schedule, loss scaler, every random state, the device batches' generator) plus
the position in the epoch and the epoch's partial sums -- records ``preempted`` in run.json and every
process exits with status 75 (``EX_TEMPFAIL``).  Continuing it (``--auto_resume`` or ``--load NAME``)
skips the batches already trained and gives the same weights and metrics as a run that was never
stopped, on the CPU with deterministic settings, with the device batches and with ``--n_threads 0``.
With data-loader worker processes the augmentation draws of the interrupted epoch depend on the
workers' seeds, so there exactness holds at epoch boundaries only.  ``--save_every_steps N`` saves such
a state every N batches as well (for jobs that are killed without notice).  See docs/cluster.md.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from dataclasses import dataclass, field
from typing import Iterable, Optional

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from ..errors import CheckpointError, RunStopped
from .checkpoint import set_rng_state
from .distributed import barrier, gather_objects
from .meters import MetricSums
from .record import mark_status

EXIT_PREEMPTED = 75  # os.EX_TEMPFAIL: "try again later", what a requeue script keys on
NOTICE_SIGNALS = ("SIGTERM", "SIGUSR1")

_notice: dict = {"signal": None}  # the first notice received while the handlers are installed


def _on_notice(signum, frame) -> None:
    if _notice["signal"] is None:
        _notice["signal"] = signum


@contextlib.contextmanager
def notice_handlers(enabled: bool = True):
    """While inside, SIGTERM and SIGUSR1 raise the flag the training loop checks instead of ending the
    process (in the main thread only: Python delivers signals there).  The previous handlers come back
    on exit, and a notice that arrived after the last check is dropped (the run has ended anyway)."""
    _notice["signal"] = None
    previous = {}
    if enabled and threading.current_thread() is threading.main_thread():
        for name in NOTICE_SIGNALS:
            number = getattr(signal, name, None)
            if number is not None:
                previous[number] = signal.signal(number, _on_notice)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        _notice["signal"] = None


def _name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class Preempted(RunStopped):
    """The run stopped on a scheduler's notice after saving a state to continue from: exit status 75."""

    exit_code = EXIT_PREEMPTED
    label = "preempted"  # the word before the message on stderr (not "error": nothing went wrong)


class ResumableSampler(DistributedSampler):
    """A ``DistributedSampler`` whose next pass can start part-way (at a mid-epoch state's position)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._start = 0

    def start_at(self, position: int) -> None:
        """Skip the first ``position`` indices of the next pass (this process's share of the epoch)."""
        self._start = position

    def __iter__(self):
        indices = list(super().__iter__())
        start, self._start = self._start, 0
        return iter(indices[start:])


@dataclass
class EpochStart:
    """Where an epoch's training starts: from nothing, or where a mid-epoch state left it."""

    batches: Iterable
    meter: MetricSums = field(default_factory=MetricSums)
    done: int = 0  # batches already trained
    nonfinite: int = 0
    skipped: int = 0
    data_time: float = 0.0
    elapsed: float = 0.0


def _after_iter(loader, rng: dict):
    """The batches of ``loader`` with the random state set to ``rng`` once its iterator exists: starting
    an iterator draws a seed from the global generator, which the interrupted epoch had drawn long before
    its state was saved."""
    iterator = iter(loader)
    set_rng_state(rng)
    yield from iterator


def _plain(value) -> float:
    return float(value)  # a float64 tensor sum (or a number) as a Python float: exact


class Preemption:
    """The trainer's side of preemption: the agreed check after each step, the mid-epoch state, and the
    continuation of an epoch from one."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.every = getattr(trainer.args, "save_every_steps", 0) or 0
        self._partial: Optional[dict] = None  # a loaded mid-epoch position, used by the next start_epoch
        self._rng: Optional[dict] = None

    # ----- the notice -----
    def noticed(self) -> int:
        """The notice's signal number if any process has received one, else 0 (the same answer on every
        process: the largest number over all of them)."""
        env = self.trainer.env
        local = _notice["signal"] or 0
        if not env.enabled:
            return int(local)
        flag = torch.tensor([int(local)], dtype=torch.int64, device=self.trainer.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())

    # ----- saving -----
    def step_done(self, epoch: int, batches: int, meter: MetricSums, nonfinite: int, skipped: int,
                  data_time: float, elapsed: float) -> None:
        """After training batch ``batches`` of ``epoch``: save a mid-epoch state every --save_every_steps
        batches, and on a notice save one and stop (:class:`Preempted`)."""
        notice = self.noticed()
        total = len(self.trainer.train_loader)
        if not notice and not (self.every and batches % self.every == 0 and batches < total):
            return
        mine = {"sums": {k: _plain(v) for k, v in meter.sums.items()}, "counts": dict(meter.counts),
                "nonfinite": nonfinite, "skipped": skipped, "data_time": data_time, "elapsed": elapsed}
        trainer = self.trainer
        state = trainer.training_state(trainer.model.state_dict())
        state["partial"] = {"epoch": epoch, "batches": batches, "ranks": gather_objects(trainer.env, mine)}
        trainer.experiment.save_state(state)
        if notice:
            self._stop(f"[Epoch {epoch}] {_name(notice)}: stopped after batch {batches} of {total}")
        trainer.log(f"[Epoch {epoch}] training state saved after batch {batches} of {total} "
                    f"(--save_every_steps {self.every})")

    def epoch_done(self) -> None:
        """After an epoch's state was saved: stop there on a notice, unless the run is complete."""
        args = self.trainer.args
        if args.epochs and self.trainer.epoch >= args.epochs:
            return
        notice = self.noticed()
        if notice:
            self._stop(f"[Epoch {self.trainer.epoch}] {_name(notice)}: stopped at the end of the epoch")

    def _stop(self, what: str) -> None:
        trainer = self.trainer
        folder = trainer.experiment.dir
        if trainer.env.is_main:
            mark_status(folder, "preempted")  # what a requeue script keys on (run.json)
        # no process exits before rank 0 has written the state and run.json: a launcher that ends the
        # others when one exits (srun --kill-on-bad-exit) must not cut the write short
        barrier(trainer.env)
        message = (f"{what}; training state saved in {folder}: the same command with --auto_resume (or "
                   f"--load {folder.name}) continues it (exit status {EXIT_PREEMPTED})")
        trainer.log(message)
        raise Preempted(message)

    # ----- continuing -----
    def load(self, state: dict) -> None:
        """Keep the position of a mid-epoch ``state`` for the next :meth:`start_epoch` (refused when the
        number of processes differs: each process's share of the epoch depends on it)."""
        partial = state.get("partial")
        if not partial or self.trainer.args.test_only:  # a test run only takes the weights
            self._partial = self._rng = None
            return
        env = self.trainer.env
        saved = len(partial["ranks"])
        if saved != env.world_size:
            raise CheckpointError(f"--load {self.trainer.args.load!r}: the training state was saved in the "
                                  f"middle of epoch {partial['epoch']} by {saved} process(es); continue it "
                                  f"with {saved} process(es), not {env.world_size}")
        self._partial = partial
        self._rng = state["rng"][env.rank]

    def start_epoch(self, epoch: int, loader) -> EpochStart:
        """The batches still to train in ``epoch`` and the epoch's sums so far."""
        partial, self._partial = self._partial, None
        if partial is None or partial["epoch"] != epoch:
            return EpochStart(loader)
        mine = partial["ranks"][self.trainer.env.rank]
        meter = MetricSums()
        meter.sums, meter.counts = dict(mine["sums"]), dict(mine["counts"])
        per_process = self.trainer.args.batch_size // self.trainer.env.world_size
        loader.sampler.start_at(partial["batches"] * per_process)
        return EpochStart(_after_iter(loader, self._rng), meter, partial["batches"], mine["nonfinite"],
                          mine["skipped"], mine["data_time"], mine["elapsed"])
