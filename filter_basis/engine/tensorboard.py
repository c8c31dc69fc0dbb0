"""``--tensorboard``: the run's per-epoch numbers (and, in SR, a few test images) in ``RUN/tensorboard/``.

Written through ``torch.utils.tensorboard`` by the main process only, after each epoch's evaluation and
checkpoints; view them with ``tensorboard --logdir RUN/tensorboard`` (or the experiment root to compare
runs).  Off by default; see docs/monitoring.md for the tags.
"""

from __future__ import annotations

import math

import torch

from .meters import flatten

FOLDER = "tensorboard"


class Monitor:
    """What the trainer calls after each epoch and at the end; this one does nothing (no --tensorboard,
    a process other than the main one, or a test-only run)."""

    @staticmethod
    def for_trainer(trainer) -> Monitor:
        args = trainer.args
        if getattr(args, "tensorboard", False) and trainer.env.is_main and not args.test_only:
            return TensorBoard(trainer)
        return Monitor()

    def epoch(self, trainer, stats: dict, metrics: dict) -> None:
        """After epoch ``trainer.epoch`` was evaluated and saved."""

    def close(self) -> None:
        """The run is over (or stopped)."""


class TensorBoard(Monitor):
    """Tags: ``train/loss`` (the epoch's mean training loss), ``train/<term>`` (each weighted term of
    --loss, mean over the epoch's batches), ``train/learning_rate``, ``train/samples_per_s``,
    ``train/epoch_s``, ``test/<metric>`` (every number of the epoch's results.json record, e.g.
    ``test/top1_error`` or ``test/Set5_x2/psnr``), and with a tree trainer that offers them,
    ``images/<set>/<name>`` (super-resolved test images; the HR image once, as ``.../HR``)."""

    def __init__(self, trainer):
        self.folder = trainer.experiment.dir / FOLDER
        self.writer = None  # made at the first epoch: nothing is written before the folder is accepted
        self.sums: dict = {}
        self.images_seen: set = set()
        trainer.loss.register_forward_hook(self._add_terms)

    def _add_terms(self, loss, inputs, output) -> None:
        if not torch.is_grad_enabled():  # a loss computed for evaluation, not a training batch
            return
        n = inputs[0].shape[0] if inputs and hasattr(inputs[0], "shape") and inputs[0].dim() else 1
        for name, value in loss.last.items():
            value = float(value.float())
            if math.isfinite(value):
                total, count = self.sums.get(name, (0.0, 0))
                self.sums[name] = (total + value * n, count + n)

    def epoch(self, trainer, stats: dict, metrics: dict) -> None:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.folder))
        step, add = trainer.epoch, self.writer.add_scalar
        add("train/loss", stats["train_loss"], step)
        for name, (total, count) in self.sums.items():
            add(f"train/{name}", total / count, step)
        self.sums = {}
        add("train/learning_rate", stats["lr"], step)
        add("train/samples_per_s", stats["samples_per_s"], step)
        add("train/epoch_s", stats["time_s"], step)
        for key, value in flatten(metrics).items():
            add(f"test/{key}", value, step)
        pictures = getattr(trainer, "tensorboard_images", None)
        for tag, (image, reference) in (pictures() if pictures else {}).items():
            self.writer.add_image(f"images/{tag}", image, step)
            if reference is not None and tag not in self.images_seen:
                self.writer.add_image(f"images/{tag}/HR", reference, step)
            self.images_seen.add(tag)
        self.writer.flush()  # a run killed later keeps what it has logged

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
