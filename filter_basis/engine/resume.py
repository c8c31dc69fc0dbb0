"""What a ``--load`` run must agree on with the run it continues, checked before anything is written.

A training state fits only the model and the optimisation it was saved from.  The options are compared
with the ones saved in the state (or the folder's ``args.json`` for states older than that): only the
options of :data:`RESUME_MAY_CHANGE` (and a tree's own additions) may differ, everything else must be
given as it was, so the optimiser, the schedule and ``args.json`` never silently disagree.
"""

from __future__ import annotations

import argparse
import json
from typing import Iterable, Mapping, Optional

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError, OptionError
from .record import option_drift

# Options that may change when a run is continued: how long it runs and how often it logs, the
# hardware, the number format and speed options, where its files are, and what this invocation does.
RESUME_MAY_CHANGE = (
    "epochs", "test_every", "print_every", "save_models", "save_every_steps",  # run length and logging
    "tensorboard",  # monitoring (docs/monitoring.md)
    "n_threads", "cpu", "n_GPUs", "precision", "amp", "channels_last", "compile", "debug",  # device, format
    "dir_data", "dir_save", "save", "load", "resume", "reset", "test_only", "summary",  # folders, invocation
    "template",  # its name only: the values it sets are compared like any other option
    "basis_form",  # how basis layers compute (same parameters)
    "basis_init", "bn_batches",  # a starting point, replaced by the saved state like the pretrained weights
    "target_compression",  # how the filter counts were chosen: the counts themselves are compared
    "auto_resume", "made_by",  # how this invocation was started
    "basis_fit", "fit_batches", "fit_rounds", "rank_select", "target_flops",  # how it was fitted
    "init",  # the initial weights' scheme: replaced by the saved state too
)
# What only a test run may change: the sets it evaluates on (training on must rank every epoch on one set).
TEST_ONLY_MAY_CHANGE = ("data_test",)


def plain_options(args: argparse.Namespace) -> dict:
    """The options as JSON values (what ``args.json`` holds and the training state keeps)."""
    return json.loads(json.dumps(vars(args), default=str))


def _shown(value) -> str:
    return value if isinstance(value, str) and value else json.dumps(value)


def check_options(args: argparse.Namespace, saved: Optional[Mapping], may_change: Iterable[str] = ()) -> None:
    """Refuse options that differ from the saved run's, except those allowed to change (one line)."""
    if not saved:
        return
    allowed = set(RESUME_MAY_CHANGE) | set(may_change)
    if args.test_only:
        allowed |= set(TEST_ONLY_MAY_CHANGE)
    changed = option_drift(saved, plain_options(args), allowed)
    if changed:
        listed = ", ".join(f"--{name} {_shown(current)} (saved {_shown(before)})"
                           for name, current, before in changed)
        source = f"--save {args.save!r} --auto_resume" if getattr(args, "auto_resume", False) \
            else f"--load {args.load!r}"
        raise OptionError(f"{source}: options differ from the run it continues: {listed}; give "
                          f"the saved values, or start a new run with --save (only run length, logging, "
                          f"device, precision and folder options may change on resume, and --data_test "
                          f"with --test_only)")


def _shape(tensor) -> tuple:
    return tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else ()


def check_model_state(model: nn.Module, saved, source: str) -> None:
    """Refuse a saved model state_dict that does not fit ``model``, naming the first misfits and shapes."""
    if not isinstance(saved, Mapping):
        raise CheckpointError(f"{source} holds no model state_dict")
    ours = model.state_dict()
    unexpected = [k for k in saved if k not in ours]
    missing = [k for k in ours if k not in saved]
    reshaped = [k for k in saved if k in ours and _shape(saved[k]) != tuple(ours[k].shape)]
    problems = []
    if reshaped:
        k = reshaped[0]
        problems.append(f"{len(reshaped)} shape(s) differ, first {k!r}: saved {_shape(saved[k])}, "
                        f"these options build {tuple(ours[k].shape)}")
    if missing:
        problems.append(f"{len(missing)} key(s) of the model not saved, first {missing[0]!r} "
                        f"{tuple(ours[missing[0]].shape)}")
    if unexpected:
        problems.append(f"{len(unexpected)} saved key(s) not in the model, first {unexpected[0]!r} "
                        f"{_shape(saved[unexpected[0]])}")
    if problems:
        raise CheckpointError(f"{source} does not fit the model these options build ({'; '.join(problems)}); "
                              f"check --model and the model options")


def fresh_seed(seed: int, rank: int, epoch: int) -> int:
    """A seed for a process that the saved run did not have (resumed on more processes): its own stream,
    not a copy of rank 0's."""
    return int(np.random.SeedSequence([seed % 2**32, rank, epoch]).generate_state(1)[0])
