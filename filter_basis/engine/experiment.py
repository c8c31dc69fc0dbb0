"""The experiment folder (``docs/experiments.md``): what it holds and when an existing one may be touched.

Only the main process writes.  Checks run on every process before anything is written, so a refused
folder is left as it was.  Whether a folder may be started, continued or must be refused is decided by
the one folder rule of :func:`~filter_basis.engine.record.folder_state`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Optional

from ..errors import CheckpointError, OptionError
from .checkpoint import load_checkpoint, save_checkpoint, write_text_atomic
from .distributed import DistEnv
from .options import experiment_folder, is_given
from .plots import plot_results, save_basis_images
from .progress import echo
from .record import (
    RUN_FILE,
    START_FILES,
    STATE_FILE,
    folder_state,
    is_experiment,
    new_record,
    read_run,
    read_run_file,
    update_run,
    write_run_file,
)

__all__ = ["Experiment", "STATE_FILE"]


def _refuse_files_on_the_way(dir_save: str, name: str, option: str) -> None:
    """``--save a/b`` where ``a`` or ``a/b`` (or --dir_save itself) is a file: one line, not a traceback."""
    folder = Path(dir_save)
    if folder.exists() and not folder.is_dir():
        raise OptionError(f"--dir_save {dir_save!r} is a file, not a folder")
    for part in Path(name).parts:
        folder = folder / part
        if folder.exists() and not folder.is_dir():
            raise OptionError(f"{option} {name!r}: {folder} is a file, not a folder; choose another {option} "
                              f"name")


class Experiment:
    """``DIR_SAVE/SAVE`` (or ``DIR_SAVE/LOAD`` when continuing a run) and the files in it.

    After construction, ``finished`` holds a message when the run has nothing left to do (it reached its
    ``--epochs`` and lost its training state: exit 0, nothing written), and ``again`` is True when a
    folder stopped before its first epoch ended is started again.
    """

    def __init__(self, args: argparse.Namespace, env: DistEnv, tree_name: Optional[str] = None):
        self.writes = env.is_main
        self.tree_name = tree_name
        self.results: list = []
        self._log = None
        self.finished: Optional[str] = None
        self.again = False
        self.state_epoch = 0  # the epoch of the training state continued from, then of the last one saved
        self.created = False  # whether this process started writing the folder
        self.auto = bool(getattr(args, "auto_resume", False))
        if self.auto:  # start-or-continue: --save NAME is continued when it holds a training state
            _refuse_files_on_the_way(args.dir_save, args.save, "--save")
            if folder_state(experiment_folder(args.dir_save, args.save, "--save")) == "resumable":
                args.load = args.save
        self.resuming = is_given(args.load)
        name = args.load if self.resuming else args.save
        option = "--load" if self.resuming else "--save"
        self.label = f"--save {name!r} --auto_resume" if self.auto else f"{option} {name!r}"
        _refuse_files_on_the_way(args.dir_save, name, option)
        self.dir = experiment_folder(args.dir_save, name, option)
        self.kind = "test" if args.test_only and not self.resuming else "training"
        state = folder_state(self.dir)
        if self.resuming:
            if state == "resumable":
                return
            if state == "finished" and not args.test_only:
                self.finished = self._finished_without_state()
            elif state == "fresh" and any(self.dir.iterdir()):
                raise CheckpointError(f"--load {name!r}: {self.dir} holds no {STATE_FILE}: it was stopped "
                                      f"before its first epoch ended; start it again with the same options "
                                      f"and --save {name} instead of --load")
            else:
                raise CheckpointError(f"--load {name!r}: {self.dir} holds no {STATE_FILE} to continue from"
                                      + ("" if state == "absent" else f" ({self._blocked_reason()})"))
            return
        if args.reset:
            if state not in ("absent", "fresh") and not is_experiment(self.dir):
                raise OptionError(f"--reset --save {name!r}: {self.dir} is not an experiment folder (no "
                                  f"{RUN_FILE}, nor args.json with results.json or log.txt); nothing was "
                                  f"removed: choose another --save name, or remove it yourself")
            return
        if state == "fresh":
            self.again = any(self.dir.iterdir())
        elif state == "finished":
            self.finished = self._finished_without_state()
        elif state == "resumable":
            raise OptionError(f"--save {name!r}: {self.dir} already holds a run with a training state; "
                              f"continue it with --load {name} (or --save {name} --auto_resume), "
                              f"or start it afresh with --reset (removes the folder)")
        elif state == "blocked":
            raise OptionError(f"--save {name!r}: {self._blocked_reason()}; nothing was changed: choose "
                              f"another --save name" + (", or --reset to start it afresh (removes the folder)"
                                               if is_experiment(self.dir) else ", or move it away"))

    def _blocked_reason(self) -> str:
        if not is_experiment(self.dir):
            entries = sorted(p.name for p in self.dir.iterdir())
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            return f"{self.dir} is not an experiment folder (it holds {shown})"
        record = read_run(self.dir)
        if record.epochs_done:
            planned = record.epochs_planned or "no end"
            return (f"{self.dir} holds {record.epochs_done} trained epoch(s) of {planned} "
                    f"but no {STATE_FILE} to continue from")
        others = sorted(p.name for p in self.dir.iterdir() if p.name not in START_FILES)
        if not others:
            return f"{self.dir} holds results but no {STATE_FILE} to continue from"
        return f"{self.dir} holds files the engine did not write before its first epoch ({', '.join(others)})"

    def _finished_without_state(self) -> str:
        record = read_run(self.dir)
        if record.kind == "test":
            return (f"{self.label}: {self.dir} holds a finished test-only evaluation; nothing to do (--reset "
                    f"evaluates it again)")
        return (f"{self.label}: {self.dir} is finished at epoch {record.epochs_done} of "
                f"{record.epochs_planned}; nothing to do (its {STATE_FILE} was removed, so it cannot be "
                f"trained longer: to train longer, start a new run with another --save name and a larger "
                f"--epochs)")

    def finished_with_state(self, args: argparse.Namespace, epoch: int) -> Optional[str]:
        """The message for a continued run that already reached --epochs (None when there is training
        left); its run.json is brought up to date (a run stopped right after its last state was saved)."""
        if args.test_only or not args.epochs or epoch < args.epochs:
            return None
        record = read_run_file(self.dir)
        fields = {"epochs_done": epoch, "status": "finished"}
        if epoch == args.epochs:
            fields["epochs_planned"] = epoch
        if self.writes and record is not None and any(record.get(k) != v for k, v in fields.items()):
            update_run(self.dir, **fields)
        done = f"finished at epoch {epoch} of {args.epochs}" if epoch == args.epochs else \
            f"finished: it has trained {epoch} epochs, more than --epochs {args.epochs}"
        how = "the same command" if self.auto else f"--load {args.load}"
        how += " with a larger --epochs"
        return f"{self.label}: {self.dir} is {done}; nothing to do (to train it longer: {how})"

    def create(self, args: argparse.Namespace, summary: dict, basis_counts: Optional[dict] = None) -> None:
        """Start (or reopen) the folder: run.json, args.json, summary.json, log.txt."""
        if not self.writes:
            return
        if args.reset and self.dir.exists():
            shutil.rmtree(self.dir)
        if self.again:  # only the engine's files from a start that never finished an epoch: start again
            for entry in self.dir.iterdir():
                if entry.name in START_FILES - {"log.txt", "model"}:
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        (self.dir / "model").mkdir(parents=True, exist_ok=True)
        self.created = True
        self._write_record(args, basis_counts)
        write_text_atomic(self.dir / "args.json", json.dumps(vars(args), indent=2, default=str) + "\n")
        write_text_atomic(self.dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        self._log = open(self.dir / "log.txt", "a", buffering=1)
        what = "continuing" if self.resuming else "starting again" if self.again else "starting"
        self.log(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {what} {self.dir}")
        if self.again:
            self.log("(the folder held only what an earlier start wrote before its first epoch ended: "
                     "that start is replaced by this one)")

    def _write_record(self, args: argparse.Namespace, basis_counts: Optional[dict]) -> None:
        record = read_run_file(self.dir) if self.resuming else None
        if self.resuming and args.test_only:
            return  # an evaluation of a run leaves its record alone
        if record is None:
            record = new_record(self.tree_name, getattr(args, "made_by", None),
                                0 if args.test_only else args.epochs, self.kind, basis_counts)
            if self.resuming:  # a folder of an older version: its record starts now
                record.update(epochs_done=self.state_epoch)
        else:
            record["epochs_planned"] = args.epochs
            if basis_counts is not None:
                record["basis_counts"] = basis_counts
        if self.resuming:
            record["status"] = "training" if self.state_epoch else "started"
        write_run_file(self.dir, record)

    def epoch_done(self, epoch: int, best: Optional[dict], epochs: int) -> None:
        """Record a finished epoch in run.json (after its training state was saved)."""
        if self.writes:
            update_run(self.dir, epochs_done=epoch, best=best,
                       status="finished" if epochs and epoch >= epochs else "training")

    def evaluated(self, best: Optional[dict]) -> None:
        """Record the evaluation of a test-only folder (``--save NAME --test_only``)."""
        if self.writes and self.kind == "test":
            update_run(self.dir, status="finished", best=best)

    def log(self, line: str, echo_line: bool = True) -> None:
        """Append to log.txt (main process) and, unless told otherwise, echo to the terminal."""
        if not self.writes:
            return
        if self._log is not None:
            self._log.write(line + "\n")
        if echo_line:
            echo(line)

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def load_state(self) -> dict:
        """The training state to continue from (on the CPU, where random-number states must stay; the
        trainer moves the rest); results.json is cut back to the epochs it has seen."""
        state = load_checkpoint(self.dir / STATE_FILE)
        if not isinstance(state, dict):
            raise CheckpointError(f"{self.dir / STATE_FILE} is not a training state")
        self.state_epoch = int(state.get("epoch") or 0)
        path = self.dir / "results.json"
        if path.is_file():
            self.results = [r for r in json.loads(path.read_text()) if r["epoch"] <= state["epoch"]]
        return state

    def saved_options(self) -> dict:
        """The options in the folder's args.json (for training states saved before they kept their own)."""
        try:
            saved = json.loads((self.dir / "args.json").read_text())
        except (OSError, ValueError):
            return {}
        return saved if isinstance(saved, dict) else {}

    def warn(self, line: str) -> None:
        """A warning: on standard error and in log.txt (main process)."""
        if self.writes:
            print(line, file=sys.stderr)
            self.log(line, echo_line=False)

    def record(self, record: dict) -> None:
        """Append one evaluation to results.json and redraw the plots."""
        self.results.append(record)
        if self.writes:
            write_text_atomic(self.dir / "results.json", json.dumps(self.results, indent=2) + "\n")
            plot_results(self.results, self.dir)

    def save_models(self, state_dict: dict, epoch: int, is_best: bool, keep_every: bool) -> None:
        """model_latest.pt, model_best.pt when best, and model_<epoch>.pt with --save_models."""
        if not self.writes:
            return
        names = ["model_latest.pt"] + (["model_best.pt"] if is_best else []) + \
            ([f"model_{epoch}.pt"] if keep_every else [])
        for name in names:
            save_checkpoint(state_dict, self.dir / "model" / name)

    def save_basis_images(self, model) -> None:
        """``model/bases/<basis>.png``: the filters of every basis of ``model``, next to its checkpoints."""
        if self.writes:
            save_basis_images(model, self.dir / "model" / "bases")

    def save_state(self, state: dict) -> None:
        """Written last after an evaluation: the commit point a resumed run starts from."""
        if self.writes:
            save_checkpoint(state, self.dir / STATE_FILE)
        self.state_epoch = state["epoch"]

    def stopped(self, status: str = "stopped") -> None:
        """Record in run.json that the run ended early (unless a signal handler already said why)."""
        if self.writes and self.created:
            record = read_run_file(self.dir)
            if record is not None and record.get("status") in ("started", "training"):
                update_run(self.dir, status=status)
