"""Testing a saved run: its options, its weights, and where the results go (``docs/testing.md``).

``--load RUN --test_only`` (or ``--test_only --pre_train RUN/model/<file>.pt``) tests a checkpoint of an
experiment folder.  The model is built from the run's own options: every option not given on the
command line is taken from ``RUN/args.json``, except the ones that belong to this invocation
(:data:`INVOCATION_OPTIONS`: folders, hardware, number format, what this command does).  Nothing of the
training run is compared except the options that change the model's ``state_dict`` or its forward pass
(:data:`MODEL_OPTIONS` and the tree's ``model_options``): with ``--load`` a different value of one of
those is refused; a ``--pre_train`` file may be tested with other model options as long as its weights
fit them.

Results go to ``RUN/eval/<data_test>-<checkpoint>/`` (``results.json``, ``log.txt``, ``args.json``,
``run.json`` with ``"kind": "evaluation"``, SR images), never into the run's own record; the next
evaluation of the same sets and checkpoint replaces that folder and nothing else.  With ``--save NEW``
given on the command line the test is an experiment folder ``NEW`` of its own instead.

:func:`load_run` does the same from Python: the model of a run with its weights.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from torch import nn

from ..errors import CheckpointError, OptionError
from .options import experiment_folder, given_names, is_given
from .record import EVAL_DIR, RUN_FILE, NotAnExperiment, read_run, read_run_file

EVALUATION_KIND = "evaluation"  # run.json "kind" of RUN/eval/<data_test>-<checkpoint>/

# Options that belong to the invocation, never to the run it tests: what this command does, where files
# are, the hardware and number format, logging, and starting points that the tested weights replace.
INVOCATION_OPTIONS = (
    "load", "save", "reset", "test_only", "resume", "summary", "template", "made_by", "auto_resume",
    "dir_data", "dir_save", "cpu", "n_GPUs", "n_threads", "precision", "amp", "channels_last", "compile",
    "debug", "basis_form", "print_every", "save_every_steps", "tensorboard",
    "basis_init", "target_compression", "bn_batches", "basis_fit", "fit_batches", "rank_select",
    "target_flops", "fit_rounds",
)

# Options that change the model's state_dict or its forward pass (the tree's Tree.model_options add its
# architecture options); the only ones --load RUN --test_only compares with the run.
MODEL_OPTIONS = ("model",)

_CHECKPOINT_FILE = re.compile(r"^model_(latest|best|\d+)\.pt$")


@dataclass
class Evaluation:
    """A test of a checkpoint of the experiment folder ``run``."""

    run: Path
    checkpoint: str  # "latest", "best", "epoch<N>" (or a file's own name)
    weights: Path
    folder: Optional[Path]  # RUN/eval/<data_test>-<checkpoint>, or None: --save NEW given
    epoch: int  # the epoch the checkpoint was saved after (0 when unknown)
    data_test: str

    def record(self, tree: str, status: str) -> dict:
        """The evaluation folder's run.json."""
        return {"format": 1, "kind": EVALUATION_KIND, "tree": tree, "status": status, "run": str(self.run),
                "checkpoint": self.checkpoint, "weights": str(self.weights), "epoch": self.epoch,
                "data_test": self.data_test}

    def check_folder(self) -> None:
        """Refuse (before anything is written) an evaluation folder holding files the engine did not write."""
        if self.folder is None or not self.folder.exists():
            return
        if not self.folder.is_dir() or (any(self.folder.iterdir()) and not is_evaluation_folder(self.folder)):
            raise OptionError(f"{self.folder} is not an evaluation folder written by the engine (no "
                              f"{RUN_FILE} with \"kind\": \"{EVALUATION_KIND}\"); move it away to test this "
                              f"checkpoint again, or give --save NAME to write the test elsewhere")

    def clear(self) -> None:
        """Remove the previous evaluation of these sets and checkpoint (its folder only)."""
        if self.folder is not None and self.folder.exists():
            self.check_folder()
            shutil.rmtree(self.folder)


def is_evaluation_folder(folder: Path) -> bool:
    """Whether ``folder`` holds the run.json of a test-only evaluation."""
    record = read_run_file(folder)
    return record is not None and record.get("kind") == EVALUATION_KIND


def run_of_weights(path: Union[str, Path]) -> Optional[Path]:
    """``RUN`` when ``path`` is ``RUN/model/<file>.pt`` of an experiment folder (``RUN/args.json``)."""
    path = Path(path)
    run = path.resolve().parent.parent
    if path.resolve().parent.name == "model" and (run / "args.json").is_file():
        return run
    return None


def checkpoint_name(weights: Path) -> str:
    """``model_best.pt`` -> ``best``, ``model_latest.pt`` -> ``latest``, ``model_7.pt`` -> ``epoch7``;
    any other file its own name without ``.pt``."""
    found = _CHECKPOINT_FILE.match(weights.name)
    if not found:
        return weights.stem
    name = found.group(1)
    return f"epoch{name}" if name.isdigit() else name


def saved_options(run: Path) -> dict:
    """The options of the run in ``run`` (its args.json)."""
    path = run / "args.json"
    try:
        options = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path} cannot be read ({type(error).__name__}); the run's options are "
                              f"needed to build its model") from None
    if not isinstance(options, dict):
        raise CheckpointError(f"{path} holds no options")
    return options


def checkpoint_epoch(run: Path, checkpoint: str) -> int:
    """The epoch ``checkpoint`` of ``run`` was saved after (0 when the record does not tell)."""
    if checkpoint.startswith("epoch") and checkpoint[5:].isdigit():
        return int(checkpoint[5:])
    try:
        record = read_run(run)
    except NotAnExperiment:
        return 0
    if checkpoint == "latest":
        return record.epochs_done
    if checkpoint == "best" and record.best:
        return int(record.best.get("epoch") or 0)
    return 0


def take_run_options(args: argparse.Namespace, saved: dict, keep) -> list:
    """Set every option of ``args`` not in ``keep`` to its value in ``saved``; the names changed."""
    changed = []
    for name, value in saved.items():
        if name in keep or not hasattr(args, name):
            continue
        if getattr(args, name) != value:
            changed.append(name)
        setattr(args, name, tuple(value) if isinstance(getattr(args, name), tuple) and isinstance(value, list)
                else value)
    return changed


def _plain(value):
    return json.loads(json.dumps(value, default=str))


def _shown(value) -> str:
    return value if isinstance(value, str) and value else json.dumps(value)


def model_options(tree) -> tuple:
    return MODEL_OPTIONS + tuple(getattr(tree, "model_options", ()))


def invocation_options(tree) -> set:
    return set(INVOCATION_OPTIONS) | set(getattr(tree, "invocation_options", ())) | {tree.pretrained_option}


def settle(tree, args: argparse.Namespace) -> Optional[Evaluation]:
    """For ``--test_only`` of a saved run: take its options (in place) and say which checkpoint is tested
    and where the results go; None for every other run.  Refusals come before anything is written."""
    if not args.test_only:
        return None
    pretrained = getattr(args, tree.pretrained_option)
    file_run = run_of_weights(pretrained) if is_given(pretrained) and Path(pretrained).is_file() else None
    if is_given(args.load):
        run = experiment_folder(args.dir_save, args.load, "--load")
        if not run.is_dir():
            raise OptionError(f"--load {args.load!r}: {run} is no such folder")
        if is_given(pretrained) and file_run != run.resolve():
            raise OptionError(f"--load {args.load!r} and --{tree.pretrained_option} {pretrained!r} both name "
                              f"the weights to test; give one (a file of {run / 'model'} may be given with "
                              f"--load to test it)")
        if file_run is not None:
            weights = Path(pretrained)
        elif args.resume > 0:
            weights = run / "model" / f"model_{args.resume}.pt"
        else:
            weights = run / "model" / "model_latest.pt"
        if not weights.is_file():
            kept = sorted(p.name for p in (run / "model").glob("*.pt")) if (run / "model").is_dir() else []
            raise CheckpointError(f"--load {args.load!r}: {weights} does not exist (model_<N>.pt files are "
                                  f"kept with --save_models); {run / 'model'} holds: "
                                  f"{', '.join(kept) or 'nothing'}")
    elif file_run is not None:
        run, weights = file_run, Path(pretrained)
    else:
        return None
    if is_given(args.basis_init):
        raise OptionError(f"--basis_init with a test of the saved run {run}: the run's weights are tested; "
                          f"leave --basis_init out")
    saved = saved_options(run)
    given = given_names(args)
    if given is not None:
        take_run_options(args, saved, invocation_options(tree) | given)
    current = _plain(vars(args))
    if is_given(args.load):  # the run's own test: its model options may not change
        drift = [name for name in model_options(tree) if name in saved and name in current
                 and current[name] != saved[name]]
        if drift:
            listed = ", ".join(f"--{name} {_shown(current[name])} (saved {_shown(saved[name])})"
                               for name in drift)
            raise OptionError(f"--load {args.load!r} --test_only: {listed}; a test of a saved run builds its "
                              f"model from {run / 'args.json'}: leave these options out (other options, such "
                              f"as --data_test, may change)")
    checkpoint = checkpoint_name(weights)
    # --pre_train FILE --save NEW: a folder of its own; a test of --load RUN always goes to RUN/eval/
    explicit_save = given is not None and "save" in given and not is_given(args.load)
    folder = None if explicit_save else run / EVAL_DIR / f"{args.data_test}-{checkpoint}"
    evaluation = Evaluation(run=run, checkpoint=checkpoint, weights=weights.resolve(), folder=folder,
                            epoch=checkpoint_epoch(run, checkpoint), data_test=args.data_test)
    evaluation.check_folder()
    return evaluation


def load_weights(tree, model: nn.Module, evaluation: Evaluation, args: argparse.Namespace) -> None:
    """Load the tested checkpoint into ``model``; a misfit names the run's options file."""
    try:
        tree.load_pretrained(model, str(evaluation.weights), args)
    except CheckpointError as error:
        given = sorted((given_names(args) or set()) & set(model_options(tree)))
        hint = f"given here: {', '.join('--' + n for n in given)}" if given else "none given here"
        raise CheckpointError(f"{error}; the model options come from {evaluation.run / 'args.json'} unless "
                              f"given on the command line ({hint})") from None


def refuse_untrained(tree, args: argparse.Namespace, model: nn.Module) -> None:
    """A test run must test trained weights: --load RUN, --pre_train/--pretrained FILE or --basis_init."""
    if not args.test_only or is_given(args.load) or is_given(getattr(args, tree.pretrained_option)) \
            or is_given(args.basis_init):
        return
    if not any(p.requires_grad for p in model.parameters()):  # nothing to train (Bicubic)
        return
    raise OptionError(f"--test_only without trained weights would test a randomly initialised --model "
                      f"{args.model}; give --load RUN (a run folder under --dir_save) or "
                      f"--{tree.pretrained_option} FILE (e.g. RUN/model/model_best.pt)")


# ----- from Python -----
def run_options(folder: Union[str, Path]):
    """``(tree, args)``: the tree that made the run in ``folder`` (the name its run.json holds, or for
    older runs the one its options tell) and the run's options as a namespace (from ``args.json``, for a
    test on the CPU)."""
    from .trees import find_tree  # by name, at run time: the library imports no tree

    record = read_run(folder)
    options = saved_options(Path(folder))
    if not record.tree:
        raise CheckpointError(f"{folder}: cannot tell which tree made the run (no \"tree\" in {RUN_FILE}, "
                              f"and its args.json does not tell)")
    tree = find_tree(record.tree)
    args = tree.parse_args(["--cpu", "--test_only", "--n_threads", "0"])
    take_run_options(args, options, invocation_options(tree))
    return tree, args


def checkpoint_file(folder: Union[str, Path], checkpoint: Union[str, int] = "best") -> Path:
    """The weights file of ``checkpoint`` ("best", "latest", an epoch N or "epochN") in run ``folder``."""
    text = str(checkpoint)
    number = text[5:] if text.startswith("epoch") else text
    name = f"model_{number}.pt" if number.isdigit() else f"model_{text}.pt"
    path = Path(folder) / "model" / name
    if text not in ("best", "latest") and not number.isdigit():
        raise OptionError(f"checkpoint {checkpoint!r}: expected 'best', 'latest' or an epoch number")
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist (model_<N>.pt files are kept with --save_models)")
    return path


def load_run(folder: Union[str, Path], checkpoint: Union[str, int] = "best") -> nn.Module:
    """The model of the experiment folder ``folder``, built from its options, with the weights of
    ``checkpoint`` ("best", "latest", or an epoch number kept by ``--save_models``), on the CPU in
    eval mode.  The tree is found by the name the run's record holds (``run.json``), or, for runs written
    before it, by its options; no tree is imported before that.

    Example (``docs/testing.md``)::

        import torch, filter_basis
        model = filter_basis.load_run("experiment/my_run")          # model_best.pt
        fused = filter_basis.fuse(model)                            # BatchNorm folded, cheaper forms
        torch.onnx.export(fused, (torch.randn(1, 3, 32, 32),), "my_run.onnx", dynamo=False)
    """
    from ..layers import set_basis_form

    tree, args = run_options(folder)
    weights = checkpoint_file(folder, checkpoint)
    model = tree.build_model(args)
    set_basis_form(model, args.basis_form)
    tree.load_pretrained(model, str(weights), args)
    return model.eval()
