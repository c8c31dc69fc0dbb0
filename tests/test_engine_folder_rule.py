"""The folder rule of main.py: --reset only on experiment folders, a finished run says so (exit 0), a run
stopped before its first epoch starts again, anything else is refused untouched; --auto_resume; --load
with --save; --save on a file; --data_test on resume; --target_compression continued; Ctrl-C."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from randomize import randomize

from filter_basis.engine import cli_main, run
from filter_basis.engine.checkpoint import load_checkpoint
from filter_basis.engine.record import RUN_FILE, read_run
from image_classification import model as cls_model
from image_classification import option
from image_classification.trainer import Trainer as ClsTrainer
from image_classification.tree import TREE

TINY = ["--model", "ResNet", "--depth", "8", "--data_train", "Synthetic", "--data_test", "Synthetic",
        "--n_train", "32", "--n_test", "16", "--batch_size", "16", "--cpu", "--n_threads", "0",
        "--lr", "0.05"]

pytestmark = pytest.mark.usefixtures("one_thread")


def snapshot(folder):
    """Every file below ``folder`` with its bytes and modification time."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def argv(root, *extra):
    return TINY + ["--dir_save", str(root)] + list(extra)


def one_line(capsys, stream="err"):
    text = getattr(capsys.readouterr(), stream).strip()
    assert "\n" not in text and "Traceback" not in text, text
    return text


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A run finished at epoch 2 of 2 (a module-wide copy source)."""
    root = tmp_path_factory.mktemp("rule")
    run(TREE, option.parse_args(argv(root, "--save", "run", "--epochs", "2")))
    return root / "run"


@pytest.fixture
def root(finished_run, tmp_path):
    shutil.copytree(finished_run, tmp_path / "run")
    return tmp_path


# ----- --reset and --save on what is not an experiment folder -----
def test_reset_refuses_a_folder_that_is_not_an_experiment_and_touches_nothing(tmp_path, capsys):
    """--save defaults to 'test': a user's own test/ folder in --dir_save must survive --reset."""
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "notes.txt").write_text("mine\n")
    (tmp_path / "test" / "log.txt").write_text("mine too\n")
    before = snapshot(tmp_path)
    assert cli_main(TREE, argv(tmp_path, "--reset", "--epochs", "1")) == 2
    err = one_line(capsys)
    assert "--reset --save 'test'" in err and "is not an experiment folder" in err
    assert "nothing was removed" in err
    assert snapshot(tmp_path) == before


def test_reset_replaces_an_experiment_folder(root):
    (root / "run" / "training_state.pt").unlink()
    run(TREE, option.parse_args(argv(root, "--save", "run", "--reset", "--epochs", "1")))
    record = read_run(root / "run")
    assert record.epochs_done == 1 and record.finished and [r["epoch"] for r in record.results] == [1]


@pytest.mark.parametrize("name", ["afile", "afile/sub"])
def test_save_naming_a_file_is_one_line_and_exit_2(tmp_path, capsys, name):
    (tmp_path / "afile").write_text("not a folder\n")
    before = snapshot(tmp_path)
    assert cli_main(TREE, argv(tmp_path, "--save", name, "--epochs", "1")) == 2
    err = one_line(capsys)
    assert f"--save {name!r}" in err and "is a file, not a folder" in err
    assert snapshot(tmp_path) == before


# ----- a folder without a training state -----
def test_a_finished_run_without_its_state_says_finished_and_touches_nothing(root, capsys):
    (root / "run" / "training_state.pt").unlink()  # people delete it to save space
    before = snapshot(root)
    assert cli_main(TREE, argv(root, "--save", "run", "--epochs", "2")) == 0
    out = one_line(capsys, "out")
    assert "finished at epoch 2 of 2" in out and "larger --epochs" in out
    assert snapshot(root) == before


def test_a_finished_run_with_other_options_is_refused_not_called_finished(root, capsys):
    (root / "run" / "training_state.pt").unlink()
    before = snapshot(root)
    assert cli_main(TREE, argv(root, "--save", "run", "--epochs", "2", "--batch_size", "8")) == 2
    assert "--batch_size 8 (saved 16)" in one_line(capsys)
    assert snapshot(root) == before


def test_trained_epochs_without_a_state_are_refused_and_never_removed(root, capsys):
    (root / "run" / "training_state.pt").unlink()
    (root / "run" / "NOTES.txt").write_text("mine\n")
    record = json.loads((root / "run" / RUN_FILE).read_text())
    (root / "run" / RUN_FILE).write_text(json.dumps({**record, "epochs_planned": 5, "status": "stopped"}))
    before = snapshot(root)
    assert cli_main(TREE, argv(root, "--save", "run", "--epochs", "5")) == 2
    err = one_line(capsys)
    assert "holds 2 trained epoch(s) of 5 but no training_state.pt" in err and "another --save name" in err
    assert cli_main(TREE, argv(root, "--save", "run", "--epochs", "5", "--auto_resume")) == 2
    assert "holds 2 trained epoch(s)" in one_line(capsys)
    assert snapshot(root) == before


def test_a_folder_with_a_state_is_not_started_over_by_save(root, capsys):
    before = snapshot(root)
    assert cli_main(TREE, argv(root, "--save", "run", "--epochs", "3")) == 2
    err = one_line(capsys)
    assert "--load run" in err and "--auto_resume" in err and "--reset" in err
    assert snapshot(root) == before


def interrupt_at_batch(monkeypatch, batch):
    """Make the ``batch``-th training step (counted over the whole run) raise KeyboardInterrupt."""
    calls = []
    step = ClsTrainer.train_step

    def interrupted(self, data):
        calls.append(1)
        if len(calls) == batch:
            raise KeyboardInterrupt
        return step(self, data)
    monkeypatch.setattr(ClsTrainer, "train_step", interrupted)


def test_ctrl_c_in_the_first_epoch_leaves_a_folder_the_same_command_starts_again(tmp_path, capsys,
                                                                                  monkeypatch):
    interrupt_at_batch(monkeypatch, 2)
    command = argv(tmp_path, "--save", "run", "--epochs", "1")
    assert cli_main(TREE, command) == 130
    err = one_line(capsys)
    assert err.startswith("interrupted (Ctrl-C) in epoch 1") and "the same command starts it again" in err
    assert read_run(tmp_path / "run").status == "interrupted"
    monkeypatch.undo()
    capsys.readouterr()
    assert cli_main(TREE, argv(tmp_path, "--load", "run", "--epochs", "1")) == 2
    assert "start it again with the same options and --save run" in one_line(capsys)
    assert cli_main(TREE, command) == 0
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "starting again" in log and "before its first epoch ended" in log
    record = read_run(tmp_path / "run")
    assert (record.epochs_done, record.status) == (1, "finished")


def test_ctrl_c_keeps_the_last_epoch_and_says_how_to_continue(tmp_path, capsys, monkeypatch):
    interrupt_at_batch(monkeypatch, 3)  # 2 batches per epoch: the first batch of epoch 2
    assert cli_main(TREE, argv(tmp_path, "--save", "run", "--epochs", "2")) == 130
    err = one_line(capsys)
    assert err == (f"interrupted (Ctrl-C) in epoch 2: {tmp_path / 'run'} keeps epoch 1 (training_state.pt); "
                   f"continue with --load run and the same options (or the same command with --auto_resume)")
    record = read_run(tmp_path / "run")
    assert (record.status, record.epochs_done, record.has_state) == ("interrupted", 1, True)
    assert load_checkpoint(tmp_path / "run" / "training_state.pt")["epoch"] == 1  # no mid-epoch save
    assert "interrupted (Ctrl-C)" in (tmp_path / "run" / "log.txt").read_text()
    monkeypatch.undo()
    assert cli_main(TREE, argv(tmp_path, "--save", "run", "--epochs", "2", "--auto_resume")) == 0
    assert read_run(tmp_path / "run").status == "finished"


def test_ctrl_c_on_the_command_line_is_one_line_and_exit_130(repo_root, tmp_path):
    main_py = str(repo_root / "image_classification" / "main.py")
    command = [sys.executable, main_py] + argv(tmp_path, "--save", "run", "--epochs", "1000", "--n_train",
                                                 "64", "--print_every", "1")
    # (the run gets the default Ctrl-C disposition: a suite started in the background of a script inherits
    # an ignored SIGINT, and Python installs its KeyboardInterrupt handler only when SIGINT is not ignored)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"},
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    for line in process.stdout:  # wait for a batch of epoch 2: epoch 1's state is saved
        if line.startswith("[Epoch 2] [") or time.monotonic() > deadline:
            break
    process.send_signal(signal.SIGINT)
    try:
        _, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:  # keep what it said: a Ctrl-C that did not stop the run
        process.kill()
        out, err = process.communicate()
        raise AssertionError(f"still running 60 s after SIGINT; stderr: {err[-2000:]!r}; "
                             f"last output: {out[-1000:]!r}") from None
    assert process.returncode == 130
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("interrupted (Ctrl-C) in epoch ") and "continue with --load run" in err
    record = read_run(tmp_path / "run")
    assert record.status == "interrupted" and record.epochs_done >= 1
    assert load_checkpoint(tmp_path / "run" / "training_state.pt")["epoch"] == record.epochs_done


# ----- --load -----
def test_load_of_a_finished_run_says_finished_and_how_to_train_longer(root, capsys):
    before = snapshot(root)
    assert cli_main(TREE, argv(root, "--load", "run", "--epochs", "2")) == 0
    out = one_line(capsys, "out")
    assert out == (f"--load 'run': {root / 'run'} is finished at epoch 2 of 2; nothing to do (to train it "
                   f"longer: --load run with a larger --epochs)")
    assert snapshot(root) == before


def test_load_with_another_save_is_refused(root, capsys):
    before = snapshot(root)
    assert cli_main(TREE, argv(root, "--load", "run", "--save", "other", "--epochs", "3")) == 2
    err = one_line(capsys)
    assert "--load 'run' with --save 'other'" in err and "give --load run alone" in err
    assert snapshot(root) == before


def test_training_resume_refuses_another_data_test(root, capsys):
    before = snapshot(root)
    assert cli_main(TREE, argv(root, "--load", "run", "--epochs", "3", "--data_test", "Digits")) == 2
    assert "--data_test Digits (saved Synthetic)" in one_line(capsys)
    assert snapshot(root) == before


# ----- --auto_resume -----
def test_auto_resume_starts_continues_and_ends_like_one_uninterrupted_run(tmp_path, capsys):
    straight = tmp_path / "straight"
    run(TREE, option.parse_args(argv(straight, "--save", "run", "--epochs", "2")))
    command = argv(tmp_path, "--save", "run", "--auto_resume", "--made_by", "pytest")
    assert cli_main(TREE, command + ["--epochs", "1"]) == 0  # absent: starts
    assert cli_main(TREE, command + ["--epochs", "2"]) == 0  # a state: continues
    record = read_run(tmp_path / "run")
    assert (record.epochs_done, record.status, record.made_by) == (2, "finished", "pytest")
    ours = load_checkpoint(tmp_path / "run" / "model" / "model_latest.pt")
    theirs = load_checkpoint(straight / "run" / "model" / "model_latest.pt")
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)  # the data stream resumed exactly too
    assert json.loads((tmp_path / "run" / "results.json").read_text())[-1]["metrics"] == \
        json.loads((straight / "run" / "results.json").read_text())[-1]["metrics"]
    capsys.readouterr()
    before = snapshot(tmp_path)
    assert cli_main(TREE, command + ["--epochs", "2"]) == 0  # finished: a requeue loop ends
    assert "finished at epoch 2 of 2" in one_line(capsys, "out") and snapshot(tmp_path) == before
    assert cli_main(TREE, command + ["--epochs", "2", "--lr", "0.01"]) == 2  # drift still refused
    assert "--save 'run' --auto_resume: options differ" in one_line(capsys) and snapshot(tmp_path) == before


def test_auto_resume_starts_a_fresh_folder_again(tmp_path, monkeypatch, capsys):
    interrupt_at_batch(monkeypatch, 1)
    command = argv(tmp_path, "--save", "run", "--auto_resume", "--epochs", "1")
    assert cli_main(TREE, command) == 130
    assert "the same command starts it again" in one_line(capsys)
    monkeypatch.undo()
    assert cli_main(TREE, command) == 0
    assert read_run(tmp_path / "run").status == "finished"


@pytest.mark.parametrize("extra, named", [(["--reset"], "--auto_resume with --reset"),
                                          (["--load", "run"], "--auto_resume with --load 'run'")])
def test_auto_resume_with_load_or_reset_is_an_error(tmp_path, capsys, extra, named):
    assert cli_main(TREE, argv(tmp_path, "--save", "run", "--auto_resume") + extra) == 2
    assert named in one_line(capsys)
    assert not any(tmp_path.iterdir())


# ----- --target_compression -----
RESNET = ["--depth", "8", "--k_size2", "1", "--basis_size1", "8", "--basis_size2", "8", "--basis_size3", "8"]


def test_a_target_compression_run_continues_with_either_command(tmp_path, capsys):
    dense = randomize(cls_model.build_model(option.parse_args(RESNET + ["--model", "ResNet"])), 0)
    torch.save(dense.state_dict(), tmp_path / "dense.pt")
    first = argv(tmp_path, "--save", "tc", *RESNET, "--model", "ResNet_Basis", "--basis_init",
                 str(tmp_path / "dense.pt"), "--target_compression", "0.3", "--bn_batches", "0")
    assert cli_main(TREE, first + ["--epochs", "1"]) == 0
    printed = next(line for line in capsys.readouterr().out.splitlines()
                   if line.startswith("--basis_init chose: "))
    counts = printed.split("chose: ")[1].split()
    record = read_run(tmp_path / "tc")
    assert record.basis_counts["options"] == {counts[i].lstrip("-"): int(counts[i + 1])
                                              for i in range(0, len(counts), 2)}
    assert record.basis_counts["target_compression"] == 0.3
    os.rename(tmp_path / "tc" / "basis_init.json", tmp_path / "basis_init.json")  # unchanged by a resume
    # the printed options: no dense file, no refit
    printed_command = argv(tmp_path, "--load", "tc", *RESNET, "--model", "ResNet_Basis", *counts)
    assert cli_main(TREE, printed_command + ["--epochs", "2"]) == 0
    # the first command, with --auto_resume and --save, as a requeued job would run it
    assert cli_main(TREE, first + ["--epochs", "3", "--auto_resume"]) == 0
    record = read_run(tmp_path / "tc")
    assert (record.epochs_done, record.status) == (3, "finished")
    assert not (tmp_path / "tc" / "basis_init.json").exists()
    capsys.readouterr()
    assert cli_main(TREE, printed_command[:-1] + [str(int(counts[-1]) + 1), "--epochs", "4"]) == 2
    assert f"--{counts[-2].lstrip('-')} {int(counts[-1]) + 1} (saved {counts[-1]})" in one_line(capsys)
