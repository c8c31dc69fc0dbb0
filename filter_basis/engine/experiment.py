"""The experiment folder of DESIGN.md contract 3: what it holds and when an existing one may be touched.

Only the main process writes.  Checks run on every process before anything is written, so a refused
folder is left as it was.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time

from ..errors import CheckpointError, OptionError
from .checkpoint import load_checkpoint, save_checkpoint, write_text_atomic
from .distributed import DistEnv
from .options import experiment_folder, is_given
from .plots import plot_results, save_basis_images
from .progress import echo

STATE_FILE = "training_state.pt"


class Experiment:
    """``DIR_SAVE/SAVE`` (or ``DIR_SAVE/LOAD`` when continuing a run) and the files in it."""

    def __init__(self, args: argparse.Namespace, env: DistEnv, evaluation=None):
        # evaluation: a test of a saved run (filter_basis/engine/evaluation.py); its folder
        # RUN/eval/<data_test>-<checkpoint> is the engine's own and replaced by the next such test
        self.evaluation = evaluation
        self.tested: dict = {}  # what a test run tested: {"weights": file[, "checkpoint": name]}
        self.resuming = is_given(args.load) and evaluation is None
        name = args.load if self.resuming else args.save
        self.writes = env.is_main
        self.results: list = []
        self._log = None
        if evaluation is not None and evaluation.folder is not None:
            self.dir = evaluation.folder
            return
        self.dir = experiment_folder(args.dir_save, name, "--load" if self.resuming else "--save")
        if self.resuming:
            if not (self.dir / STATE_FILE).is_file():
                raise CheckpointError(f"--load {name!r}: {self.dir} holds no {STATE_FILE} to continue from")
        elif self.dir.exists() and any(self.dir.iterdir()) and not args.reset:
            raise OptionError(f"--save {name!r}: {self.dir} already exists; use --load {name} to continue "
                              f"that run or --reset to start it afresh")

    def create(self, args: argparse.Namespace, summary: dict) -> None:
        """Start (or reopen) the folder: args.json, summary.json, log.txt."""
        if not self.writes:
            return
        if self.evaluation is not None and self.evaluation.folder is not None:
            self.evaluation.clear()  # the previous evaluation of these sets and checkpoint, nothing else
            self.dir.mkdir(parents=True)
        else:
            if args.reset and self.dir.exists():
                shutil.rmtree(self.dir)
            (self.dir / "model").mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.dir / "args.json", json.dumps(vars(args), indent=2, default=str) + "\n")
        write_text_atomic(self.dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        self._log = open(self.dir / "log.txt", "a", buffering=1)
        self.log(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {'continuing' if self.resuming else 'starting'} "
                 f"{self.dir}")

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
