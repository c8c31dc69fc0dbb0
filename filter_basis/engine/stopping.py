"""How a run that is stopped from outside ends: Ctrl-C (SIGINT) stops at once and says how to continue.

Ctrl-C keeps the training state of the last finished epoch (nothing is saved mid-epoch), records
``interrupted`` in run.json and ends with one line on standard error and exit status 130 (128 + SIGINT),
never a traceback (``docs/experiments.md``).
"""

from __future__ import annotations

import argparse
from typing import Optional

from .record import STATE_FILE

INTERRUPTED_EXIT = 130  # 128 + SIGINT, what a shell reports for a program stopped by Ctrl-C


class Interrupted(Exception):
    """The run was stopped by Ctrl-C; the message is the one line the user sees."""

    exit_code = INTERRUPTED_EXIT


def interrupted(experiment, args: Optional[argparse.Namespace]) -> Interrupted:
    """Record ``interrupted`` in the run's record and describe what was kept and how to continue."""
    if experiment is None or not experiment.created:
        return Interrupted("interrupted (Ctrl-C) before anything was written")
    experiment.stopped("interrupted")
    experiment.log("interrupted (Ctrl-C)", echo_line=False)
    folder, name = experiment.dir, experiment.dir.name
    if args is not None and args.test_only:
        return Interrupted(f"interrupted (Ctrl-C): the evaluation in {folder} did not finish and was not "
                           f"recorded")
    epoch = experiment.state_epoch
    if not epoch:
        return Interrupted(f"interrupted (Ctrl-C) in epoch 1: nothing trained was saved in {folder}; "
                           f"the same command starts it again")
    how = "the same command (--auto_resume continues it)" if experiment.auto else \
        f"--load {name} and the same options (or the same command with --auto_resume)"
    return Interrupted(f"interrupted (Ctrl-C) in epoch {epoch + 1}: {folder} keeps epoch {epoch} "
                       f"({STATE_FILE}); continue with {how}")
