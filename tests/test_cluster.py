"""Runs that survive a cluster (docs/cluster.md): a scheduler's notice (SIGTERM, SIGUSR1) stops a run after
the current step with a mid-epoch state, ``preempted`` in run.json and exit status 75; the same command
line continues it (also after a SIGKILL) to the weights and metrics of a run that was never stopped, on 1
and 2 processes; two torchrun agents relaunch a killed worker; processes that disagree on options or do
not share --dir_save are refused; the SLURM script requeues a preempted job.

Every subprocess is bounded by a timeout (a hang fails the test); faults are injected at a fixed step by a
wrapper of main.py, so every run is deterministic.
"""

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from threads import single_thread

from filter_basis.engine import cli_main, run
from filter_basis.engine.checkpoint import load_checkpoint
from filter_basis.engine.preemption import EXIT_PREEMPTED
from filter_basis.engine.record import read_run
from image_classification.tree import TREE

# 128 training images in batches of 16: 8 steps per epoch, on 1 process and on 2 (8 images each per step)
TINY = ["--model", "ResNet", "--depth", "8", "--data_train", "Synthetic", "--data_test", "Synthetic",
        "--n_train", "128", "--n_test", "32", "--batch_size", "16", "--cpu", "--n_threads", "0",
        "--epochs", "2", "--print_every", "1000"]
STEPS = 8
TIMEOUT = 420  # seconds any one launch may take on a loaded machine before it counts as hung

pytestmark = pytest.mark.usefixtures("one_thread")

# main.py with a fault injected at the STEP-th training step of rank RANK (first launch only: torchrun
# counts relaunches in TORCHELASTIC_RESTART_COUNT): FAULT=RANK:STEP:SIGNAL sends that signal to itself,
# FAULT=RANK:STEP:PAUSE creates the file FAULT_MARK and waits there until a notice arrives from outside.
WORKER = """
import os, signal, sys, time
sys.path.insert(0, {root!r})
from filter_basis.engine import cli_main, preemption
from image_classification.tree import TREE

fault = os.environ.get("FAULT", "")
if fault and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0":
    rank, step, what = fault.split(":")
    if os.environ.get("RANK", "0") == rank:
        train_step, count = TREE.trainer_class.train_step, [0]

        def faulty(self, batch):
            count[0] += 1
            if count[0] == int(step):
                if what == "PAUSE":
                    open(os.environ["FAULT_MARK"], "w").close()
                    deadline = time.monotonic() + 600
                    while preemption._notice["signal"] is None and time.monotonic() < deadline:
                        time.sleep(0.05)
                else:
                    os.kill(os.getpid(), getattr(signal, what))
            return train_step(self, batch)

        TREE.trainer_class.train_step = faulty
sys.exit(cli_main(TREE, sys.argv[1:]))
"""


def environment(**extra) -> dict:
    bin_dir = os.path.dirname(sys.executable)  # torchrun of this Python first on PATH
    return {**os.environ, "OMP_NUM_THREADS": "1", "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            **extra}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def worker(repo_root, folder) -> str:
    path = Path(folder) / "worker.py"
    if not path.exists():
        path.write_text(WORKER.format(root=str(repo_root)))
    return str(path)


def finish(processes, logs, timeout=TIMEOUT) -> list:
    """Wait for every process (killing all of them on a hang); their exit statuses."""
    deadline = time.monotonic() + timeout
    try:
        for process in processes:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pytest.fail(f"did not finish within {timeout} s (hung); stderr tails: "
                    + " | ".join(Path(log).read_text()[-1500:] for log in logs))
    finally:
        for process in processes:
            if process.poll() is None:
                for pid in descendants(process.pid):  # torchrun's workers run in sessions of their own
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    return [process.returncode for process in processes]


def descendants(pid: int) -> list:
    """The processes started by ``pid``, their children, and so on (Linux /proc)."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def start(command, log, env) -> subprocess.Popen:
    with open(log, "w") as err:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, env=env,
                                start_new_session=True)  # its own process group: killed whole on a hang


def two_processes(script, argvs, folder, tag, **extra) -> tuple:
    """Ranks 0 and 1 of a Gloo group set up through torchrun's environment variables (no agent); each rank
    gets its own argv.  Returns (exit statuses, stderr texts)."""
    port = free_port()
    logs = [Path(folder) / f"{tag}-rank{r}.err" for r in (0, 1)]
    processes = [start([sys.executable, script] + argvs[r], logs[r], environment(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(r), LOCAL_RANK="0",
        LOCAL_WORLD_SIZE="1", **extra)) for r in (0, 1)]
    codes = finish(processes, logs)
    return codes, [log.read_text() for log in logs]


def two_agents(repo_root, script, argvs, folder, tag, restarts, **extra) -> tuple:
    """Two torchrun agents on this machine standing for two nodes (scripts/cluster/torchrun_nodes.sh, c10d
    rendezvous, one worker each).  Returns (the agents' exit statuses, their stderr texts)."""
    recipe = str(repo_root / "scripts" / "cluster" / "torchrun_nodes.sh")
    variables = dict(NNODES="2", NPROC_PER_NODE="1", RDZV_ENDPOINT=f"127.0.0.1:{free_port()}",
                     RUN_ID=tag, MAX_RESTARTS=str(restarts), **extra)
    logs = [Path(folder) / f"{tag}-agent{n}.err" for n in (0, 1)]
    processes = [start(["bash", recipe, script] + argvs[n], logs[n], environment(**variables))
                 for n in (0, 1)]
    codes = finish(processes, logs)
    return codes, [log.read_text() for log in logs]


def outcome(folder) -> tuple:
    """What must not depend on interruptions: every epoch's metrics, loss and lr, and the final weights."""
    results = [(r["epoch"], r["metrics"], r["train_loss"], r["lr"])
               for r in json.loads((Path(folder) / "results.json").read_text())]
    return results, load_checkpoint(Path(folder) / "model" / "model_latest.pt")


def assert_same(folder, reference) -> None:
    results, weights = outcome(folder)
    expected_results, expected = reference
    assert results == expected_results
    assert weights.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(weights[key], value), key


def files(folder) -> dict:
    """Every file under ``folder`` with its size and modification time (to see that nothing was written)."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in Path(folder).rglob("*") if p.is_file()}


class signal_at_step:
    """In this process: send ``sig`` to itself at the ``step``-th call of the hook ``name`` of the trainer."""

    def __init__(self, monkeypatch, sig, step, name="train_step"):
        original, count = getattr(TREE.trainer_class, name), [0]

        def hook(trainer, *args):
            count[0] += 1
            if count[0] == step:
                # without the run's handler the signal would end the test process itself
                handler = signal.getsignal(sig)
                assert handler not in (signal.SIG_DFL, signal.SIG_IGN, None), f"no {sig.name} handler"
                os.kill(os.getpid(), sig)
            return original(trainer, *args)

        monkeypatch.setattr(TREE.trainer_class, name, hook)


@pytest.fixture(scope="module")
def reference_one(tmp_path_factory):
    """The uninterrupted one-process run (device batches)."""
    folder = tmp_path_factory.mktemp("ref1")
    with single_thread():
        run(TREE, TREE.parse_args(TINY + ["--dir_save", str(folder), "--save", "whole"]))
    return outcome(folder / "whole")


@pytest.fixture(scope="module")
def reference_two(tmp_path_factory, repo_root):
    """The uninterrupted two-process run (the same global batch of 16)."""
    folder = tmp_path_factory.mktemp("ref2")
    argv = TINY + ["--dir_save", str(folder), "--save", "whole"]
    codes, errors = two_processes(worker(repo_root, folder), [argv, argv], folder, "ref")
    assert codes == [0, 0], errors
    return outcome(folder / "whole")


def preempted_state(folder, epoch, batches, processes=1) -> dict:
    """The mid-epoch training state a preempted run left, checked; ``batches`` None: an epoch-end state."""
    state = load_checkpoint(Path(folder) / "training_state.pt")
    assert state["epoch"] == epoch - (batches is not None)
    if batches is None:
        assert "partial" not in state
    else:
        assert (state["partial"]["epoch"], state["partial"]["batches"]) == (epoch, batches)
        assert len(state["partial"]["ranks"]) == len(state["rng"]) == processes
    assert read_run(folder).status == "preempted"
    return state


@pytest.mark.parametrize("batches", ["device", "loader"])
def test_notice_mid_epoch_saves_a_state_exits_75_and_the_same_command_continues_exactly(
        tmp_path, monkeypatch, capsys, reference_one, batches):
    # The device batches (augmentation generator in the loader) and a DataLoader with --n_threads 0
    # (augmentation from the global generator, whose state the iterator must not disturb on resume).
    tree = TREE if batches == "device" else dataclasses.replace(TREE, device_loader=None)
    argv = TINY + ["--dir_save", str(tmp_path), "--save", "run", "--auto_resume"]
    reference = reference_one
    if batches == "loader":
        run(tree, tree.parse_args(TINY + ["--dir_save", str(tmp_path), "--save", "ref"]))
        reference = outcome(tmp_path / "ref")
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGUSR1)
    notice = signal.SIGTERM if batches == "device" else signal.SIGUSR1
    with monkeypatch.context() as patch:
        signal_at_step(patch, notice, STEPS + 3)
        assert cli_main(tree, argv) == EXIT_PREEMPTED
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"preempted: [Epoch 2] {notice.name}: stopped after batch 3 of {STEPS}; training state "
                   f"saved in {tmp_path / 'run'}: the same command with --auto_resume (or --load run) "
                   f"continues it (exit status 75)"]
    preempted_state(tmp_path / "run", 2, 3)
    assert [r["epoch"] for r in json.loads((tmp_path / "run" / "results.json").read_text())] == [1]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGUSR1)) == handlers  # put back

    if batches == "device":  # a changed option is refused on auto-resume, nothing written
        before = files(tmp_path / "run")
        assert cli_main(tree, argv + ["--lr", "0.2"]) == 2
        assert "--lr 0.2 (saved 0.1)" in capsys.readouterr().err
        assert files(tmp_path / "run") == before

    assert cli_main(tree, argv) == 0
    assert_same(tmp_path / "run", reference)
    assert read_run(tmp_path / "run").status == "finished"


def test_notice_during_evaluation_stops_at_the_epoch_end(tmp_path, monkeypatch, reference_one):
    argv = TINY + ["--dir_save", str(tmp_path), "--save", "run", "--auto_resume"]
    with monkeypatch.context() as patch:
        signal_at_step(patch, signal.SIGTERM, 1, name="test_step")
        assert cli_main(TREE, argv) == EXIT_PREEMPTED
    preempted_state(tmp_path / "run", 1, None)
    assert cli_main(TREE, argv) == 0
    assert_same(tmp_path / "run", reference_one)


def test_the_same_command_line_continues_after_sigkill(repo_root, tmp_path, reference_one):
    # First start: killed (SIGKILL, no notice) in epoch 2 after --save_every_steps saved batch 2.  The same
    # command line then continues from that mid-epoch state.
    argv = TINY + ["--dir_save", str(tmp_path), "--save", "run", "--auto_resume", "--save_every_steps", "2"]
    log = tmp_path / "first.err"
    first = start([sys.executable, worker(repo_root, tmp_path)] + argv, log,
                  environment(FAULT=f"0:{STEPS + 3}:SIGKILL"))
    assert finish([first], [log]) == [-signal.SIGKILL]
    state = load_checkpoint(tmp_path / "run" / "training_state.pt")
    assert (state["epoch"], state["partial"]["epoch"], state["partial"]["batches"]) == (1, 2, 2)
    assert cli_main(TREE, argv) == 0
    assert_same(tmp_path / "run", reference_one)
    text = (tmp_path / "run" / "log.txt").read_text()
    assert text.count(" starting ") == 1 and text.count(" continuing ") == 1


def test_sigterm_to_one_of_two_processes_stops_both_and_they_continue_exactly(repo_root, tmp_path, capsys,
                                                                             reference_two):
    # Only rank 1 receives the notice: the ranks agree after every step, so both stop after batch 3.
    argv = TINY + ["--dir_save", str(tmp_path), "--save", "run", "--auto_resume"]
    script = worker(repo_root, tmp_path)
    codes, errors = two_processes(script, [argv, argv], tmp_path, "cut", FAULT=f"1:{STEPS + 3}:SIGTERM")
    assert codes == [EXIT_PREEMPTED, EXIT_PREEMPTED], errors
    assert all(f"preempted: [Epoch 2] SIGTERM: stopped after batch 3 of {STEPS}" in e for e in errors)
    preempted_state(tmp_path / "run", 2, 3, processes=2)
    log = (tmp_path / "run" / "log.txt").read_text()
    assert log.count(" starting ") == 1 and log.count("SIGTERM: stopped") == 1  # rank 0 alone writes

    # one process cannot continue a state two saved mid-epoch: refused, nothing written
    before = files(tmp_path / "run")
    assert cli_main(TREE, argv) == 2
    assert "saved in the middle of epoch 2 by 2 process(es); continue it with 2" in capsys.readouterr().err
    assert files(tmp_path / "run") == before

    codes, errors = two_processes(script, [argv, argv], tmp_path, "again")
    assert codes == [0, 0], errors
    assert_same(tmp_path / "run", reference_two)


def test_two_torchrun_agents_relaunch_a_killed_worker_and_finish_exactly(repo_root, tmp_path, reference_two):
    # torchrun --nnodes 2 --max-restarts 2 (scripts/cluster/torchrun_nodes.sh): the worker of rank 1 is
    # SIGKILLed in epoch 2; both agents relaunch their workers, which continue from the state saved after
    # batch 2 (--save_every_steps 2) to the metrics and weights of the uninterrupted two-process run.  One
    # restart is needed; the relaunched workers must connect at once (with torchrun's shared store they
    # could read the peers' addresses of the round before and fail to connect until the restarts ran out).
    argv = TINY + ["--dir_save", str(tmp_path), "--save", "run", "--save_every_steps", "2"]
    codes, errors = two_agents(repo_root, worker(repo_root, tmp_path), [argv, argv], tmp_path, "elastic", 2,
                               FAULT=f"1:{STEPS + 3}:SIGKILL")
    assert codes == [0, 0], errors
    assert not any("connectFullMesh" in e for e in errors), errors
    assert_same(tmp_path / "run", reference_two)
    log = (tmp_path / "run" / "log.txt").read_text()
    assert log.count(" starting ") == 1 and log.count(" continuing ") == 1
    assert read_run(tmp_path / "run").status == "finished"


def test_nodes_that_do_not_share_dir_save_are_refused(repo_root, tmp_path):
    # Two agents whose --dir_save are different folders: refused on every node before anything is written.
    script = worker(repo_root, tmp_path)
    argvs = [TINY + ["--dir_save", str(tmp_path / f"node{n}"), "--save", "run"] for n in (0, 1)]
    codes, errors = two_agents(repo_root, script, argvs, tmp_path, "unshared", 0,
                               FILTER_BASIS_SHARED_WAIT="1")
    assert codes[0] != 0 and codes[1] != 0
    assert any("is not the folder rank 0 writes to" in e and "shared file system" in e for e in errors), \
        errors
    left = [p for n in (0, 1) if (tmp_path / f"node{n}").exists() for p in (tmp_path / f"node{n}").iterdir()]
    assert left == []  # no experiment folder, no token file, on either node


def test_processes_given_different_options_are_refused(repo_root, tmp_path):
    argv = TINY + ["--dir_save", str(tmp_path), "--save", "run"]
    codes, errors = two_processes(worker(repo_root, tmp_path), [argv, argv + ["--lr", "0.2"]], tmp_path, "lr")
    assert codes == [2, 2], errors
    assert all("error: the processes of this run were given different options (lr; --lr: rank 0: 0.1, "
               "rank 1: 0.2)" in e for e in errors)
    assert not (tmp_path / "run").exists()


def test_slurm_script_requeues_a_preempted_job_and_the_requeued_job_finishes(repo_root, tmp_path,
                                                                           reference_one):
    # No scheduler here: srun and scontrol are stand-ins on PATH (srun runs its command, scontrol names
    # this machine and records a requeue); SLURM's notice is a SIGTERM to the step, here to torchrun.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text('#!/usr/bin/env bash\necho $$ > "$FAKE_SLURM/srun.pid"\n'
                               'while [[ $# -gt 0 && $1 == -* ]]; do shift; done\nexec "$@"\n')
    (fake / "scontrol").write_text('#!/usr/bin/env bash\nif [[ $1 == show ]]; then echo 127.0.0.1; '
                                   'else echo "$*" >> "$FAKE_SLURM/scontrol.log"; fi\n')
    for tool in ("srun", "scontrol"):
        (fake / tool).chmod(0o755)
    script = str(repo_root / "scripts" / "cluster" / "slurm_train.sh")
    argv = TINY + ["--dir_save", str(tmp_path), "--save", "run"]
    base = environment(FAKE_SLURM=str(tmp_path), SLURM_JOB_ID="4242", SLURM_NNODES="1",
                       SLURM_JOB_NODELIST="node1", SLURM_SUBMIT_DIR=str(repo_root),
                       MASTER_PORT=str(free_port()), PYTHON=sys.executable)
    base["PATH"] = str(fake) + os.pathsep + base["PATH"]
    mark = tmp_path / "paused"
    command = ["bash", script, worker(repo_root, tmp_path)] + argv
    job = start(command, tmp_path / "job1.err",
                {**base, "FAULT": f"0:{STEPS + 3}:PAUSE", "FAULT_MARK": str(mark)})
    deadline = time.monotonic() + TIMEOUT
    while not mark.exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mark.exists(), (tmp_path / "job1.err").read_text()[-3000:]
    os.kill(int((tmp_path / "srun.pid").read_text()), signal.SIGTERM)  # to torchrun, which forwards it
    assert finish([job], [tmp_path / "job1.err"]) == [0]
    assert (tmp_path / "scontrol.log").read_text() == "requeue 4242\n"
    preempted_state(tmp_path / "run", 2, 3)

    job = start(command, tmp_path / "job2.err", base)  # the requeued job: the same script and command line
    assert finish([job], [tmp_path / "job2.err"]) == [0], (tmp_path / "job2.err").read_text()[-3000:]
    assert (tmp_path / "scontrol.log").read_text() == "requeue 4242\n"  # finished: not requeued again
    assert read_run(tmp_path / "run").status == "finished"
    assert_same(tmp_path / "run", reference_one)


def test_both_recipes_give_every_rendezvous_round_a_fresh_worker_store(repo_root, tmp_path):
    # torchrun's default keeps one store server for all rounds: workers relaunched after a failure can
    # read their peers' Gloo addresses of the round before and fail to connect until the restarts run out.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "torchrun").write_text('#!/usr/bin/env bash\necho "$TORCH_DISABLE_SHARE_RDZV_TCP_STORE $*" '
                                   '>> "$FAKE_LOG"\n')
    (fake / "srun").write_text('#!/usr/bin/env bash\nwhile [[ $1 == -* ]]; do shift; done\nexec "$@"\n')
    (fake / "scontrol").write_text("#!/usr/bin/env bash\necho 127.0.0.1\n")
    for tool in ("torchrun", "srun", "scontrol"):
        (fake / tool).chmod(0o755)
    log = tmp_path / "torchrun.log"
    env = environment(FAKE_LOG=str(log), NNODES="2", RDZV_ENDPOINT="127.0.0.1:29400", RUN_ID="r",
                      SLURM_JOB_ID="7", SLURM_NNODES="2", SLURM_JOB_NODELIST="n1", PYTHON=sys.executable)
    env["PATH"] = str(fake) + os.pathsep + env["PATH"]
    env.pop("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", None)
    argv = ["image_classification/main.py", "--dir_save", str(tmp_path), "--save", "run"]
    for recipe in ("torchrun_nodes.sh", "slurm_train.sh"):
        subprocess.run(["bash", str(repo_root / "scripts" / "cluster" / recipe), *argv], env=env,
                       capture_output=True, text=True, timeout=120)
    lines = log.read_text().splitlines()
    assert len(lines) == 2 and all(line.startswith("1 --nnodes=2 ") for line in lines), lines
    assert all("--rdzv-backend=c10d" in line and line.endswith("--save run --auto_resume") for line in lines)
