"""What a tool may do with the experiment folder it would run a configuration in.

The quickstart, the paper scripts and the Digits script start ``main.py`` commands in folders they name.
Before starting one they ask :func:`decide` (a training run, or a test-only run) or :func:`may_replace`
(a test-only evaluation the tool redoes), which read the folder only through the engine's record
(:func:`~filter_basis.engine.record.read_run`, :func:`~filter_basis.engine.record.folder_state`) and
compare options only by :func:`~filter_basis.engine.record.option_drift`, the comparison ``--load``
makes.  The rules, for users in docs/results.md ("The tools' rules"):

- **finished means finished with these options**: a configuration counts as finished when its folder
  reached the epochs asked for (with or without its ``training_state.pt``) and its saved options are the
  ones the tool would run, except those allowed to change on resume (folders, threads, device, run
  length, logging);
- a folder with a training state and the same options is **continued**, an absent folder or one holding
  only what the engine writes before its first epoch ends is **started** (both by ``--auto_resume``);
- a tool **replaces** a folder (``--reset``) only when the folder's ``run.json`` says this tool made it
  (``made_by``), or when its user asked that tool to redo its runs (the quickstart's ``--reset``) and the
  folder is an experiment folder; never a folder that is not an experiment folder;
- anything else is **refused** with one line (:class:`Refused`): a difference of options names the
  option and both values.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from .engine.record import NotAnExperiment, RunRecord, folder_state, is_experiment, option_drift, read_run
from .engine.resume import RESUME_MAY_CHANGE, TEST_ONLY_MAY_CHANGE, plain_options
from .engine.trees import find_tree
from .errors import UserError

START, CONTINUE, FINISHED, REPLACE = "start", "continue", "finished", "replace"
TARGETS = ("target_compression", "target_flops")  # budgets whose run records the counts they chose
NEW_PLACE = "rerun with another output folder, or remove the folder yourself"


class Refused(UserError):
    """A folder the tool must not start, continue or replace (one line, exit status 2)."""

    def __init__(self, message: str, record: Optional[RunRecord] = None):
        super().__init__(message)
        self.record = record


class Drifted(Refused):
    """The folder's run was made with other options (``changes``: ``[(name, current, saved)]``)."""

    def __init__(self, message: str, record: RunRecord, changes: list):
        super().__init__(message, record)
        self.changes = changes


@dataclass
class Decision:
    """``action``: start, continue, finished or replace; ``record``: the folder's record (None if absent)."""

    action: str
    record: Optional[RunRecord] = None

    @property
    def epochs_done(self) -> int:
        return self.record.epochs_done if self.record is not None else 0


def _parse(tree, argv: Sequence[str]) -> dict:
    """The options ``main.py`` of ``tree`` would record for ``argv`` (templates applied; their notes,
    which main.py prints when it runs, are not repeated here)."""
    with contextlib.redirect_stderr(io.StringIO()):
        return plain_options(tree.parse_args(list(argv)))


def current_options(tree_name: str, argv: Sequence[str]) -> dict:
    """The options ``main.py`` of ``tree_name`` would record for ``argv`` (templates applied)."""
    return _parse(find_tree(tree_name), argv)


def drift(record: RunRecord, tree_name: str, argv: Sequence[str]) -> list:
    """``[(name, current, saved)]``: the options of ``argv`` that differ from the ones ``record`` ran with,
    by the rule of ``--load``'s check (options allowed to change on resume are not compared).  A
    ``--target_compression`` or ``--target_flops`` run is compared with the filter counts its record says
    were chosen for the same targets; other targets are a difference."""
    tree = find_tree(tree_name)
    current = _parse(tree, argv)
    # a test-only folder's result is its test sets: unlike --load RUN --test_only, they must be the same
    allowed = (set(RESUME_MAY_CHANGE) | set(tree.resume_may_change) | {tree.pretrained_option}) - \
        (set(TEST_ONLY_MAY_CHANGE) if current.get("test_only") else set())
    changes = []
    targets = [name for name in TARGETS if current.get(name) is not None]
    if targets:
        counts = record.basis_counts if isinstance(record.basis_counts, dict) else {}
        for name in TARGETS:
            saved_target = counts.get(name, record.options.get(name))
            if saved_target != current.get(name):
                changes.append((name, current.get(name), saved_target))
        if not changes and isinstance(counts.get("options"), dict):
            current.update(json.loads(json.dumps(counts["options"], default=str)))
    return changes + option_drift(record.options, current, allowed)


def _shown(value) -> str:
    return value if isinstance(value, str) and value else json.dumps(value)


def describe_drift(changes: list) -> str:
    return ", ".join(f"--{name} {_shown(now)} (saved {_shown(saved)})" for name, now, saved in changes)


def _read(folder: Path) -> Optional[RunRecord]:
    try:
        return read_run(folder)
    except NotAnExperiment:
        return None


def may_replace(folder, tool: str, asked: bool = False) -> Decision:
    """Whether ``tool`` may (re)start a run in ``folder`` from scratch: ``start`` (absent, or only what the
    engine writes before a first epoch), ``replace`` (``--reset``: made by ``tool``, or ``asked`` by the
    user and an experiment folder); else :class:`Refused`."""
    folder = Path(folder)
    state = folder_state(folder)
    if state == "absent":
        return Decision(START)
    record = _read(folder)
    if record is not None and (record.made_by == tool or asked):
        return Decision(REPLACE, record)
    if state == "fresh":
        return Decision(START, record)
    if record is None or not is_experiment(folder):
        raise Refused(f"{folder} is not an experiment folder (no run.json): {tool} does not replace it; "
                      f"nothing was removed: {NEW_PLACE}")
    made = f"made by {record.made_by}" if record.made_by else "not made by a tool (no made_by in run.json)"
    raise Refused(f"{folder} holds a run {made}: {tool} replaces only its own runs; nothing was removed: "
                  f"{NEW_PLACE}", record)


def decide(folder, tool: str, tree_name: str, argv: Sequence[str]) -> Decision:
    """What ``tool`` does to have the run of ``argv`` (a ``main.py`` command line of ``tree_name``) in
    ``folder``: ``start`` or ``continue`` it (both with ``--auto_resume``), or nothing (``finished``:
    it reached the ``--epochs`` of ``argv`` -- a test-only run: it ran -- with the same options).

    :class:`Drifted` when the folder's run was made with other options, :class:`Refused` when the folder
    cannot be continued (not an experiment folder; finished epochs without a training state)."""
    folder = Path(folder)
    state = folder_state(folder)
    if state == "absent":
        return Decision(START)
    record = _read(folder)
    if state == "fresh":
        return Decision(START, record)
    if record is None:
        raise Refused(f"{folder} is not an experiment folder (no run.json): {tool} neither uses nor replaces "
                      f"it; nothing was changed: {NEW_PLACE}")
    changes = drift(record, tree_name, argv)
    if changes:
        raise Drifted(f"{folder} holds a run made with other options: {describe_drift(changes)}; {tool} "
                      f"neither uses nor replaces it: {NEW_PLACE}", record, changes)
    current = current_options(tree_name, argv)
    if current.get("test_only"):
        if record.results:
            return Decision(FINISHED, record)
        return Decision(START, record) if state != "blocked" else _blocked(folder, tool, record)
    epochs = int(current.get("epochs") or 0)
    if epochs > 0 and record.epochs_done >= epochs:
        return Decision(FINISHED, record)
    if record.has_state:
        return Decision(CONTINUE, record)
    return _blocked(folder, tool, record)


def _blocked(folder: Path, tool: str, record: RunRecord) -> Decision:
    raise Refused(f"{folder} holds {record.epochs_done} trained epoch(s) but no training_state.pt to "
                  f"continue from: {tool} neither continues nor replaces it; nothing was changed: "
                  f"{NEW_PLACE}", record)


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m filter_basis.reuse TOOL TREE FOLDER -- MAIN.PY OPTIONS``: print the decision (start,
    continue, finished) for shell scripts, or the refusal (one line on stderr, exit 2).  ``--replace``:
    print start or replace (:func:`may_replace`) instead."""
    parser = argparse.ArgumentParser(prog="python -m filter_basis.reuse",
                                     description="What a tool may do with an experiment folder "
                                                 "(docs/results.md)")
    parser.add_argument("tool")
    parser.add_argument("tree", choices=["image_classification", "super_resolution"])
    parser.add_argument("folder")
    parser.add_argument("--replace", action="store_true", help="may the tool start it from scratch?")
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    options = argv[split + 1:]  # the main.py options, after --
    try:
        decision = may_replace(args.folder, args.tool) if args.replace else \
            decide(args.folder, args.tool, args.tree, options)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    print(decision.action)
    return 0


if __name__ == "__main__":
    sys.exit(main())
