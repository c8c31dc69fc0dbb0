"""The classification command line where the process boundary is the point: exit status and stderr of a
bad option, exact resume after SIGKILL, a malicious checkpoint, and 2-process DDP (Gloo, set up as by
torchrun)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from filter_basis.engine import cli_main, run
from filter_basis.engine.checkpoint import load_checkpoint
from image_classification import option
from image_classification.tree import TREE

TINY = ["--model", "ResNet", "--depth", "8", "--data_train", "Synthetic", "--data_test", "Synthetic",
        "--n_train", "128", "--n_test", "32", "--batch_size", "16", "--cpu", "--n_threads", "0"]


pytestmark = pytest.mark.usefixtures("one_thread")


def env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def main_py(repo_root):
    return str(repo_root / "image_classification" / "main.py")


def test_bad_option_is_one_line_and_exit_2_from_any_folder(repo_root, tmp_path):
    done = subprocess.run([sys.executable, main_py(repo_root), "--lr", "-1"], cwd=tmp_path, env=env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    expected = "error: argument --lr: '-1' is not accepted; expected a number > 0"
    assert done.stderr.strip().splitlines() == [expected]
    assert "Traceback" not in done.stdout + done.stderr


def test_resume_after_sigkill_reaches_the_uninterrupted_results(repo_root, tmp_path):
    # Two loader workers.  The lr grows tenfold after epoch 1 and --skip_threshold 1 skips the batches
    # whose loss exceeds the previous epoch's mean (error_last), so epoch 1 stays the best: a resumed run
    # that lost error_last or the best metric would train, or pick model_best.pt, differently.
    argv = [a if a != "0" else "2" for a in TINY] + ["--dir_save", str(tmp_path), "--epochs", "3",
                                                      "--lr", "0.05", "--decay", "step-1", "--gamma", "10",
                                                      "--skip_threshold", "1"]
    assert argv[argv.index("--n_threads") + 1] == "2"
    whole = run(TREE, option.parse_args(argv + ["--save", "whole"]))
    log = (tmp_path / "whole" / "log.txt").read_text().splitlines()
    assert [line.endswith("batches skipped") for line in log if "train loss" in line] == [False, True, True]
    assert whole.best["epoch"] == 1

    # Run from inside the tree as the official scripts did (python main.py), and kill it once the
    # first epoch's training state is on disk.
    state = tmp_path / "killed" / "training_state.pt"
    process = subprocess.Popen([sys.executable, "main.py"] + argv + ["--save", "killed"],
                               cwd=repo_root / "image_classification", env=env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not state.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert load_checkpoint(state)["epoch"] < 3  # killed before the end

    resumed = run(TREE, option.parse_args(argv + ["--load", "killed", "--resume", "-1"]))
    assert resumed.epoch == 3
    assert resumed.best == whole.best and resumed.error_last == whole.error_last

    def outcome(name):
        return [(r["epoch"], r["metrics"], r["train_loss"], r["lr"])
                for r in json.loads((tmp_path / name / "results.json").read_text())]

    assert outcome("killed") == outcome("whole")
    for name in ("model_latest.pt", "model_best.pt"):
        weights, expected = (load_checkpoint(tmp_path / k / "model" / name) for k in ("killed", "whole"))
        assert weights.keys() == expected.keys()
        for key, value in expected.items():
            assert torch.equal(weights[key], value), (name, key)
    saved = load_checkpoint(state)
    assert (saved["best"], saved["error_last"]) == (whole.best, whole.error_last)


def test_malicious_training_state_is_refused_without_running(tmp_path, capsys, code_payload):
    payload, marker = code_payload
    (tmp_path / "evil").mkdir()
    torch.save({"epoch": 1, "model": payload}, tmp_path / "evil" / "training_state.pt")
    assert cli_main(TREE, TINY + ["--dir_save", str(tmp_path), "--load", "evil"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "refused" in err and "nothing in it was run" in err
    assert not marker.exists()
    assert sorted(p.name for p in (tmp_path / "evil").iterdir()) == ["training_state.pt"]


DDP_WORKER = """
import hashlib, json, os, random, sys
import numpy as np
import torch
sys.path.insert(0, {root!r})
from torch.utils.data import DistributedSampler
from filter_basis.engine import Trainer, run
from filter_basis.errors import UserError
from image_classification.tree import TREE

rank = os.environ["RANK"]
seen, rng = [], {{}}
iterate = DistributedSampler.__iter__


def spy_iter(self):  # the training indices this process sees, epoch by epoch
    indices = list(iterate(self))
    seen.append(indices)
    return iter(indices)


load_state = Trainer.load_state


def spy_load_state(self, state):  # the random states this process continues with
    load_state(self, state)
    rng["torch"] = hashlib.sha1(torch.get_rng_state().numpy().tobytes()).hexdigest()
    rng["numpy"] = hashlib.sha1(np.random.get_state()[1].tobytes()).hexdigest()
    rng["python"] = hashlib.sha1(repr(random.getstate()).encode()).hexdigest()


def threads():  # the names of this process's threads (C++ threads included)
    return sorted(open("/proc/self/task/%s/comm" % t).read().strip() for t in os.listdir("/proc/self/task"))


DistributedSampler.__iter__ = spy_iter
Trainer.load_state = spy_load_state
before, error = threads(), None
try:
    trainer = run(TREE, TREE.parse_args(sys.argv[1:]))
    torch.save(trainer.model.state_dict(), os.path.join({out!r}, "rank%s.pt" % rank))
    after = threads()
except UserError as refused:  # counted while the error (as an uncaught one would) still holds its frames
    error, after = str(refused), threads()
with open(os.path.join({out!r}, "rank%s.json" % rank), "w") as f:
    json.dump({{"seen": seen, "rng": rng, "error": error, "threads": [before, after]}}, f)
"""


def two_processes(repo_root, tmp_path, argv, timeout=300):
    """Run the spying worker as ranks 0 and 1 of a Gloo group, set up through the environment variables
    torchrun sets.  Each process is started (and, on a hang, killed) here: a run that does not end within
    ``timeout`` s fails the test instead of blocking the suite."""
    worker = tmp_path / "worker.py"
    worker.write_text(DDP_WORKER.format(root=str(repo_root), out=str(tmp_path)))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    processes = []
    for rank in (0, 1):
        variables = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
                     "RANK": str(rank), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2"}
        with open(tmp_path / f"rank{rank}.err", "w") as err:
            processes.append(subprocess.Popen([sys.executable, str(worker)] + argv, stdout=subprocess.DEVNULL,
                                              stderr=err, env={**env(), **variables}))
    deadline = time.monotonic() + timeout
    try:
        for process in processes:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pytest.fail(f"the 2-process run did not finish within {timeout} s (hung)")
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    for rank, process in enumerate(processes):
        assert process.returncode == 0, (tmp_path / f"rank{rank}.err").read_text()[-3000:]
    spied = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rank in (0, 1):
        # The process group ended with the run: none of its threads (Gloo's work and TCP loops, rank 0's
        # store server) is left to meet interpreter exit, where one aborted a worker (SIGABRT).
        before, after = spied[rank]["threads"]
        assert set(after) <= set(before), (rank, before, after)
    return spied


def test_two_process_gloo_ddp_trains_one_model_and_writes_one_folder(repo_root, tmp_path):
    save = tmp_path / "runs"
    spied = two_processes(repo_root, tmp_path, TINY + ["--dir_save", str(save), "--save", "ddp",
                                                       "--epochs", "2"])
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    initial = option.parse_args(TINY)
    torch.manual_seed(initial.seed)
    fresh = TREE.build_model(initial).state_dict()
    for key, value in rank0.items():
        assert torch.equal(value, rank1[key]), key
    assert any(not torch.equal(v, fresh[k]) for k, v in rank0.items() if v.is_floating_point())
    assert [p.name for p in save.iterdir()] == ["ddp"]
    results = json.loads((save / "ddp" / "results.json").read_text())
    assert [r["epoch"] for r in results] == [1, 2]
    log = (save / "ddp" / "log.txt").read_text()
    assert log.count("[Epoch 2] test:") == 1
    assert "128 samples" in log  # the two shards of 64 together: every training sample once per epoch

    # Each epoch the two shards cover the training set once, in a new order (sampler.set_epoch).
    for epoch in range(2):
        assert sorted(spied[0]["seen"][epoch] + spied[1]["seen"][epoch]) == list(range(128))
    assert spied[0]["seen"][0] != spied[0]["seen"][1]

    # The metrics are those of the whole test set: a single process testing the saved model agrees.
    weights = str(save / "ddp" / "model" / "model_latest.pt")
    run(TREE, option.parse_args(TINY + ["--dir_save", str(tmp_path), "--save", "single", "--test_only",
                                        "--pretrained", weights]))
    expected = json.loads((tmp_path / "single" / "results.json").read_text())[0]["metrics"]
    assert results[-1]["metrics"] == pytest.approx(expected, rel=1e-6)


def test_two_processes_continue_a_one_process_run_on_a_one_image_test_set(repo_root, tmp_path):
    # Fewer test images than processes: rank 1 tests nothing and must not wait for rank 0 (no hang).
    # Resumed on more processes than it was saved with, the new rank draws its own random numbers.
    argv = TINY + ["--dir_save", str(tmp_path), "--n_train", "32", "--n_test", "1"]
    run(TREE, option.parse_args(argv + ["--save", "grow", "--epochs", "1"]))
    spied = two_processes(repo_root, tmp_path, argv + ["--load", "grow", "--epochs", "2"])
    results = json.loads((tmp_path / "grow" / "results.json").read_text())
    assert [r["epoch"] for r in results] == [1, 2]
    assert results[-1]["metrics"]["top1_error"] in (0.0, 100.0)  # one image
    for generator in ("torch", "numpy", "python"):
        assert spied[0]["rng"][generator] != spied[1]["rng"][generator], generator


def test_two_processes_refusing_a_training_state_end_the_process_group_too(repo_root, tmp_path):
    # The state is refused after the DistributedDataParallel wrapper exists (its frames hold it): the
    # group and its threads still end before the processes do.
    argv = TINY + ["--dir_save", str(tmp_path), "--n_train", "32", "--n_test", "2"]
    run(TREE, option.parse_args(argv + ["--save", "cut", "--epochs", "1"]))
    state_file = tmp_path / "cut" / "training_state.pt"
    state = load_checkpoint(state_file)
    state["model"].pop(next(iter(state["model"])))
    torch.save(state, state_file)
    spied = two_processes(repo_root, tmp_path, argv + ["--load", "cut", "--epochs", "2"])
    assert all("training state" in s["error"] or "saved model" in s["error"] for s in spied), spied
