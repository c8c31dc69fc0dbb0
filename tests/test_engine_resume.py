"""What a run may touch: --save/--reset stay inside their own folder, and a --load run that does not fit
(model or options) is refused before anything is written; the options that may change are recorded."""

import json
import os
import shutil

import pytest
import torch

from filter_basis.engine import cli_main, run
from image_classification import option
from image_classification.tree import TREE

TINY = ["--model", "ResNet", "--depth", "8", "--data_train", "Synthetic", "--data_test", "Synthetic",
        "--n_train", "32", "--n_test", "16", "--batch_size", "16", "--cpu", "--n_threads", "0",
        "--lr", "0.05"]

pytestmark = pytest.mark.usefixtures("one_thread")


def snapshot(folder):
    """Every file below ``folder`` with its bytes and modification time."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def experiments(tmp_path):
    """``(root, outside)``: --dir_save holding a finished run and a link to a folder outside it."""
    root, outside = tmp_path / "experiment", tmp_path / "outside"
    (root / "finished").mkdir(parents=True)
    (root / "finished" / "results.json").write_text("[]\n")
    outside.mkdir()
    (outside / "keep.txt").write_text("not an experiment\n")
    (root / "link").symlink_to(outside, target_is_directory=True)
    return root, outside


@pytest.mark.parametrize("name", [".", "", "./", "a/..", "link", "link/sub", "ABSOLUTE"])
def test_reset_never_leaves_the_save_folder(experiments, capsys, name):
    root, outside = experiments
    name = str(root / "finished") if name == "ABSOLUTE" else name
    before, kept = snapshot(root), snapshot(outside)
    assert cli_main(TREE, TINY + ["--dir_save", str(root), "--save", name, "--reset", "--test_only"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"--save {name!r}" in err and "inside --dir_save" in err
    assert snapshot(root) == before and snapshot(outside) == kept


def test_reset_removes_only_the_named_folder(experiments):
    root, outside = experiments
    (root / "group" / "b").mkdir(parents=True)
    (root / "group" / "b" / "run.json").write_text('{"format": 1, "epochs_done": 1}\n')  # an experiment
    (root / "group" / "b" / "old.txt").write_text("old\n")
    (root / "group" / "c").mkdir()
    (root / "group" / "c" / "log.txt").write_text("sibling\n")
    run(TREE, option.parse_args(TINY + ["--dir_save", str(root), "--save", "group/b", "--reset",
                                        "--test_only"]))
    assert not (root / "group" / "b" / "old.txt").exists()
    assert (root / "group" / "b" / "results.json").is_file()
    assert (root / "group" / "c" / "log.txt").read_text() == "sibling\n"
    assert (root / "finished" / "results.json").is_file() and (outside / "keep.txt").is_file()


@pytest.mark.parametrize("load", ["", "."])
def test_empty_or_dot_load_means_not_given(tmp_path, load):
    args = option.parse_args(TINY + ["--dir_save", str(tmp_path), "--save", "fresh", "--load", load,
                                     "--test_only"])
    run(TREE, args)
    assert (tmp_path / "fresh" / "results.json").is_file()


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A finished 1-epoch run (a module-wide copy source; tests work on their own copies)."""
    root = tmp_path_factory.mktemp("saved")
    run(TREE, option.parse_args(TINY + ["--dir_save", str(root), "--save", "run", "--epochs", "1",
                                        "--momentum", "0.8"]))
    return root / "run"


@pytest.fixture
def copied_run(saved_run, tmp_path):
    shutil.copytree(saved_run, tmp_path / "run")
    return tmp_path


def strip_options(folder):
    """Make ``folder`` look like a run saved before training states kept their options."""
    path = folder / "training_state.pt"
    state = torch.load(path, weights_only=True)
    del state["options"]
    torch.save(state, path)
    os.utime(path, ns=(1, 1))


MISFITS = [
    ("kept", ["--depth", "14"], "--depth 14 (saved 8)"),
    ("none", ["--depth", "14"], "36 key(s) of the model not saved, first 'features.1.1.body.0.weight' "
                                "(16, 16, 3, 3)"),
    ("none", ["--kernel_size", "5"], "first 'features.0.0.weight': saved (16, 3, 3, 3), these options build "
                                     "(16, 3, 5, 5)"),
]


@pytest.mark.parametrize("saved_options, extra, needle", MISFITS, ids=["options", "keys", "shapes"])
def test_a_run_that_does_not_fit_the_model_is_refused_and_nothing_is_written(copied_run, capsys,
                                                                               saved_options, extra, needle):
    if saved_options == "none":  # nothing to compare the options with: the weights themselves are checked
        strip_options(copied_run / "run")
        (copied_run / "run" / "args.json").unlink()
    before = snapshot(copied_run)
    argv = TINY + ["--dir_save", str(copied_run), "--load", "run", "--momentum", "0.8", "--epochs", "2"]
    assert cli_main(TREE, argv + extra) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--load 'run'" in err and needle in err
    assert snapshot(copied_run) == before


DRIFT = [
    (["--lr", "0.01"], "--lr 0.01 (saved 0.05)"),
    (["--weight_decay", "0.001"], "--weight_decay 0.001 (saved 0.0001)"),
    (["--momentum", "0.9"], "--momentum 0.9 (saved 0.8)"),
    (["--decay", "step-1-2"], "--decay step-1-2 (saved step-150-225)"),
    (["--gamma", "0.5"], "--gamma 0.5 (saved 0.1)"),
    (["--optimizer", "ADAM"], "--optimizer ADAM (saved SGD)"),
    (["--beta1", "0.5"], "--beta1 0.5 (saved 0.9)"),
    (["--epsilon", "1e-6"], "--epsilon 1e-06 (saved 1e-08)"),
    (["--loss", "2*CE"], "--loss 2*CE (saved 1*CE)"),
    (["--nesterov", "--batch_size", "32"], "--batch_size 32 (saved 16), --nesterov true (saved false)"),
]


@pytest.mark.parametrize("extra, listed", DRIFT, ids=[d[0][0] for d in DRIFT])
def test_options_that_drift_on_resume_are_refused_and_nothing_is_written(copied_run, capsys, extra, listed):
    before = snapshot(copied_run)
    argv = TINY + ["--dir_save", str(copied_run), "--load", "run", "--momentum", "0.8", "--epochs", "2"]
    assert cli_main(TREE, argv + extra) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "options differ from the run it continues" in err
    assert f": {listed};" in err
    assert snapshot(copied_run) == before


def test_allowed_options_may_change_and_args_json_records_what_runs(copied_run):
    argv = TINY + ["--dir_save", str(copied_run), "--load", "run", "--momentum", "0.8"]
    changed = ["--epochs", "2", "--print_every", "7", "--test_every", "3", "--n_threads", "1",
               "--save_models", "--channels_last"]
    trainer = run(TREE, option.parse_args(argv + changed))
    assert trainer.epoch == 2
    recorded = json.loads((copied_run / "run" / "args.json").read_text())
    assert (recorded["epochs"], recorded["print_every"], recorded["test_every"], recorded["n_threads"]) == \
        (2, 7, 3, 1)
    assert recorded["save_models"] and recorded["channels_last"] and recorded["momentum"] == 0.8
    results = json.loads((copied_run / "run" / "results.json").read_text())
    assert [r["epoch"] for r in results] == [1, 2]


def test_a_state_saved_without_its_options_is_checked_against_args_json(copied_run, capsys):
    strip_options(copied_run / "run")
    before = snapshot(copied_run)
    argv = TINY + ["--dir_save", str(copied_run), "--load", "run", "--epochs", "2"]
    assert cli_main(TREE, argv) == 2  # --momentum left at its default 0.9
    assert "--momentum 0.9 (saved 0.8)" in capsys.readouterr().err
    assert snapshot(copied_run) == before


def test_a_saved_run_may_be_tested_on_another_test_set(copied_run):
    """What a test run evaluates on (and how basis layers compute) is not drift: --load RUN --test_only
    --data_test OTHER is how a trained model is evaluated elsewhere."""
    argv = TINY[:TINY.index("--data_test")] + TINY[TINY.index("--data_test") + 2:]
    argv += ["--dir_save", str(copied_run), "--load", "run", "--momentum", "0.8", "--test_only",
             "--data_test", "Digits", "--n_test", "8", "--basis_form", "merged"]
    run(TREE, option.parse_args(argv))
    results = json.loads((copied_run / "run" / "results.json").read_text())
    assert results[-1]["epoch"] == 1 and "top1_error" in results[-1]["metrics"]
