"""``python -m filter_basis.collect DIR... [--out DIR]``: tables (Markdown, CSV) and plots from runs.

Each DIR is an experiment folder (see docs/experiments.md).  What it holds decides where it is listed
(docs/results.md):

- a **training run** is a row of its task's table (``classification``, ``super_resolution``): the weight
  parameters and compression as the paper counts them (classification: the whole network;
  super-resolution: one residual block), the metrics at the best epoch -- chosen as the trainer chose
  ``model_best.pt``: on the first ``--data_test`` set, by the score the trainer ranks by (top-1 error, or
  top-5 with ``--top -1``; PSNR), the first of equal scores -- and at the last epoch, and the training
  time (sum of ``time_s``);
- a **test-only evaluation** (``RUN/eval/<set>-<checkpoint>/`` inside a given run, or a folder made by
  ``--test_only``) is a row of the task's *evaluation* table (``<task>_evaluations``): the metrics of the
  tested checkpoint, and the training time of the run that trained it;
- a **Demo** output (``--data_test Demo``: pictures, no metrics) is only listed (folder, image count);
- a test-only run of a model without weights (Bicubic) has nothing to train or evaluate apart: it is a
  reference row of the training table (a dashed line in the plot).

A row is labelled by its ``--model`` and the options that differ between the rows of that model (an
option a row leaves unset -- off, empty, none -- is not written).  Folders that are not experiment
folders are named on standard error and skipped.

Scripts add reference values through ``expected`` (``{row label or folder name: {column: value}}``):
each column named there gets a ``COLUMN paper`` and a ``COLUMN diff`` (ours minus paper) column.
``--paper FILE`` reads such values from a tab-separated file with columns ``name`` (a folder name) and
``paper_metrics`` (``KEY=VALUE`` pairs, keys as in results.json: ``top1_error``, ``Set5_x4/psnr``), e.g.
``scripts/paper/configs.tsv``; rows are then labelled by their folder names.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

from .engine.checkpoint import write_atomic, write_text_atomic
from .engine.meters import flatten
from .engine.record import EVAL_DIR, NotAnExperiment, is_experiment
from .engine.record import read_run as read_record
from .errors import UserError, report_errors

CLASSIFICATION = "classification"
SUPER_RESOLUTION = "super_resolution"
TRAINING, EVALUATION, DEMO = "training", "evaluation", "demo"

# Options that say where and how a run was stored or shown, not what was trained: never in a row label.
NOT_LABELS = frozenset({
    "save", "load", "dir_save", "dir_data", "dir_demo", "reset", "resume", "n_threads", "cpu", "n_GPUs",
    "print_every", "print_model", "save_models", "save_results", "summary", "debug", "template", "ext",
    "download", "test_only", "made_by", "auto_resume", "tensorboard", "save_every_steps",
})
UNSET = (None, False, "", ".", [], "None")  # an option left at "off": not written in a label


@dataclass
class Run:
    """One experiment folder (or one evaluation inside it), read.

    ``kind``: ``training``, ``evaluation`` (a test-only run) or ``demo`` (pictures, no metrics).
    ``tested``: for an evaluation, the checkpoint it tested; ``source``: the training run that made it.
    ``best``: the trainer's own record of its best epoch (run.json), when the folder has one.
    """

    folder: Path
    args: dict
    summary: dict
    results: list
    kind: str = TRAINING
    name: str = ""
    tested: str = ""
    source: Optional[Path] = None
    best: Optional[dict] = None
    tree: Optional[str] = None
    evaluations: list = field(default_factory=list)

    def __post_init__(self):
        self.name = self.name or self.folder.name

    @property
    def model(self) -> str:
        return str(self.args.get("model", self.summary.get("model", "?")))

    @property
    def task(self) -> str:
        if self.tree:
            return SUPER_RESOLUTION if self.tree == "super_resolution" else CLASSIFICATION
        keys = [k for r in self.results for k in flatten(r["metrics"])]
        if any(k == "psnr" or k.endswith("/psnr") for k in keys):
            return SUPER_RESOLUTION
        if not keys and "scale" in self.args:
            return SUPER_RESOLUTION
        return CLASSIFICATION

    @property
    def trained(self) -> list:
        """The records of the training epochs (and of epoch 0, the fitted model of --basis_init), without
        records an older version appended when testing the run (no training loss, epoch already seen)."""
        return [r for r in self.results if "train_loss" in r or r["epoch"] == 0]


@dataclass
class Table:
    """Rows of one task and kind.  ``formats`` gives each numeric column's Markdown format spec."""

    task: str
    columns: list
    rows: list
    formats: dict = field(default_factory=dict)
    x_column: str = ""
    y_columns: list = field(default_factory=list)
    kind: str = TRAINING


def _check_results(folder: Path, results: list) -> list:
    if not results or not all(isinstance(r, dict) and "epoch" in r and isinstance(r.get("metrics"), dict)
                              for r in results):
        raise NotAnExperiment(f"{folder}: results.json holds no evaluation yet")
    return results


def _has_metrics(results: list) -> bool:
    return any(flatten(r["metrics"]) for r in results)


def _summary(folder: Path) -> dict:
    try:
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def read_run(folder) -> Run:
    """The run in ``folder`` (read by the engine's :func:`~filter_basis.engine.record.read_run`), or one
    evaluation ``RUN/eval/<data_test>-<checkpoint>``; :class:`NotAnExperiment` when it is not one or has
    no evaluation yet."""
    folder = Path(folder)
    if folder.parent.name == EVAL_DIR and is_experiment(folder.parent.parent):
        parent = _from_record(read_record(folder.parent.parent))
        for evaluation in read_record(folder.parent.parent).evaluations:
            if evaluation.folder.name == folder.name:
                return _evaluation(parent, evaluation)
        raise NotAnExperiment(f"{folder}: an evaluation folder without results")
    return _from_record(read_record(folder))


def _from_record(record) -> Run:
    folder = record.folder
    results = _check_results(folder, record.results)
    run = Run(folder, dict(record.options), _summary(folder), results, best=record.best, tree=record.tree)
    args = run.args
    if record.kind != TRAINING or args.get("test_only"):
        run.kind = EVALUATION if _has_metrics(results) else DEMO
        tested = next((args[o] for o in PRETRAINED_OPTIONS if isinstance(args.get(o), str)
                       and args[o] not in ("", ".")), "")
        run.tested = Path(tested).name if tested else ""
        if tested and Path(tested).parent.name == "model":
            run.source = Path(tested).parent.parent
        if run.kind == EVALUATION and run.summary.get("weight_params") == 0:
            run.kind = TRAINING  # a model without weights (Bicubic): a reference row, nothing trained
    run.evaluations = list(record.evaluations)
    return run


def _evaluation(parent: Run, evaluation) -> Run:
    """``RUN/eval/<data_test>-<checkpoint>/``: its results, RUN's options with the set it tested."""
    results = _check_results(evaluation.folder, evaluation.results)
    args = {**parent.args, "data_test": evaluation.data_test, "test_only": True}
    summary = _summary(evaluation.folder) or parent.summary
    return Run(evaluation.folder, args, summary, results, kind=EVALUATION if _has_metrics(results) else DEMO,
               name=f"{parent.name}/{EVAL_DIR}/{evaluation.folder.name}", tested=evaluation.checkpoint,
               source=parent.folder, tree=parent.tree)


def read_runs(folders: Sequence) -> tuple:
    """``(runs, skipped)``: the runs read (a run's evaluations in ``RUN/eval/`` follow it), and
    ``(folder, reason)`` for the folders that are not experiment folders."""
    runs, skipped = [], []
    for folder in folders:
        try:
            run = read_run(folder)
        except NotAnExperiment as reason:
            skipped.append((Path(folder), str(reason)))
            continue
        runs.append(run)
        for evaluation in run.evaluations:
            try:
                runs.append(_evaluation(run, evaluation))
            except NotAnExperiment as reason:
                skipped.append((evaluation.folder, str(reason)))
    return runs, skipped


def _option_text(key: str, value) -> str:
    if value is True:
        return f"--{key}"
    if isinstance(value, float):
        value = f"{value:g}"  # 0.0333333, not 0.03333333333333333
    elif isinstance(value, list):
        value = "+".join(str(v) for v in value)
    elif isinstance(value, str) and "/" in value:
        path = Path(value)  # a path: its last part tells runs apart (a run's checkpoint: RUN/model_best.pt)
        value = f"{path.parent.parent.name}/{path.name}" if path.parent.name == "model" else path.name
    return f"--{key} {value}"


def labels(runs: Sequence[Run]) -> list:
    """``--model`` plus the options in which a run differs from other runs of the same model.

    An option a run leaves unset (off, empty, none) is not written for it.  Runs that still look the
    same get their folder name in brackets.
    """
    texts = []
    for run in runs:
        same_model = [other for other in runs if other.model == run.model]
        keys = sorted({k for other in same_model for k in other.args} - NOT_LABELS - {"model"})
        differing = [k for k in keys
                     if len({json.dumps(other.args.get(k), sort_keys=True) for other in same_model}) > 1]
        texts.append(" ".join([run.model] + [_option_text(k, run.args.get(k)) for k in differing
                                             if run.args.get(k) not in UNSET]))
    return [f"{text} [{run.name}]" if texts.count(text) > 1 else text for text, run in zip(texts, runs)]


def _metric_keys(runs: Sequence[Run], suffixes: Sequence[str]) -> list:
    """Every ``(group, suffix)`` met in the runs, in the order first met; group '' for top-level keys."""
    found = []
    for run in runs:
        for record in run.results:
            for key in flatten(record["metrics"]):
                group, _, last = key.rpartition("/")
                if last in suffixes and (group, last) not in found:
                    found.append((group, last))
    return found


def best_record(run: Run) -> Optional[dict]:
    """The record of the epoch the trainer kept as ``model_best.pt``, as the run's record says (for folders
    of older versions the engine's reader derives it as the trainer does: the first ``--data_test`` set,
    the tree's score, the first of equal scores)."""
    if not run.best or "epoch" not in run.best:
        return None
    return next((r for r in run.trained if r["epoch"] == run.best["epoch"]), None)


METRIC_NAMES = {"psnr": "PSNR", "ssim": "SSIM", "top1_error": "top-1 error %", "top5_error": "top-5 error %"}
PRETRAINED_OPTIONS = ("pre_train", "pretrained")


def metric_name(key: str) -> str:
    """The column name of a flattened metric key: ``Set5_x4/psnr`` -> ``Set5_x4 PSNR``."""
    group, _, last = key.rpartition("/")
    return f"{group} {METRIC_NAMES[last]}".strip()


def _times(run: Run) -> Optional[float]:
    times = [r["time_s"] for r in run.trained if "time_s" in r]
    return sum(times) if times else None


def train_time(run: Run) -> Optional[float]:
    """Seconds of training (sum of ``time_s``); for an evaluation, those of the run that trained the
    tested model (its own folder, or the experiment folder holding the ``model/`` folder of its file)."""
    if run.kind == TRAINING:
        return _times(run)
    if run.source is None:
        return None
    try:
        return _times(read_run(run.source))
    except NotAnExperiment:
        return None


def read_paper(path) -> dict:
    """``{name: {metric key: value}}`` from a TSV with ``name`` and ``paper_metrics`` columns
    (lines starting with '#' are comments)."""
    try:
        with open(path, newline="") as f:
            lines = [line for line in f if not line.startswith("#")]
        values = {}
        for row in csv.DictReader(lines, delimiter="\t"):
            pairs = (item.split("=", 1) for item in (row.get("paper_metrics") or "").split())
            values[row["name"]] = {key: float(value) for key, value in pairs}
        return values
    except (OSError, KeyError, ValueError) as error:
        raise UserError(f"--paper {str(path)!r}: expected a tab-separated file with columns name and "
                        f"paper_metrics (KEY=VALUE pairs) ({type(error).__name__}: {error})") from None


def paper_columns(paper: Mapping, table: Table) -> dict:
    """The ``expected`` mapping of :func:`add_expected` for ``table``: each paper metric beside the
    column of that metric (the best epoch's, or the evaluation's; keys without a column are left out)."""
    expected = {}
    for name, metrics in paper.items():
        columns = {}
        for key, value in metrics.items():
            if key.rpartition("/")[2] not in METRIC_NAMES:
                continue
            for column in (f"{metric_name(key)} (best)", metric_name(key)):
                if column in table.columns:
                    columns[column] = value
                    break
        if columns:
            expected[name] = columns
    return expected


def _metric_columns(runs: Sequence[Run], sr: bool) -> list:
    if sr:
        groups = [g for g, _ in _metric_keys(runs, ("psnr",))]
        return [(f"{g}/{s}" if g else s, metric_name(f"{g}/{s}")) for g in groups for s in ("psnr", "ssim")]
    return [(f"{g}/{s}" if g else s, metric_name(f"{g}/{s}")) for g, s in _metric_keys(runs, ("top1_error",))]


def build_table(runs: Sequence[Run], expected: Optional[Mapping] = None, *,
                label_folders: bool = False) -> Table:
    """The table of runs of one task and kind (see the module docstring); ``expected`` adds paper/diff
    columns.  Evaluations give one column per metric (the tested checkpoint's), training runs two (the
    best and the last epoch)."""
    if not runs:
        raise ValueError("build_table needs at least one run")
    task = runs[0].task
    if any(run.task != task for run in runs):
        raise ValueError("build_table: runs of one task only (use collect() for a mix)")
    evaluation = runs[0].kind == EVALUATION
    if any((run.kind == EVALUATION) != evaluation or run.kind == DEMO for run in runs):
        raise ValueError("build_table: training runs or evaluations, not both (use collect() for a mix)")
    sr = task == SUPER_RESOLUTION
    metrics = _metric_columns(runs, sr)
    if sr:
        params = [("block weight params", "block_weight_params", ",.0f"),
                  ("block compression %", "block_compression_pct", ".1f"),
                  ("weight params", "weight_params", ",.0f")]
    else:
        params = [("weight params", "weight_params", ",.0f"), ("compression %", "compression_pct", ".1f")]
    formats = {column: spec for column, _, spec in params}
    formats.update({"best epoch": "d", "last epoch": "d", "train time s": ",.0f"})
    columns = ["run"] + [column for column, _, _ in params]
    whens = [""] if evaluation else [" (best)", " (last)"]
    for when in whens:
        columns.append(f"{when.strip(' ()')} epoch" if when else "tested")
        for key, name in metrics:
            columns.append(f"{name}{when}")
            formats[f"{name}{when}"] = ".4f" if key.endswith("ssim") else ".2f"
    columns.append("train time s")

    rows = []
    for run, label in zip(runs, [run.name for run in runs] if label_folders else labels(runs)):
        row = {"run": label, "model": run.model, "folder": str(run.folder), "name": run.name,
               "source": run.source.name if run.source else ""}
        for column, key, _ in params:
            row[column] = run.summary.get(key)
        if evaluation:
            row["tested"] = run.tested
            picks = {"": run.results[-1]}
        else:
            picks = {" (best)": best_record(run), " (last)": (run.trained or run.results)[-1]}
        for when, record in picks.items():
            if when:
                row[f"{when.strip(' ()')} epoch"] = record["epoch"] if record else None
            values = flatten(record["metrics"]) if record else {}
            for key, name in metrics:
                row[f"{name}{when}"] = values.get(key)
        row["train time s"] = train_time(run)
        rows.append(row)

    y_columns = [f"{name}{whens[0]}" for key, name in metrics if not key.endswith("ssim")]
    table = Table(task, columns, rows, formats, x_column=params[0][0], y_columns=y_columns,
                  kind=EVALUATION if evaluation else TRAINING)
    if expected:
        add_expected(table, expected)
    return table


def add_expected(table: Table, expected: Mapping) -> None:
    """Add ``COLUMN paper`` and ``COLUMN diff`` after each column that ``expected`` names.

    ``expected`` maps a row's label or its folder name (for an evaluation: also the name of the run
    that trained the tested model) to ``{column: value}``.
    """
    named = [c for c in table.columns if any(c in values for values in expected.values())]
    unknown = {c for values in expected.values() for c in values} - set(table.columns)
    if unknown:
        raise ValueError(f"expected names columns the table does not have: {sorted(unknown)}; "
                         f"columns: {table.columns}")
    for row in table.rows:
        keys = (row["run"], Path(row["folder"]).name, row.get("name"), row.get("source"))
        values = next((expected[k] for k in keys if k and k in expected), {})
        for column in named:
            paper = values.get(column)
            row[f"{column} paper"] = paper
            ours = row.get(column)
            row[f"{column} diff"] = ours - paper if ours is not None and paper is not None else None
    for column in named:
        at = table.columns.index(column) + 1
        table.columns[at:at] = [f"{column} paper", f"{column} diff"]
        spec = table.formats.get(column, "")
        table.formats[f"{column} paper"] = spec
        table.formats[f"{column} diff"] = "+" + spec.lstrip("+") if spec else ""


def _cell(value, spec: str) -> str:
    if value is None:
        return ""
    if spec and isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, spec)
    return str(value)


def to_markdown(table: Table) -> str:
    """A GitHub Markdown table: numbers right-aligned, formatted to the precision the paper uses."""
    head = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---:" if c in table.formats else "---" for c in table.columns) + "|"
    lines = [head, rule]
    for row in table.rows:
        cells = [_cell(row.get(c), table.formats.get(c, "")).replace("|", "\\|") for c in table.columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """CSV with full-precision numbers; the run's ``--model`` and folder are the last two columns."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = table.columns + ["model", "folder"]
    writer.writerow(columns)
    for row in table.rows:
        writer.writerow(["" if row.get(c) is None else row[c] for c in columns])
    return buffer.getvalue()


MARKERS = "osD^vP*Xph<>"


def _thousands(value, _position=None) -> str:
    """Axis numbers with thousands separators (275,000), small ones as matplotlib would print them."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:g}"


def figure(table: Table):
    """The plot of :func:`plot` as a matplotlib Figure: one marker (colour and shape) per row, the rows
    named in a legend under the panels (wrapped to the figure's width), thousands separators on axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    panels = table.y_columns or ["(no metric)"]
    width = max(6.5, 5.5 * len(panels))
    wrap = int(width * 13)  # characters of 8-point text per line of the legend
    names = ["\n".join(textwrap.wrap(row["run"], wrap, break_on_hyphens=False)) or "?" for row in table.rows]
    lines = sum(name.count("\n") + 1 for name in names)
    result = Figure(figsize=(width, 4.0 + 0.19 * lines), layout="constrained")
    FigureCanvasAgg(result)
    handles = {}
    for index, y_column in enumerate(panels):
        axes = result.add_subplot(1, len(panels), index + 1)
        for number, (row, name) in enumerate(zip(table.rows, names)):
            x, y = row.get(table.x_column), row.get(y_column)
            if y is None:
                continue
            colour, marker = f"C{number % 10}", MARKERS[number % len(MARKERS)]
            if x is None:
                handle = axes.axhline(y, linestyle="--", color=colour)
            else:
                handle, = axes.plot([x], [y], marker=marker, markersize=8, linestyle="", color=colour)
            handles.setdefault(name, handle)
        axes.set_xlabel(table.x_column)
        axes.set_ylabel(y_column)
        axes.grid(True, alpha=0.3)
        axes.xaxis.set_major_formatter(FuncFormatter(_thousands))
        axes.yaxis.set_major_formatter(FuncFormatter(_thousands))
    if handles:
        result.legend(list(handles.values()), list(handles), loc="outside lower center", fontsize=8,
                      ncols=1, frameon=False)
    return result


def plot(table: Table, path) -> None:
    """Error (or PSNR per test set) against weight parameters, one marker per row; a row without a weight
    count (Bicubic) is a dashed horizontal line."""
    drawn = figure(table)
    write_atomic(path, lambda f: drawn.savefig(f, format="png", dpi=100))


def _demo_line(run: Run) -> str:
    images = sorted(p for p in run.folder.rglob("*.png") if not p.name.startswith("plot_"))
    where = sorted({str(p.parent) for p in images})
    return (f"Demo {run.name}: {len(images)} image(s) in {', '.join(where) if where else run.folder}"
            f" (no metrics: not tabulated)")


def check_out(out, name: Optional[str]) -> Path:
    """``--out`` must be a folder (made if missing), ``--name`` a file name stem: one-line errors."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {str(out)!r} is a file; expected a folder for the tables and plots "
                        "(it is made if missing)")
    if name is not None and (not name or name in (".", "..") or "/" in name or "\\" in name):
        raise UserError(f"--name {name!r} is not accepted; expected a file name stem without '/' "
                        "(the files are written into --out)")
    return out


def collect(folders: Sequence, out, name: Optional[str] = None, expected: Optional[Mapping] = None,
            warn=None, paper: Optional[Mapping] = None, show=None) -> dict:
    """Read the folders, write ``STEM.md``, ``STEM.csv``, ``STEM.png`` under ``out`` per table; the tables.

    Tables are keyed (and, by default, named) by the task (``classification``, ``super_resolution``) for
    training runs and ``<task>_evaluations`` for evaluations.  With ``name`` every stem is ``name``, with
    ``_<task>`` added if the folders hold both tasks and ``_evaluations`` if they hold both kinds.  Demo
    folders are only listed through ``show`` (default: a line on standard output); skipped folders
    through ``warn`` (default: a line on standard error).  No table at all is a :class:`UserError`.
    ``paper`` (:func:`read_paper`) adds the paper's values and labels the rows by folder name.
    """
    warn = warn or (lambda line: print(line, file=sys.stderr))
    show = show or print
    out = check_out(out, name)
    runs, skipped = read_runs(folders)
    for _, reason in skipped:
        warn(f"skipped {reason}")
    for run in runs:
        if run.kind == DEMO:
            show(_demo_line(run))
    groups: dict = {}
    for run in runs:
        if run.kind != DEMO:
            groups.setdefault((run.task, run.kind == EVALUATION), []).append(run)
    if not groups:
        if any(run.kind == DEMO for run in runs):
            return {}
        raise UserError(f"no experiment folder among {[str(f) for f in folders]} (each needs its "
                        f"run.json, or args.json and results.json, with at least one evaluation)")
    tasks = {task for task, _ in groups}
    kinds = {evaluation for _, evaluation in groups}
    tables = {}
    for (task, evaluation), members in groups.items():
        table = build_table(members, expected, label_folders=bool(paper))
        if paper and paper_columns(paper, table):
            add_expected(table, paper_columns(paper, table))
        key = task + ("_evaluations" if evaluation else "")
        if name:
            stem = name + (f"_{task}" if len(tasks) > 1 else "") + \
                ("_evaluations" if evaluation and len(kinds) > 1 else "")
        else:
            stem = key
        write_text_atomic(out / f"{stem}.md", to_markdown(table))
        write_text_atomic(out / f"{stem}.csv", to_csv(table))
        plot(table, out / f"{stem}.png")
        tables[key] = table
    return tables


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m filter_basis.collect",
        description="Tabulate experiment folders: Markdown + CSV tables and a plot of error/PSNR against "
                    "weight parameters; test-only evaluations in tables of their own, Demo outputs listed. "
                    "Folders that are not experiment folders are named and skipped.")
    parser.add_argument("folders", nargs="+", metavar="DIR", help="experiment folders (DIR_SAVE/SAVE)")
    parser.add_argument("--out", default=".", help="folder for the table and plot files (default: .)")
    parser.add_argument("--name", default=None,
                        help="file name stem (default: the task, classification or super_resolution, "
                             "with _evaluations for test-only evaluations)")
    parser.add_argument("--paper", default=None, metavar="TSV",
                        help="reference values by folder name (columns name, paper_metrics), e.g. "
                             "scripts/paper/configs.tsv: adds 'paper' and 'diff' columns")
    parser.add_argument("--quiet", action="store_true", help="do not print the tables")
    args = parser.parse_args(argv)
    return report_errors(lambda: _tabulate(args))


def _tabulate(args: argparse.Namespace) -> None:
    check_out(args.out, args.name)
    paper = read_paper(args.paper) if args.paper else None
    tables = collect(args.folders, args.out, args.name, paper=paper)
    if not args.quiet:
        for key, table in tables.items():
            print(f"\n{key.replace('_evaluations', ' (test-only evaluations)')}\n\n{to_markdown(table)}")


if __name__ == "__main__":
    sys.exit(main())
