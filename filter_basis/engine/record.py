"""The one record of a run: ``run.json`` in every experiment folder, its reader, and the folder rule.

The engine writes ``run.json`` (atomically, main process only) when it creates an experiment folder and
updates it after every epoch; its presence makes a folder recognisable as an experiment folder.  Every
tool reads a folder through :func:`read_run` and decides what it may do with it through
:func:`folder_state`; options are compared through :func:`option_drift`, the same comparison ``--load``
makes.  The fields and rules are described for users in ``docs/experiments.md``.

Folders written before ``run.json`` existed (``args.json`` with ``results.json`` or ``log.txt``) stay
readable: epochs and the best epoch are derived from ``results.json`` exactly as the trainer decides them
(the first ``--data_test`` set, the tree's score, the first of equal scores).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Optional

from ..errors import UserError
from .checkpoint import write_text_atomic

RUN_FILE = "run.json"
STATE_FILE = "training_state.pt"
EVAL_DIR = "eval"
FORMAT = 1
STATUSES = ("started", "training", "finished", "preempted", "interrupted", "stopped")

# What the engine writes into a folder before the first epoch ends: such a folder ("fresh") may be started
# again by the same command.  Anything else in a folder without a training state is kept and refused.
# (results/: SR images of an evaluation cut short before its record was written.)
START_FILES = frozenset({RUN_FILE, "args.json", "summary.json", "log.txt", "results.json", "model",
                         "basis_init.json", "basis_init_energy.png", "tensorboard", "results"})
_TEMP = re.compile(r"^\..+\.tmp$")  # an atomic write cut short (checkpoint.write_atomic)


class NotAnExperiment(UserError):
    """A folder that is not an experiment folder (the message says why)."""


@dataclass
class Evaluation:
    """One test-only evaluation of a run: ``RUN/eval/<data_test>-<checkpoint>/``."""

    folder: Path
    data_test: str
    checkpoint: str
    results: list
    record: dict

    @property
    def name(self) -> str:
        return self.folder.name


@dataclass
class RunRecord:
    """An experiment folder, read: the run's options, epochs, results, best epoch and files."""

    folder: Path
    options: dict
    tree: Optional[str]
    made_by: Optional[str]
    epochs_planned: int
    epochs_done: int
    results: list
    best: Optional[dict]
    status: str
    evaluations: list = field(default_factory=list)
    has_state: bool = False
    files: list = field(default_factory=list)
    is_experiment: bool = True
    basis_counts: Optional[dict] = None
    kind: str = "training"  # "training", or "test" for a --save NAME --test_only folder
    record: dict = field(default_factory=dict)  # run.json as written ({} for older folders)

    @property
    def finished(self) -> bool:
        """The run reached its --epochs (0 means no end: never finished)."""
        return self.epochs_planned > 0 and self.epochs_done >= self.epochs_planned

    @property
    def name(self) -> str:
        return self.folder.name

    def best_result(self) -> Optional[dict]:
        """The results.json record of the best epoch (None when there is no best)."""
        if not self.best:
            return None
        found = [r for r in self.results if r.get("epoch") == self.best["epoch"]]
        return found[-1] if found else None


# ----- writing -----
def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_run_file(folder) -> Optional[dict]:
    """``run.json`` of ``folder`` as a dict, or None when it is missing or unreadable."""
    data = _read_json(Path(folder) / RUN_FILE)
    return data if isinstance(data, dict) else None


def write_run_file(folder, record: Mapping) -> None:
    write_text_atomic(Path(folder) / RUN_FILE, json.dumps(dict(record), indent=2) + "\n")


def new_record(tree: Optional[str], made_by: Optional[str], epochs_planned: int, kind: str = "training",
               basis_counts: Optional[dict] = None) -> dict:
    """The run.json of a run that is starting."""
    return {"format": FORMAT, "tree": tree, "kind": kind, "made_by": made_by,
            "epochs_planned": int(epochs_planned), "epochs_done": 0, "status": "started", "best": None,
            "basis_counts": basis_counts}


def update_run(folder, **fields) -> bool:
    """Update fields of ``folder``'s run.json atomically; False (nothing written) when it has none."""
    record = read_run_file(folder)
    if record is None:
        return False
    record.update(fields)
    write_run_file(folder, record)
    return True


def mark_status(folder, status: str) -> bool:
    """Set ``status`` in ``folder``'s run.json (atomically); False when the folder has no run.json."""
    if status not in STATUSES:
        raise ValueError(f"status {status!r}: expected one of {', '.join(STATUSES)}")
    return update_run(folder, status=status)


# ----- options -----
def option_drift(saved: Mapping, current: Mapping, may_change: Iterable[str] = ()) -> list:
    """``[(name, current value, saved value)]`` for every option both hold with different values, except
    the names in ``may_change`` (options only one of them knows are not compared: older or newer
    versions).  Values are compared as JSON values (``args.json``'s form)."""
    allowed = set(may_change)
    plain = json.loads(json.dumps(dict(current), default=str))
    return [(name, value, saved[name]) for name, value in plain.items()
            if name not in allowed and name in saved and saved[name] != value]


# ----- reading -----
def _looks_like_experiment(folder: Path) -> bool:
    """run.json, or the older layout: args.json beside results.json or log.txt."""
    return (folder / RUN_FILE).is_file() or ((folder / "args.json").is_file() and (
        (folder / "results.json").is_file() or (folder / "log.txt").is_file()))


def is_experiment(folder) -> bool:
    """Whether ``folder`` is an experiment folder (see :func:`_looks_like_experiment`)."""
    folder = Path(folder)
    return folder.is_dir() and _looks_like_experiment(folder)


def trained_records(results: list) -> list:
    """The records of trained epochs (a training record carries ``train_loss``; a test-only evaluation,
    as older versions appended to a run's results.json, does not)."""
    return [r for r in results if isinstance(r, dict) and "train_loss" in r]


def best_key(tree: Optional[str], options: Mapping) -> Optional[tuple]:
    """``(test set, results key, direction)`` the trainer of ``tree`` ranks epochs by, or None."""
    if not tree:
        return None
    from .trees import find_tree  # the tree is imported only when its rule is needed
    try:
        trainer = find_tree(tree).trainer_class
        test_set, key = trainer.best_key(options)
    except (UserError, ImportError, KeyError, TypeError, ValueError):
        return None
    return test_set, key, "max" if trainer.higher_is_better else "min"


def _value(metrics: Mapping, key: str):
    node = metrics
    for part in key.split("/"):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node if isinstance(node, (int, float)) else None


def derive_best(results: list, tree: Optional[str], options: Mapping) -> Optional[dict]:
    """The best epoch as the trainer picks it: the first of equal scores of ``best_key`` over the trained
    epochs in order (over all records for a test-only folder); None when nothing ranks."""
    ranking = best_key(tree, options)
    if ranking is None:
        return None
    test_set, key, direction = ranking
    records = trained_records(results) or [r for r in results if isinstance(r, dict)]
    best = None
    for record in records:
        value = _value(record.get("metrics") or {}, key)
        if value is None:
            continue
        if best is None or (value > best["value"] if direction == "max" else value < best["value"]):
            best = {"epoch": record.get("epoch"), "test_set": test_set, "metric": key.rpartition("/")[2],
                    "key": key, "direction": direction, "value": value}
    return best


def guess_tree(options: Mapping, results: list) -> Optional[str]:
    """The tree of a folder written before run.json named it (its options tell the trees apart)."""
    if "scale" in options or "rgb_range" in options:
        return "super_resolution"
    if "top" in options or "data_train" in options:
        return "image_classification"
    return None


def _files(folder: Path) -> list:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _evaluations(folder: Path) -> list:
    found = []
    root = folder / EVAL_DIR
    if not root.is_dir():
        return found
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        record = read_run_file(sub) or {}
        results = _read_json(sub / "results.json")
        data_test, _, checkpoint = sub.name.rpartition("-")
        found.append(Evaluation(folder=sub, data_test=str(record.get("data_test") or data_test or sub.name),
                                checkpoint=str(record.get("checkpoint") or checkpoint),
                                results=results if isinstance(results, list) else [], record=record))
    return found


def read_run(folder) -> RunRecord:
    """Read the experiment folder ``folder``; :class:`NotAnExperiment` when it is not one."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotAnExperiment(f"{folder}: {'not a folder' if folder.exists() else 'no such folder'}")
    if not _looks_like_experiment(folder):
        raise NotAnExperiment(f"{folder} is not an experiment folder (it holds no {RUN_FILE}, nor args.json "
                              f"with results.json or log.txt)")
    record = read_run_file(folder)
    if (folder / RUN_FILE).exists() and record is None:
        raise NotAnExperiment(f"{folder / RUN_FILE} cannot be read as a run record")
    options = _read_json(folder / "args.json")
    options = options if isinstance(options, dict) else {}
    results = _read_json(folder / "results.json")
    results = results if isinstance(results, list) else []
    has_state = (folder / STATE_FILE).is_file()
    if record is not None:
        tree = record.get("tree") or guess_tree(options, results)
        best = record.get("best") or derive_best(results, tree, options)
        return RunRecord(
            folder=folder, options=options, tree=tree, made_by=record.get("made_by"),
            epochs_planned=int(record.get("epochs_planned") or 0),
            epochs_done=int(record.get("epochs_done") or 0),
            results=results, best=best, status=str(record.get("status") or "started"),
            evaluations=_evaluations(folder), has_state=has_state, files=_files(folder),
            basis_counts=record.get("basis_counts"), kind=str(record.get("kind") or "training"),
            record=record)
    # an older folder: everything is derived from args.json and results.json
    tree = guess_tree(options, results)
    trained = trained_records(results)
    epochs_done = max((int(r.get("epoch") or 0) for r in trained), default=0)
    planned = options.get("epochs")
    planned = planned if isinstance(planned, int) and planned > 0 else 0
    test_only = bool(options.get("test_only")) and not trained
    finished = planned > 0 and epochs_done >= planned
    status = "finished" if finished or (test_only and results) else "training" if epochs_done else "started"
    return RunRecord(
        folder=folder, options=options, tree=tree, made_by=None, epochs_planned=0 if test_only else planned,
        epochs_done=epochs_done, results=results, best=derive_best(results, tree, options), status=status,
        evaluations=_evaluations(folder), has_state=has_state, files=_files(folder),
        kind="test" if test_only else "training")


# ----- the folder rule -----
def start_files_only(folder) -> bool:
    """Whether ``folder`` holds only what the engine writes before the first epoch ends (an empty model/
    folder, no trained epoch in results.json), so that starting it again loses nothing."""
    folder = Path(folder)
    for entry in folder.iterdir():
        if _TEMP.match(entry.name):
            continue
        if entry.name not in START_FILES:
            return False
        if entry.name == "model" and (not entry.is_dir() or any(p.is_file() for p in entry.rglob("*"))):
            return False
        if entry.name == "results.json":
            results = _read_json(entry)
            if not isinstance(results, list) or results:
                return False
        if entry.name not in ("model", "tensorboard", "results") and not entry.is_file():
            return False
    return True


def folder_state(folder) -> str:
    """The one rule for an experiment folder, used by main.py, ``--auto_resume`` and every tool:

    - ``"absent"``: no such folder (a run may be started there);
    - ``"resumable"``: it holds a training state (``--load`` continues it);
    - ``"finished"``: no training state, and its record reached its ``--epochs`` (or a test-only run ran);
    - ``"fresh"``: empty, or only the engine's files from before the first epoch ended (it may be started
      again by the same command);
    - ``"blocked"``: anything else (a file, finished epochs without a state, files the engine did not
      write): refused, never removed.
    """
    folder = Path(folder)
    if not folder.exists() and not folder.is_symlink():
        return "absent"
    if not folder.is_dir():
        return "blocked"
    if not any(folder.iterdir()):
        return "fresh"
    if (folder / STATE_FILE).is_file():
        return "resumable"
    if not _looks_like_experiment(folder):
        return "blocked"
    try:
        record = read_run(folder)
    except NotAnExperiment:
        return "blocked"
    if record.finished or (record.status == "finished" and record.kind == "test"):
        return "finished"
    if record.epochs_done == 0 and start_files_only(folder):
        return "fresh"
    return "blocked"
