"""``python -m filter_basis.collect DIR... [--out DIR]``: one table (Markdown, CSV) and one plot from runs.

Each DIR is an experiment folder (docs/design.md#experiment-folder) (``args.json``, ``summary.json``,
``results.json``).  A row is one run, labelled by its ``--model`` and the options that tell it apart from
the other runs of the same model; its columns are the weight parameters and compression as the paper
counts them (classification: the whole network; super-resolution: one residual block), the metrics at
the best epoch (chosen as the trainer chose ``model_best.pt``: lowest top-1 error, or highest PSNR on the
first test set) and at the last one, and the training time (sum of ``time_s``).  Runs of the two trees
give two tables.  Folders that are not experiment folders are named on standard error and skipped.

Scripts add reference values through ``expected`` (``{row label or folder name: {column: value}}``):
each column named there gets a ``COLUMN paper`` and a ``COLUMN diff`` (ours minus paper) column.
``--paper FILE`` reads such values from a tab-separated file with columns ``name`` (a folder name) and
``paper_metrics`` (``KEY=VALUE`` pairs, keys as in results.json: ``top1_error``, ``Set5_x4/psnr``), e.g.
``scripts/paper/configs.tsv``; rows are then labelled by their folder names.  A ``--test_only`` run's
training time is that of the run whose ``model/`` folder its ``--pre_train``/``--pretrained`` file is in.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

from .engine.checkpoint import write_atomic, write_text_atomic
from .engine.meters import flatten
from .errors import UserError, report_errors

CLASSIFICATION = "classification"
SUPER_RESOLUTION = "super_resolution"
FILES = ("args.json", "summary.json", "results.json")

# Options that say where and how a run was stored or shown, not what was trained: never in a row label.
NOT_LABELS = frozenset({
    "save", "load", "dir_save", "dir_data", "dir_demo", "reset", "resume", "n_threads", "cpu", "n_GPUs",
    "print_every", "print_model", "save_models", "save_results", "summary", "debug", "template", "ext",
    "download",
})


class NotAnExperiment(Exception):
    """A folder that is not (or not yet) an experiment folder; the message says why."""


@dataclass
class Run:
    """One experiment folder, read."""

    folder: Path
    args: dict
    summary: dict
    results: list

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def model(self) -> str:
        return str(self.args.get("model", self.summary.get("model", "?")))

    @property
    def task(self) -> str:
        keys = flatten(self.results[-1]["metrics"])
        if any(k == "psnr" or k.endswith("/psnr") for k in keys):
            return SUPER_RESOLUTION
        return CLASSIFICATION


@dataclass
class Table:
    """Rows of one task.  ``formats`` gives each numeric column's Markdown format spec."""

    task: str
    columns: list
    rows: list
    formats: dict = field(default_factory=dict)
    x_column: str = ""
    y_columns: list = field(default_factory=list)


def read_run(folder) -> Run:
    """The run in ``folder``; :class:`NotAnExperiment` when a file is missing, unreadable or empty."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotAnExperiment(f"{folder}: not a folder")
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise NotAnExperiment(f"{folder}: not an experiment folder (no {', '.join(missing)})")
    loaded = []
    for name in FILES:
        try:
            loaded.append(json.loads((folder / name).read_text()))
        except (OSError, ValueError) as error:
            raise NotAnExperiment(f"{folder}: {name} is not readable JSON ({error})") from None
    args, summary, results = loaded
    if not isinstance(args, dict) or not isinstance(summary, dict) or not isinstance(results, list):
        raise NotAnExperiment(f"{folder}: args.json, summary.json, results.json do not have the run layout")
    if not results or not all(isinstance(r, dict) and "epoch" in r and isinstance(r.get("metrics"), dict)
                              for r in results):
        raise NotAnExperiment(f"{folder}: results.json holds no evaluation yet")
    return Run(folder, args, summary, results)


def read_runs(folders: Sequence) -> tuple:
    """``(runs, skipped)``: the experiment folders read, and ``(folder, reason)`` for the others."""
    runs, skipped = [], []
    for folder in folders:
        try:
            runs.append(read_run(folder))
        except NotAnExperiment as reason:
            skipped.append((Path(folder), str(reason)))
    return runs, skipped


def _option_text(key: str, value) -> str:
    if value is True:
        return f"--{key}"
    if isinstance(value, list):
        value = "+".join(str(v) for v in value)
    elif isinstance(value, str) and "/" in value:
        value = Path(value).name  # a path: its last part tells runs apart
    return f"--{key} {value}"


def labels(runs: Sequence[Run]) -> list:
    """``--model`` plus the options in which a run differs from other runs of the same model.

    Runs that still look the same (same options) get their folder name in brackets.
    """
    texts = []
    for run in runs:
        same_model = [other for other in runs if other.model == run.model]
        keys = sorted({k for other in same_model for k in other.args} - NOT_LABELS - {"model"})
        differing = [k for k in keys
                     if len({json.dumps(other.args.get(k), sort_keys=True) for other in same_model}) > 1]
        texts.append(" ".join([run.model] + [_option_text(k, run.args.get(k)) for k in differing]))
    return [f"{text} [{run.name}]" if texts.count(text) > 1 else text for text, run in zip(texts, runs)]


def _first_key(runs: Sequence[Run], suffix: str) -> Optional[str]:
    """The first flattened metric key ending in ``suffix`` (the trainer's first test set)."""
    for run in runs:
        for key in flatten(run.results[-1]["metrics"]):
            if key == suffix or key.endswith("/" + suffix):
                return key
    return None


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


def _best_record(run: Run, key: str, higher_is_better: bool) -> Optional[dict]:
    scored = [r for r in run.results if key in flatten(r["metrics"])]
    if not scored:
        return None
    pick = max if higher_is_better else min
    return pick(scored, key=lambda r: flatten(r["metrics"])[key])  # first of equals, as the trainer keeps it


METRIC_NAMES = {"psnr": "PSNR", "ssim": "SSIM", "top1_error": "top-1 error %"}
PRETRAINED_OPTIONS = ("pre_train", "pretrained")


def metric_name(key: str) -> str:
    """The column name of a flattened metric key: ``Set5_x4/psnr`` -> ``Set5_x4 PSNR``."""
    group, _, last = key.rpartition("/")
    return f"{group} {METRIC_NAMES[last]}".strip()


def train_time(run: Run) -> Optional[float]:
    """Seconds of training (sum of ``time_s``); for a ``--test_only`` run, those of the run that trained
    the tested model (the experiment folder holding the ``model/`` folder of its pretrained file)."""
    times = [r["time_s"] for r in run.results if "time_s" in r]
    if times:
        return sum(times)
    for option in PRETRAINED_OPTIONS:
        path = run.args.get(option)
        if isinstance(path, str) and path not in ("", ".") and Path(path).parent.name == "model":
            try:
                source = read_run(Path(path).parent.parent)
            except NotAnExperiment:
                return None
            times = [r["time_s"] for r in source.results if "time_s" in r]
            return sum(times) if times else None
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
    best-epoch column of that metric (keys the table has no column for are left out)."""
    expected = {}
    for name, metrics in paper.items():
        columns = {}
        for key, value in metrics.items():
            if key.rpartition("/")[2] in METRIC_NAMES and f"{metric_name(key)} (best)" in table.columns:
                columns[f"{metric_name(key)} (best)"] = value
        if columns:
            expected[name] = columns
    return expected


def build_table(runs: Sequence[Run], expected: Optional[Mapping] = None, *,
                label_folders: bool = False) -> Table:
    """The table of runs of one task (see the module docstring); ``expected`` adds paper/diff columns."""
    if not runs:
        raise ValueError("build_table needs at least one run")
    task = runs[0].task
    if any(run.task != task for run in runs):
        raise ValueError("build_table: runs of one task only (use collect() for a mix)")
    sr = task == SUPER_RESOLUTION
    if sr:
        groups = [g for g, _ in _metric_keys(runs, ("psnr",))]
        metrics = [(f"{g}/{s}" if g else s, metric_name(f"{g}/{s}"))
                   for g in groups for s in ("psnr", "ssim")]
        best_key, higher = _first_key(runs, "psnr"), True
        params = [("block weight params", "block_weight_params", ",.0f"),
                  ("block compression %", "block_compression_pct", ".1f"),
                  ("weight params", "weight_params", ",.0f")]
    else:
        metrics = [(f"{g}/{s}" if g else s, metric_name(f"{g}/{s}"))
                   for g, s in _metric_keys(runs, ("top1_error",))]
        best_key, higher = _first_key(runs, "top1_error"), False
        params = [("weight params", "weight_params", ",.0f"), ("compression %", "compression_pct", ".1f")]
    formats = {column: spec for column, _, spec in params}
    formats.update({"best epoch": "d", "last epoch": "d", "train time s": ".0f"})
    columns = ["run"] + [column for column, _, _ in params] + ["best epoch"]
    for when in ("best", "last"):
        if when == "last":
            columns.append("last epoch")
        for key, name in metrics:
            column = f"{name} ({when})"
            columns.append(column)
            formats[column] = ".4f" if key.endswith("ssim") else ".2f"
    columns.append("train time s")

    rows = []
    for run, label in zip(runs, [run.name for run in runs] if label_folders else labels(runs)):
        row = {"run": label, "model": run.model, "folder": str(run.folder)}
        for column, key, _ in params:
            row[column] = run.summary.get(key)
        picks = {"best": _best_record(run, best_key, higher) if best_key else None, "last": run.results[-1]}
        for when, record in picks.items():
            row[f"{when} epoch"] = record["epoch"] if record else None
            values = flatten(record["metrics"]) if record else {}
            for key, name in metrics:
                row[f"{name} ({when})"] = values.get(key)
        row["train time s"] = train_time(run)
        rows.append(row)

    table = Table(task, columns, rows, formats, x_column=params[0][0],
                  y_columns=[f"{name} (best)" for key, name in metrics if not key.endswith("ssim")])
    if expected:
        add_expected(table, expected)
    return table


def add_expected(table: Table, expected: Mapping) -> None:
    """Add ``COLUMN paper`` and ``COLUMN diff`` after each column that ``expected`` names.

    ``expected`` maps a row's label or its folder name to ``{column: value}``.
    """
    named = [c for c in table.columns if any(c in values for values in expected.values())]
    unknown = {c for values in expected.values() for c in values} - set(table.columns)
    if unknown:
        raise ValueError(f"expected names columns the table does not have: {sorted(unknown)}; "
                         f"columns: {table.columns}")
    for row in table.rows:
        values = expected.get(row["run"], expected.get(Path(row["folder"]).name, {}))
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


def plot(table: Table, path) -> None:
    """Error (or PSNR per test set) at the best epoch against weight parameters, one marker per row.

    A row without a weight count (e.g. a reference with no summary value) is a dashed horizontal line.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = table.y_columns or ["(no metric)"]
    figure = Figure(figsize=(6.5 * len(panels), 4.5))
    FigureCanvasAgg(figure)
    for index, y_column in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), index + 1)
        for number, row in enumerate(table.rows):
            x, y = row.get(table.x_column), row.get(y_column)
            if y is None:
                continue
            colour = f"C{number % 10}"
            if x is None:
                axes.axhline(y, linestyle="--", color=colour, label=row["run"])
            else:
                axes.plot([x], [y], marker="o", linestyle="", color=colour)
                axes.annotate(row["run"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        axes.set_xlabel(table.x_column)
        axes.set_ylabel(y_column)
        axes.grid(True, alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=7)
    figure.tight_layout()
    write_atomic(path, lambda f: figure.savefig(f, format="png", dpi=100))


def collect(folders: Sequence, out, name: Optional[str] = None, expected: Optional[Mapping] = None,
            warn=None, paper: Optional[Mapping] = None) -> dict:
    """Read the folders, write ``NAME.md``, ``NAME.csv``, ``NAME.png`` under ``out`` per task; the tables.

    ``NAME`` is the task (``classification``, ``super_resolution``) or, when given, ``name`` (with
    ``_task`` added if the folders hold both tasks).  Skipped folders are reported through ``warn``
    (default: a line on standard error).  No experiment folder at all is a :class:`UserError`.
    ``paper`` (:func:`read_paper`) adds the paper's values and labels the rows by folder name.
    """
    warn = warn or (lambda line: print(line, file=sys.stderr))
    runs, skipped = read_runs(folders)
    for _, reason in skipped:
        warn(f"skipped {reason}")
    if not runs:
        raise UserError(f"no experiment folder among {[str(f) for f in folders]} (each needs "
                        f"{', '.join(FILES)} with at least one evaluation)")
    tasks = list(dict.fromkeys(run.task for run in runs))
    out = Path(out)
    tables = {}
    for task in tasks:
        table = build_table([run for run in runs if run.task == task], expected, label_folders=bool(paper))
        if paper and paper_columns(paper, table):
            add_expected(table, paper_columns(paper, table))
        stem = task if not name else (name if len(tasks) == 1 else f"{name}_{task}")
        write_text_atomic(out / f"{stem}.md", to_markdown(table))
        write_text_atomic(out / f"{stem}.csv", to_csv(table))
        plot(table, out / f"{stem}.png")
        tables[task] = table
    return tables


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m filter_basis.collect",
        description="Tabulate experiment folders: Markdown + CSV table and a plot of error/PSNR against "
                    "weight parameters. Folders that are not experiment folders are named and skipped.")
    parser.add_argument("folders", nargs="+", metavar="DIR", help="experiment folders (DIR_SAVE/SAVE)")
    parser.add_argument("--out", default=".", help="folder for the table and plot files (default: .)")
    parser.add_argument("--name", default=None,
                        help="file name stem (default: the task, classification or super_resolution)")
    parser.add_argument("--paper", default=None, metavar="TSV",
                        help="reference values by folder name (columns name, paper_metrics), e.g. "
                             "scripts/paper/configs.tsv: adds 'paper' and 'diff' columns")
    parser.add_argument("--quiet", action="store_true", help="do not print the tables")
    args = parser.parse_args(argv)
    return report_errors(lambda: _tabulate(args))


def _tabulate(args: argparse.Namespace) -> None:
    paper = read_paper(args.paper) if args.paper else None
    tables = collect(args.folders, args.out, args.name, paper=paper)
    if not args.quiet:
        for task, table in tables.items():
            print(f"\n{task}\n\n{to_markdown(table)}")


if __name__ == "__main__":
    sys.exit(main())
