"""The quickstart (``scripts/quickstart.sh``): the paper's comparison on data that ships with the install.

Classification on Digits (ResNet-20 and its Basis, Factor and Group versions) and x2 super-resolution
trained on Photos and tested on Photos + Set5 (a small EDSR, its Basis and Factor versions, and
Bicubic).  Every run is an ordinary ``main.py`` command (printed before it starts) whose experiment
folder lands under ``experiment/quickstart/<task>/<run>``; then ``filter_basis.collect`` prints and
writes a table and a plot per task, and ``quickstart_figure.py`` draws the SR comparison picture.

A finished run is reused when the script runs again with the same settings, an interrupted one continues
from its last epoch; a run of its own with other settings is redone (``--reset`` redoes all).  It never
replaces a folder it did not make (docs/results.md, "The tools' rules").  The device is the trees' choice
(CUDA when present).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from quickstart_figure import comparison_figure  # noqa: E402

from filter_basis import collect, reuse  # noqa: E402
from filter_basis.engine.record import NotAnExperiment, read_run  # noqa: E402
from filter_basis.errors import UserError  # noqa: E402

CLASSIFICATION, SUPER_RESOLUTION = collect.CLASSIFICATION, collect.SUPER_RESOLUTION
MAIN = {CLASSIFICATION: ROOT / "image_classification" / "main.py",
        SUPER_RESOLUTION: ROOT / "super_resolution" / "main.py"}

# Settings chosen to show the method within the time budget on 2 CPU cores (docs/results.md).  No
# --template: the ResNet template would set --print_every 50 over ours (its weight decay is the default).
CLS_EPOCHS, CLS_DECAY = 8, "step-5-7"  # lr 0.1, then 0.01 from epoch 6, 0.001 in epoch 8
CLS = ["--depth", "20", "--data_train", "Digits", "--data_test", "Digits", "--batch_size", "32",
       "--print_every", "1000"]
SR_EPOCHS, SR_DECAY = 3, "step_2"  # lr 1e-3, then 2e-4 in epoch 3; an epoch is 260 batches
SR = ["--scale", "2", "--n_resblocks", "8", "--n_feats", "32", "--res_scale", "0.1", "--data_train", "Photos",
      "--data_test", "Photos+Set5", "--patch_size", "64", "--batch_size", "16", "--lr", "1e-3",
      "--gamma", "0.2", "--test_every", "260", "--print_every", "1000", "--save_results"]
SR_TEST = ["--scale", "2", "--data_test", "Photos+Set5", "--save_results"]
# --smoke: these replace the values above (one short epoch on few images: checks the pipeline only)
SMOKE_CLS = ["--n_train", "64", "--n_test", "50"]
SMOKE_SR = ["--patch_size", "48", "--batch_size", "4", "--test_every", "2", "--data_test", "Set5"]
SMOKE_SR_TEST = ["--data_test", "Set5"]
# rough seconds per smoke run on a quiet 2-core machine (mostly start-up and data preparation; not measured
# run by run): the first ETA of a smoke run; after the first run the ETA scales by this machine's speed
SMOKE_ESTIMATE_S = {"classification": 12, "Bicubic": 8, "super_resolution": 15}
DEFAULT_OUT = {False: Path("experiment") / "quickstart", True: Path("experiment") / "quickstart_smoke"}


def merged(*parts: list) -> list:
    """One command line from option lists: a later value of an option replaces the earlier one in its
    place, so no option is given twice (``--batch_size 16 ... --batch_size 4`` would contradict itself)."""
    options: dict = {}
    for part in parts:
        flag = None
        for token in part:
            if token.startswith("--"):
                flag = token
                options[flag] = []
            elif flag is None:
                raise ValueError(f"option value {token!r} without an option in {part}")
            else:
                options[flag].append(token)
    return [token for flag, values in options.items() for token in (flag, *values)]


@dataclass
class Run:
    """One ``main.py`` command; ``estimate_s``: its wall time on 2 idle CPU cores, estimated from the CPU time
    it took with one thread (divided by 1.6), for the first ETA before this machine's speed is known."""

    task: str
    name: str
    options: list
    estimate_s: float
    test_only: bool = False
    epochs: int = 0


def plan(smoke: bool = False) -> list:
    """The runs in order: classification first, then SR with Bicubic first (it also builds Photos)."""
    cls_epochs, sr_epochs = (1, 1) if smoke else (CLS_EPOCHS, SR_EPOCHS)

    def cls(model: list, estimate: float) -> Run:
        options = merged(model, CLS, ["--epochs", str(cls_epochs), "--decay", CLS_DECAY],
                         SMOKE_CLS if smoke else [])
        return Run(CLASSIFICATION, model[1], options, SMOKE_ESTIMATE_S[CLASSIFICATION] if smoke else estimate,
                   epochs=cls_epochs)

    def sr(model: list, estimate: float) -> Run:
        options = merged(model, SR, ["--epochs", str(sr_epochs), "--decay_type", SR_DECAY],
                         SMOKE_SR if smoke else [])
        return Run(SUPER_RESOLUTION, model[1], options,
                   SMOKE_ESTIMATE_S[SUPER_RESOLUTION] if smoke else estimate, epochs=sr_epochs)

    bicubic = merged(["--model", "Bicubic", "--test_only"], SR_TEST, SMOKE_SR_TEST if smoke else [])
    return [
        cls(["--model", "ResNet"], 45),
        cls(["--model", "ResNet_Basis", "--k_size2", "1"], 75),
        cls(["--model", "ResNet_Factor"], 60),
        cls(["--model", "ResNet_Group", "--group_size", "8"], 58),
        Run(SUPER_RESOLUTION, "Bicubic", bicubic, SMOKE_ESTIMATE_S["Bicubic"] if smoke else 8,
            test_only=True),
        sr(["--model", "EDSR"], 155),
        sr(["--model", "EDSR_Basis", "--basis_size", "32", "--n_basis", "8"], 155),
        sr(["--model", "EDSR_Factor", "--sic_layer", "1"], 135),
    ]


def loader_threads() -> int:
    """Data-loader workers: none on a machine of 2 cores or fewer (they would take a core from training)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if cores <= 2 else min(4, cores // 2)


TOOL = "quickstart"  # the made_by of its runs: the only runs it replaces unasked
TREES = {CLASSIFICATION: "image_classification", SUPER_RESOLUTION: "super_resolution"}


def folder(run: Run, out: Path) -> Path:
    return out / run.task / run.name


def command(run: Run, out: Path, action: str) -> list:
    """The ``main.py`` command line for ``action``: ``replace`` starts it afresh (``--reset``), ``start``
    and ``continue`` are one command (``--auto_resume``: the engine starts or continues the folder)."""
    where = ["--dir_save", str(out / run.task), "--save", run.name, "--made_by", TOOL]
    if action == reuse.REPLACE:
        where.append("--reset")
    elif not run.test_only:
        where.append("--auto_resume")
    threads = ["--n_threads", str(loader_threads())]
    return [sys.executable, str(MAIN[run.task])] + run.options + threads + where


def shown(cmd: list) -> str:
    """The command as a user would type it in the repository root."""
    parts = ["python"] + [os.path.relpath(p, ROOT) if str(p).startswith(str(ROOT) + os.sep) else str(p)
                          for p in cmd[1:]]
    return " ".join(shlex.quote(part) for part in parts)


def decide(run: Run, out: Path, reset: bool) -> reuse.Decision:
    """What to do with the run's folder (the tools' rules of filter_basis.reuse, docs/results.md): reuse a
    finished run made with the same options, continue an interrupted one, start an absent one; redo
    (replace) only the quickstart's own runs -- when their settings changed, when they cannot be
    continued, or when the user asked (--reset).  Any other folder is refused (:class:`reuse.Refused`)."""
    where = folder(run, out)
    if reset:
        return reuse.may_replace(where, TOOL, asked=True)
    try:
        return reuse.decide(where, TOOL, TREES[run.task], command(run, out, reuse.START)[2:])
    except reuse.Refused as refusal:
        if refusal.record is not None and refusal.record.made_by == TOOL:
            return reuse.Decision(reuse.REPLACE, refusal.record)
        raise


def done(run: Run, out: Path) -> bool:
    """Whether the run's folder holds its last evaluation (the test, or the final epoch), by its record."""
    try:
        record = read_run(folder(run, out))
    except NotAnExperiment:
        return False
    return bool(record.results) if run.test_only else record.epochs_done >= run.epochs


def trained_seconds(record) -> float:
    return sum(r.get("time_s", 0.0) for r in record.results if "train_loss" in r)


def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """The progress line: which run, the time each finished run took, the time left.

    The time left is the remaining runs' estimates scaled by how this machine did on the runs so far.
    """

    def __init__(self, runs: list, write=print):
        self.runs, self.write = runs, write
        self.start = time.monotonic()
        self.done: list = []  # (run, seconds, reused)

    def left(self) -> float:
        timed = [(r, s) for r, s, reused in self.done if not reused]
        speed = sum(s for _, s in timed) / sum(r.estimate_s for r, _ in timed) if timed else 1.0
        finished_runs = {id(r) for r, _, _ in self.done}
        return speed * sum(r.estimate_s for r in self.runs if id(r) not in finished_runs)

    def starting(self, run: Run, action: str) -> None:
        number = len(self.done) + 1
        took = ", ".join(f"{r.name} {'reused' if reused else clock(s)}" for r, s, reused in self.done)
        self.write(f"[quickstart {number}/{len(self.runs)}] {action} {run.task} {run.name}"
                   f" | elapsed {clock(time.monotonic() - self.start)}, about {clock(self.left())} left"
                   + (f" | finished: {took}" if took else ""))

    def finished(self, run: Run, seconds: float, reused: bool = False) -> None:
        self.done.append((run, seconds, reused))


def execute(cmd: list, log, echo=print) -> int:
    """Run ``cmd``; its whole output goes to ``log``, its test lines (one per evaluation) to the terminal."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PYTHONUNBUFFERED="1")
    with subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, bufsize=1) as child:
        for line in child.stdout:
            log.write(line)
            if " test: " in line or "error" in line.lower():
                echo("    " + line.rstrip())
    return child.returncode


def run_all(runs: list, out: Path, reset: bool, runner=execute, write=print) -> None:
    """Run (or reuse) every run in order; stop with the run's exit status if one fails.  Every folder is
    decided before the first run starts: a refused one stops the quickstart before it changes anything."""
    decisions = [decide(run, out, reset) for run in runs]
    progress = Progress(runs, write)
    for run, decision in zip(runs, decisions):
        action = decision.action
        progress.starting(run, {reuse.FINISHED: "reusing", reuse.CONTINUE: "continuing",
                                reuse.START: "running", reuse.REPLACE: "redoing"}[action])
        if action == reuse.FINISHED:
            progress.finished(run, trained_seconds(decision.record), reused=True)
            continue
        cmd = command(run, out, action)
        write("    " + shown(cmd))
        log_path = out / "logs" / f"{run.task}_{run.name}.txt"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with open(log_path, "a", buffering=1) as log:
            status = runner(cmd, log)
        if status != 0:
            write(f"[quickstart] {run.task} {run.name} failed (exit status {status}); its output: {log_path}")
            sys.exit(status)
        seconds = time.monotonic() - started
        progress.finished(run, seconds)
    write(f"[quickstart] all {len(runs)} runs finished in {clock(time.monotonic() - progress.start)}")


def report(runs: list, out: Path, dir_data: Path = ROOT / "datasets", write=print,
           smoke: bool = False) -> dict:
    """Tables (printed, and written as ``<task>.md/.csv/.png`` under ``out``), the SR picture, the checks."""
    tables = {}
    for task in (CLASSIFICATION, SUPER_RESOLUTION):
        folders = [folder(r, out) for r in runs if r.task == task and done(r, out)]
        if not folders:
            continue
        table = collect.collect(folders, out, name=task, warn=write)[task]
        tables[task] = table
        write(f"\n{task} ({out / (task + '.md')}, plot {task}.png):\n\n{collect.to_markdown(table)}")
    names = [r.name for r in runs if r.task == SUPER_RESOLUTION and done(r, out)]
    outputs = {name: out / SUPER_RESOLUTION / name / "results" for name in ("Bicubic", "EDSR", "EDSR_Basis")}
    if {"Bicubic", "EDSR", "EDSR_Basis"} <= set(names) and all(
            (folder / "Set5_x2" / "butterfly_SR.png").is_file() for folder in outputs.values()):
        comparison_figure(dir_data, outputs, out / "sr_comparison.png", scale=2, set_name="Set5",
                          image="butterfly")
        write(f"SR picture: {out / 'sr_comparison.png'}")
    for line in checks(tables, smoke):
        write(line)
    return tables


def _row(table, model: str) -> dict:
    return next((row for row in table.rows if row["model"] == model), {})


SMOKE_NOTE = ("smoke run: one short epoch on a few images checks that every command runs; its numbers mean "
              "nothing and are not judged (run without --smoke for the comparison)")


def checks(tables: dict, smoke: bool = False) -> list:
    """Does the method show? Digits: baseline and Basis <= 3% top-1 error; Set5 x2: Basis >= Bicubic + 0.5.

    After ``--smoke`` the values are shown but not judged (one line says why)."""
    lines = []

    def verdict(ok: bool) -> str:
        return "not judged (smoke run)" if smoke else ("ok" if ok else "NOT reached")

    cls = tables.get(CLASSIFICATION)
    if cls:
        for model in ("ResNet", "ResNet_Basis"):
            error = _row(cls, model).get("top-1 error % (last)")
            if error is not None:
                lines.append(f"check: Digits {model} top-1 error {error:.2f}% (target <= 3%): "
                             f"{verdict(error <= 3.0)}")
    sr = tables.get(SUPER_RESOLUTION)
    if sr:
        basis = _row(sr, "EDSR_Basis").get("Set5_x2 PSNR (last)")
        bicubic = _row(sr, "Bicubic").get("Set5_x2 PSNR (last)")
        if basis is not None and bicubic is not None:
            gain = basis - bicubic
            lines.append(f"check: Set5 x2 EDSR_Basis {basis:.2f} dB vs Bicubic {bicubic:.2f} dB, "
                         f"{gain:+.2f} dB (target >= +0.5 dB): {verdict(gain >= 0.5)}")
    if smoke and lines:
        lines.insert(0, SMOKE_NOTE)
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/quickstart.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("--reset", action="store_true",
                        help="redo every run instead of reusing finished ones")
    parser.add_argument("--out", default=None,
                        help="folder for the runs, tables and pictures, relative to the current folder "
                             "(default: experiment/quickstart of the repository; with --smoke "
                             "experiment/quickstart_smoke)")
    parser.add_argument("--only", default="", metavar="NAME[,NAME]",
                        help="run (or reuse) only these runs, e.g. ResNet_Basis,EDSR_Basis; tables from all "
                             "runs that have results")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny settings (one short epoch, few images) in their own folder: checks "
                             "that every command runs; the numbers mean nothing")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve() if args.out else ROOT / DEFAULT_OUT[args.smoke]
    runs = plan(args.smoke)
    only = [name for name in args.only.split(",") if name]
    unknown = sorted(set(only) - {r.name for r in runs})
    if unknown:
        parser.error(f"--only {','.join(unknown)}: not a quickstart run; the runs are "
                     f"{', '.join(r.name for r in runs)}")
    try:
        run_all([r for r in runs if not only or r.name in only], out, args.reset)
    except UserError as refusal:  # a folder it must not touch: one line, nothing changed
        print(f"error: {refusal}", file=sys.stderr)
        return refusal.exit_code
    except KeyboardInterrupt:
        print("\n[quickstart] stopped (Ctrl-C); finished epochs are kept: run the same command again to "
              "continue", file=sys.stderr)
        return 130
    report(runs, out, smoke=args.smoke)
    return 0


if __name__ == "__main__":
    sys.exit(main())
