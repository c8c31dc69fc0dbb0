"""The driver behind scripts/paper/*.sh: reproduce, evaluate and count the paper's Tables 2, 3 and 5.

    python scripts/paper/run.py train {table5,table2,table3}   # train, test, print the table
    python scripts/paper/run.py evaluate MODEL_DIR             # test released or own checkpoints
    python scripts/paper/run.py params                         # "#Parameters" columns of all tables

The configurations are the rows of ``configs.tsv`` beside this file.  Settings come from environment
variables (see ``--help``).  Every run is one ``main.py`` process, so a script killed at any moment picks
up on the next call: a configuration finished with the same options (its record reached --epochs) is
skipped, an interrupted one continues (``--auto_resume``), one made with other options is refused; the
scripts never remove a run (docs/results.md, "The tools' rules").
"""

from __future__ import annotations

import contextlib
import csv
import importlib
import io
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from filter_basis import reuse  # noqa: E402
from filter_basis.engine import find_tree  # noqa: E402
from filter_basis.engine.options import COMMON_DEFAULTS  # noqa: E402
from filter_basis.engine.record import folder_state  # noqa: E402
from filter_basis.errors import OptionError, RunStopped, report_errors  # noqa: E402

CONFIGS = Path(__file__).with_name("configs.tsv")
TABLES = {"table5": "5", "table2": "2", "table3": "3"}
TABLE_TITLES = {"5": "Table 5: CIFAR-10, top-1 error (%)", "2": "Table 2: x4 super-resolution, PSNR (dB)",
                "3": "Table 3: EDSR (32 blocks, 256 features), PSNR (dB) at x2 / x3 / x4"}
SCRIPTS = {"table5": "table5_cifar10.sh", "table2": "table2_sr_light.sh", "table3": "table3_edsr.sh",
           "evaluate": "evaluate.sh", "params": "params.sh"}
PRETRAINED = {"image_classification": "--pretrained", "super_resolution": "--pre_train"}
TOOL = "paper"  # the made_by of the runs the scripts start (evaluate.sh: "evaluate")
DEFAULT_EPOCHS = COMMON_DEFAULTS["epochs"]  # both trees' --epochs default


# ------------------------------------------------------------------------------------- configurations
@dataclass
class Config:
    """One row of configs.tsv."""

    name: str
    table: str
    tree: str
    source: str
    init_from: str
    train: List[str]
    test: List[str]
    official_file: str
    paper_metrics: Dict[str, float]
    paper_params: str
    paper_compression: str
    note: str

    @property
    def runnable(self) -> bool:
        return self.source != "quoted"


def load_configs(path: Path = CONFIGS) -> List[Config]:
    """The rows of configs.tsv (comment lines start with '#')."""
    with open(path, newline="") as f:
        lines = [line for line in f if not line.startswith("#")]
    configs = []
    for row in csv.DictReader(lines, delimiter="\t"):
        metrics = dict(item.split("=") for item in row["paper_metrics"].split())
        configs.append(Config(row["name"], row["table"], row["tree"], row["source"], row["init_from"],
                              shlex.split(row["train"]), shlex.split(row["test"]), row["official_file"],
                              {k: float(v) for k, v in metrics.items()}, row["paper_params"],
                              row["paper_compression"], row["note"]))
    return configs


# -------------------------------------------------------------------------------------------- settings
VARIABLES = [
    ("DIR_DATA", "datasets/", "data sets root (--dir_data); relative to the repository root by default"),
    ("DIR_SAVE", "experiment/paper/", "runs: DIR_SAVE/<configuration>/, their tests: DIR_SAVE/test/"),
    ("GPUS", "0", "CUDA devices, e.g. 0,1: one run per device in parallel; empty (or no CUDA): the CPU"),
    ("DISTRIBUTED", "0", "1: one torchrun run over all GPUS at a time instead of one run per device"),
    ("EPOCHS", "", "epochs of every training run (empty: the recipe's, 300 or 400)"),
    ("ONLY", "", "comma list of configurations to run (empty: all of the script's)"),
    ("EXTRA", "", "options appended to every main.py line, e.g. '--n_train 8 --test_every 2' (smoke run)"),
    ("PYTHON", ".venv (made by scripts/env.sh)", "an interpreter that has the requirements, used as it is"),
]


@dataclass
class Settings:
    dir_data: Path
    dir_save: Path
    gpus: List[str]
    distributed: bool
    epochs: Optional[int]
    only: List[str]
    extra: List[str]
    slots: List[str] = field(default_factory=list)  # filled by choose_devices()

    @classmethod
    def from_env(cls, env=os.environ) -> Settings:
        def path(name, default):
            value = env.get(name, "")
            return (Path(value).resolve() if value else ROOT / default)

        epochs = env.get("EPOCHS", "").strip()
        if epochs and not (epochs.isdigit() and int(epochs) >= 1):
            raise OptionError(f"EPOCHS={epochs!r} is not accepted; expected an integer >= 1 (or empty)")
        distributed = env.get("DISTRIBUTED", "0").strip() or "0"
        if distributed not in ("0", "1"):
            raise OptionError(f"DISTRIBUTED={distributed!r} is not accepted; expected 0 or 1")
        gpus = [g.strip() for g in env.get("GPUS", "0").split(",") if g.strip()]
        only = [name.strip() for name in env.get("ONLY", "").split(",") if name.strip()]
        extra = shlex.split(env.get("EXTRA", ""))
        return cls(path("DIR_DATA", "datasets"), path("DIR_SAVE", "experiment/paper"), gpus,
                   distributed == "1", int(epochs) if epochs else None, only, extra)

    def choose_devices(self) -> None:
        """Slots runs are started on: the CPU, each GPU, or all GPUs together (DISTRIBUTED=1)."""
        cuda = False
        if self.gpus:
            import torch

            cuda = torch.cuda.is_available()
            if not cuda:
                print(f"note: GPUS={','.join(self.gpus)} but CUDA is not available; running on the CPU")
        if not cuda:
            self.slots = ["cpu"]
        elif self.distributed:
            self.slots = [",".join(self.gpus)]
        else:
            self.slots = list(self.gpus)


def usage(command: str, configs: List[Config]) -> str:
    script = f"scripts/paper/{SCRIPTS[command]}"
    what = {
        "table5": "trains the 12 CIFAR-10 configurations of Table 5, tests each best model, prints the table",
        "table2": "trains the 10 x4 SRResNet / EDSR-8-128 configurations of Table 2, tests each best model "
                  "on Set5, Set14, B100, Urban100 and DIV2K, prints the table",
        "table3": "trains the 12 EDSR configurations of Table 3 (x3 and x4 start from the x2 model), tests "
                  "them like Table 2, prints the table",
        "evaluate": "tests MODEL_DIR's checkpoints (the official release files, or "
                    "MODEL_DIR/<configuration>/model/model_best.pt) and prints the tables",
        "params": "prints the #Parameters and compression columns of Tables 2, 3 and 5 (exact counts)",
    }[command]
    lines = [f"usage: [VARIABLE=value ...] {script}" + (" MODEL_DIR" if command == "evaluate" else ""), "",
             what + ".", ""]
    if command != "params":
        lines.append("Environment variables (default):")
        for name, default, text in VARIABLES:
            lines.append(f"  {name:<12} {text} ({default or 'empty'})")
        names = [c.name for c in selectable(command, configs)]
        lines += ["", "Configurations (ONLY):", *("  " + n for n in names)]
    return "\n".join(lines)


def selectable(command: str, configs: List[Config]) -> List[Config]:
    tables = [TABLES[command]] if command in TABLES else ["5", "2", "3"]
    return [c for c in configs if c.table in tables and c.runnable]


def select(command: str, configs: List[Config], only: List[str]) -> List[Config]:
    """The script's configurations, or those ONLY names (an unknown name is an error listing the known)."""
    pool = selectable(command, configs)
    if not only:
        return pool
    known = {c.name: c for c in pool}
    for name in only:
        if name not in known:
            raise OptionError(f"ONLY: unknown configuration {name!r} for {SCRIPTS[command]}; known: "
                              f"{', '.join(known)}")
    return [c for c in pool if c.name in only]


# ------------------------------------------------------------------------------------ experiment state
def option_value(argv: List[str], option: str, default=None):
    """The value of the last ``option`` in ``argv`` (as argparse reads it)."""
    value = default
    for i, token in enumerate(argv[:-1]):
        if token == option:
            value = argv[i + 1]
    return value


# ----------------------------------------------------------------------------------------------- runs
@dataclass
class Run:
    """One main.py process to start: its label, tree, options and the runs it must wait for."""

    label: str
    tree: str
    argv: List[str]
    after: List[str] = field(default_factory=list)
    prepare: Optional[Callable[[], None]] = None  # called just before it starts (e.g. writes an init file)


def main_command(run: Run, slot: str) -> tuple:
    """(command, environment) for ``run`` on ``slot``."""
    script = str(ROOT / run.tree / "main.py")
    env = dict(os.environ)
    argv = list(run.argv)
    if slot == "cpu":
        return [sys.executable, script, "--cpu", *argv], env
    devices = slot.split(",")
    env["CUDA_VISIBLE_DEVICES"] = ",".join(visible_device(d) for d in devices)
    if len(devices) > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                str(len(devices)), script, *argv], env
    return [sys.executable, script, *argv], env


def visible_device(index: str) -> str:
    """GPUS counts the devices this process sees: within an outer CUDA_VISIBLE_DEVICES=3,5, GPUS=1 is 5."""
    outer = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return outer[int(index)] if outer and index.isdigit() and int(index) < len(outer) else index


class RunFailed(RunStopped):
    """A configuration's run exited with an error, or runs wait for one that cannot start."""


def execute(runs: List[Run], settings: Settings) -> None:
    """Start every run as soon as a slot is free and the runs it waits for have succeeded; stop at the
    first failure (the runs still going are ended: a rerun continues them)."""
    pending, running, done = list(runs), {}, set()  # running: process -> (slot, run, output file)
    logs = settings.dir_save / "logs"
    parallel = len(settings.slots) > 1
    try:
        while pending or running:
            free = [s for s in settings.slots if s not in {slot for slot, _, _ in running.values()}]
            for run in [r for r in pending if all(a in done for a in r.after)]:
                if not free:
                    break
                pending.remove(run)
                slot = free.pop(0)
                if run.prepare is not None:
                    run.prepare()
                command, env = main_command(run, slot)
                print(f"[{time.strftime('%H:%M:%S')}] {run.label} on {slot}: "
                      f"{' '.join(shlex.quote(c) for c in command[1:])}", flush=True)
                out = None
                if parallel:  # interleaved output would be unreadable: one file per run
                    logs.mkdir(parents=True, exist_ok=True)
                    out = open(_log_file(logs, run), "a")
                process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
                running[process] = (slot, run, out)
            if not running:
                raise RunFailed(f"cannot start {', '.join(r.label for r in pending)}: what they wait for "
                                "did not run")
            finished = _wait_any(running)
            _, run, out = running.pop(finished)
            if out is not None:
                out.close()
            if finished.returncode != 0:
                where = f" (output: {_log_file(logs, run)})" if parallel else ""
                raise RunFailed(f"{run.label} stopped with exit status {finished.returncode}{where}")
            done.add(run.label)
    finally:
        for process in running:
            process.terminate()
        for process, (_, _, out) in running.items():
            process.wait()
            if out is not None:
                out.close()


def _log_file(logs: Path, run: Run) -> Path:
    return logs / f"{run.label.replace(' ', '_')}.txt"


def _wait_any(running: dict):
    if len(running) == 1:
        process = next(iter(running))
        process.wait()
        return process
    while True:
        for process in running:
            if process.poll() is not None:
                return process
        time.sleep(1.0)


# ------------------------------------------------------------------------------------------ data check
def _tree_parse(tree: str, argv: List[str]):
    """The options of a configuration's line (the notes of its template are main.py's to print)."""
    with contextlib.redirect_stderr(io.StringIO()):
        return importlib.import_module(f"{tree}.option").parse_args(argv)


def _without(argv: List[str], options) -> List[str]:
    """``argv`` without the given options and their values."""
    out, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token in options:
            skip = True
        else:
            out.append(token)
    return out


def check_data(lines: List[tuple]) -> None:
    """Find every data set the (tree, options) lines read, before any run starts: a missing one is
    main.py's own one-line DataError.  Benchmark LR images missing on disk are made (and cached) here."""
    seen = set()
    for tree, argv in lines:
        args = _tree_parse(tree, _without(argv, set(PRETRAINED.values())))
        data = importlib.import_module(f"{tree}.data")
        sets = ([] if args.test_only else [(args.data_train, True)]) + \
            [(name, False) for name in args.data_test.split("+")]
        for name, train in sets:
            key = (tree, name, train, str(getattr(args, "scale", "")), args.dir_data)
            if key in seen:
                continue
            seen.add(key)
            if tree == "super_resolution":
                registry = data.TRAIN_SETS if train else data.TEST_SETS
                registry.get(name)(args)
            else:
                data.DATASETS.get(name).build(args, train, None)


# ------------------------------------------------------------------------------------------ training
def common_options(settings: Settings, dir_save: Path) -> List[str]:
    return ["--dir_data", str(settings.dir_data), "--dir_save", str(dir_save)]


def init_file(settings: Settings, config: Config) -> Path:
    return settings.dir_save / "init" / f"{config.name}.pt"


def best_model(folder: Path) -> Path:
    return folder / "model" / "model_best.pt"


def write_init(config: Config, argv: List[str], source: Path, target: Path) -> None:
    """The x3/x4 starting point: the model of ``argv``, initialised, with every tensor but the
    upsampler taken from the x2 model ``source`` (a named partial load; see load_except_upsampler)."""
    import torch

    from filter_basis.engine.checkpoint import read_state_dict, save_checkpoint, write_text_atomic
    from super_resolution.model import build_model
    from super_resolution.model.checkpoint import load_except_upsampler

    args = _tree_parse(config.tree, argv)
    with torch.random.fork_rng(devices=[]):  # the upsampler's initial values, seeded as the run is
        torch.manual_seed(args.seed)
        model = build_model(args)
    kept = load_except_upsampler(model, read_state_dict(source), f"checkpoint {source}")
    save_checkpoint(model.state_dict(), target)
    modules = sorted({key.rsplit(".", 2)[0] for key in kept})
    line = (f"partial load: {config.name} starts from {source} (every tensor but the upsampler "
            f"{', '.join(modules)}: {len(kept)} tensors keep their initial values) -> {target}")
    write_text_atomic(target.with_suffix(".txt"), line + "\n")  # the note stays beside the file
    print(line, flush=True)


def with_dependencies(chosen: List[Config], configs: List[Config], settings: Settings) -> List[Config]:
    """``chosen`` plus every x2 configuration an x3/x4 one starts from whose x2 model is not finished."""
    by_name = {c.name: c for c in configs}
    names = {c.name for c in chosen}
    extra = []
    for config in chosen:
        source = config.init_from
        if source and source not in names and source not in {c.name for c in extra}:
            if not finished(by_name[source], settings):
                print(f"{config.name} starts from {source}, which is not trained yet: "
                      f"training {source} first")
                extra.append(by_name[source])
    return extra + chosen


def train_argv(config: Config, settings: Settings) -> List[str]:
    # --init official: the official initialisation, for a faithful reproduction (docs/initialisation.md)
    argv = config.train + ["--init", "official"] + common_options(settings, settings.dir_save)
    if settings.epochs:
        argv += ["--epochs", str(settings.epochs)]
    return argv + settings.extra


def requested_epochs(argv: List[str]) -> int:
    return int(option_value(argv, "--epochs", DEFAULT_EPOCHS))


def training_decision(config: Config, settings: Settings) -> reuse.Decision:
    """start, continue or finished (the tools' rules of filter_basis.reuse: finished with these options);
    a folder made with other options, or that cannot be continued, is refused (one line, nothing run)."""
    argv = train_argv(config, settings) + ["--save", config.name]
    return reuse.decide(settings.dir_save / config.name, TOOL, config.tree, argv)


def finished(config: Config, settings: Settings) -> bool:
    return training_decision(config, settings).action == reuse.FINISHED


def training_runs(configs: List[Config], settings: Settings) -> List[Run]:
    """One main.py run per configuration not finished: ``--save NAME --auto_resume`` starts it or continues
    it; the scripts never remove a run (docs/results.md, "The tools' rules")."""
    runs = []
    planned = set()
    for config in configs:
        folder = settings.dir_save / config.name
        argv = train_argv(config, settings)
        epochs = requested_epochs(argv)
        decision = training_decision(config, settings)
        if decision.action == reuse.FINISHED:
            print(f"{config.name}: finished ({decision.epochs_done} of {epochs} epochs in {folder}), skipped")
            continue
        if decision.action == reuse.CONTINUE:
            print(f"{config.name}: continuing ({decision.epochs_done} of {epochs} epochs recorded)")
        argv += ["--save", config.name, "--auto_resume", "--made_by", TOOL]
        run = Run(f"{config.name} train", config.tree, argv)
        if config.init_from:
            run.after = [f"{config.init_from} train"] if config.init_from in planned else []
            run.prepare = _init_step(config, settings, run, decision.action == reuse.START)
        planned.add(config.name)
        runs.append(run)
    return runs


def _init_step(config: Config, settings: Settings, run: Run, starting: bool):
    def prepare():
        target = init_file(settings, config)
        if starting:  # a continued run takes its weights from its training state
            source = best_model(settings.dir_save / config.init_from)
            write_init(config, _without(run.argv, {"--made_by"}), source, target)
        if target.is_file():
            run.argv += ["--pre_train", str(target)]
    return prepare


def test_runs(configs: List[Config], settings: Settings, trained: List[Run], out: Path,
              checkpoints: Dict[str, Path], always: bool, tool: str = "") -> List[Run]:
    """One --test_only run per configuration on its checkpoint; results in ``out/<configuration>``, a
    folder the scripts replace only when its run.json says ``tool`` made it."""
    tool = tool or TOOL
    trained_labels = {r.label for r in trained}
    runs = []
    for config in configs:
        checkpoint = checkpoints[config.name]
        folder = out / config.name
        label = f"{config.name} train"
        results = folder / "results.json"
        if (not always and label not in trained_labels and results.is_file() and checkpoint.is_file()
                and results.stat().st_mtime >= checkpoint.stat().st_mtime):  # tested after it was saved
            print(f"{config.name}: test results up to date in {folder}")
            continue
        action = reuse.may_replace(folder, tool).action  # refuses a folder the scripts did not make
        test = [str(checkpoint) if t == "MODEL" else t for t in config.test]
        argv = test + common_options(settings, out) + settings.extra + ["--save", config.name, "--made_by",
                                                                        tool]
        if action == reuse.REPLACE:
            argv.append("--reset")
        runs.append(Run(f"{config.name} test", config.tree, argv,
                        after=[label] if label in trained_labels else []))
    return runs


# ---------------------------------------------------------------------------------------------- tables
def print_tables(configs: List[Config], out: Path, title: str) -> None:
    """The table of the test folders through filter_basis.collect, with the paper's values beside."""
    from filter_basis import collect

    folders = [out / c.name for c in configs if folder_state(out / c.name) == "finished"]
    if not folders:
        print("no results to tabulate yet")
        return
    argv = [str(f) for f in folders] + ["--paper", str(CONFIGS), "--out", str(out), "--name", title]
    print(f"\n$ python -m filter_basis.collect {' '.join(shlex.quote(a) for a in argv)}", flush=True)
    code = collect.main(argv)
    if code:
        raise SystemExit(code)


def command_train(table: str, settings: Settings, configs: List[Config]) -> None:
    """Train what is not finished (x2 models an asked x3/x4 starts from included), test the asked
    configurations' best models, print their table."""
    asked = select(table, configs, settings.only)
    chosen = with_dependencies(asked, configs, settings)
    lines = [(c.tree, train_argv(c, settings)) for c in chosen]
    lines += [(c.tree, c.test + common_options(settings, settings.dir_save) + settings.extra) for c in asked]
    check_data(lines)
    settings.choose_devices()
    trained = training_runs(chosen, settings)
    checkpoints = {c.name: best_model(settings.dir_save / c.name) for c in asked}
    out = settings.dir_save / "test"
    tests = test_runs(asked, settings, trained, out, checkpoints, always=False)
    execute(trained + tests, settings)
    print(f"\n{TABLE_TITLES[TABLES[table]]}")
    print_tables(asked, out, table)


def find_checkpoint(config: Config, model_dir: Path) -> Optional[Path]:
    """The released file of the official demo.sh (``MODEL_DIR/ResNet_Basis.pt``), else our own
    ``MODEL_DIR/<configuration>/model/model_best.pt``; None when neither is there."""
    for path in ([model_dir / config.official_file] if config.official_file else []) + \
            [best_model(model_dir / config.name)]:
        if path.is_file():
            return path
    return None


def command_evaluate(model_dir: Path, settings: Settings, configs: List[Config]) -> None:
    chosen = select("evaluate", configs, settings.only)
    checkpoints, missing = {}, []
    for config in chosen:
        found = find_checkpoint(config, model_dir)
        if found is None:
            missing.append(config.name)
        else:
            checkpoints[config.name] = found
    if missing:
        print(f"no checkpoint in {model_dir} for {len(missing)} configuration(s), not tested: "
              f"{', '.join(missing)}")
    present = [c for c in chosen if c.name in checkpoints]
    if not present:
        released = [c.official_file for c in chosen if c.official_file]
        raise OptionError(f"nothing to evaluate in {model_dir}: looked for the released files "
                          f"{', '.join(released) or '(none)'} and <configuration>/model/model_best.pt of "
                          f"{len(chosen)} configuration(s) ({', '.join(c.name for c in chosen)})")
    check_data([(c.tree, c.test + common_options(settings, settings.dir_save) + settings.extra)
                for c in present])
    settings.choose_devices()
    out = settings.dir_save / "evaluate"
    execute(test_runs(present, settings, [], out, checkpoints, always=True, tool="evaluate"), settings)
    for table in ("5", "2", "3"):
        rows = [c for c in present if c.table == table]
        if rows:
            print(f"\n{TABLE_TITLES[table]}")
            print_tables(rows, out, f"table{table}")


# ---------------------------------------------------------------------------------------------- params
def count(config: Config) -> dict:
    """Exact weight counts as the paper counts them, the model built on the meta device (no memory)."""
    import torch

    tree = find_tree(config.tree)
    args = tree.parse_args(config.train)
    base = importlib.import_module("filter_basis.engine.summary").baseline_options(tree, args)
    with torch.device("meta"):
        model, baseline = tree.build_model(args), tree.build_model(base)

    weights = importlib.import_module("filter_basis.complexity").weight_params  # a shared tensor once
    if config.tree == "super_resolution":
        block = tree.summary_block(args)
        ours, whole = weights(model.get_submodule(block)), weights(baseline.get_submodule(block))
    else:
        ours, whole = weights(model), weights(baseline)
    return {"params": ours, "baseline": whole, "compression_pct": 100.0 * ours / whole}


def paper_number(text: str) -> tuple:
    """'3.21M' -> (3210000.0, unit 'M', decimals 2); '186k' -> (186000.0, 'k', 0); '21.8' -> (21.8, '', 1)."""
    unit = text[-1] if text[-1:] in ("k", "M") else ""
    digits = text[:-1] if unit else text
    decimals = len(digits.split(".")[1]) if "." in digits else 0
    return float(digits) * {"": 1, "k": 1e3, "M": 1e6}[unit], unit, decimals


def as_printed(value: float, like: str) -> str:
    """``value`` rounded and written the way the paper printed ``like``."""
    _, unit, decimals = paper_number(like)
    return f"{value / {'': 1, 'k': 1e3, 'M': 1e6}[unit]:.{decimals}f}{unit}"


def _one_digit_apart(ours: str, paper: str) -> bool:
    """Whether two numbers printed alike differ by one unit of their last digit (a rounding difference)."""
    value, unit, decimals = paper_number(paper)
    return abs(paper_number(ours)[0] - value) <= 1.01 * 10 ** -decimals * {"": 1, "k": 1e3, "M": 1e6}[unit]


def params_table(configs: List[Config]) -> str:
    lines = []
    what = {"5": "weight parameters of the whole network (tensors with more than one dimension)",
            "2": "conv weights of one residual block", "3": "conv weights of one residual block"}
    for table in ("5", "2", "3"):
        lines += ["", f"{TABLE_TITLES[table]} -- #Parameters: {what[table]}", ""]
        head = f"{'configuration':<26} {'ours':>11} {'paper':>7} {'as printed':>10} " \
               f"{'compr. %':>9} {'paper':>6} {'as printed':>10}  agreement"
        lines += [head, "-" * len(head)]
        for config in (c for c in configs if c.table == table):
            if not config.runnable:
                lines.append(f"{config.name:<26} {'quoted':>11} {config.paper_params:>7} {'':>10} "
                             f"{'quoted':>9} {config.paper_compression:>6} {'':>10}  {config.note}")
                continue
            counted = count(config)
            printed_params = as_printed(counted["params"], config.paper_params) if config.paper_params else ""
            printed_pct = (as_printed(counted["compression_pct"], config.paper_compression)
                           if config.paper_compression else "")
            pairs = (("#params", printed_params, config.paper_params),
                     ("compression", printed_pct, config.paper_compression))
            differs = [f"{what} {ours} vs {paper}" + (" (last digit)" * _one_digit_apart(ours, paper))
                       for what, ours, paper in pairs if paper and ours != paper]
            if not config.paper_params and not config.paper_compression:
                verdict = "baseline (not printed in the table)"
            else:
                verdict = ("DIFFERS: " + ", ".join(differs)) if differs else "agrees"
            lines.append(f"{config.name:<26} {counted['params']:>11,} {config.paper_params or '-':>7} "
                         f"{printed_params or '-':>10} {counted['compression_pct']:>9.2f} "
                         f"{config.paper_compression or '-':>6} {printed_pct or '-':>10}  {verdict}")
    lines += ["", "ours: counted from the models built with each configuration's options (equal to the "
              "official code's counts);",
              "'as printed': ours rounded to the paper's precision.  ResNet-56 Basis and Factor differ "
              "from the printed table in the official code too.",
              "Quoted rows are numbers the paper quotes from other work; nothing here trains them."]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ main
def _stop_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    configs = load_configs()
    command = argv[0] if argv else ""
    if command == "train" and len(argv) > 1:
        command, argv = argv[1], argv[1:]
    if command not in SCRIPTS:
        print(f"usage: run.py {{train {{{','.join(TABLES)}}},evaluate MODEL_DIR,params}}", file=sys.stderr)
        return 2
    rest = argv[1:]
    if "-h" in rest or "--help" in rest:
        print(usage(command, configs))
        return 0
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)  # SIGTERM ends the runs started here too
    try:
        return report_errors(lambda: _command(command, rest, configs))
    finally:
        signal.signal(signal.SIGTERM, previous)


def _command(command: str, rest: List[str], configs) -> None:
    if command == "params":
        print(params_table(configs))
        return
    settings = Settings.from_env()
    if command == "evaluate":
        if len(rest) != 1:
            raise OptionError(f"evaluate.sh needs one MODEL_DIR argument, got {len(rest)}; see --help")
        model_dir = Path(rest[0]).resolve()
        if not model_dir.is_dir():
            raise OptionError(f"MODEL_DIR {rest[0]!r} is not a folder; expected the folder of the "
                              "released checkpoints or of our experiment folders")
        command_evaluate(model_dir, settings, configs)
    else:
        if rest:
            raise OptionError(f"{SCRIPTS[command]} takes no arguments (got {' '.join(rest)}); settings "
                              "come from environment variables, see --help")
        command_train(command, settings, configs)


if __name__ == "__main__":
    sys.exit(main())
