"""PNG curves of the training loss and of every test metric over epochs (no display needed)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .checkpoint import write_atomic
from .meters import flatten


def plot_results(results: list, folder: Path) -> None:
    """``plot_train_loss.png`` and ``plot_<metric>.png`` (metric path with '/' -> '_') from results.json."""
    trained = [r for r in results if "train_loss" in r]
    if trained:
        _plot([r["epoch"] for r in trained], [r["train_loss"] for r in trained], "training loss",
              folder / "plot_train_loss.png")
    series: dict = {}
    for record in results:
        for key, value in flatten(record["metrics"]).items():
            series.setdefault(key, []).append((record["epoch"], value))
    for key, points in series.items():
        name = f"plot_{key.replace('/', '_')}.png"
        _plot([e for e, _ in points], [v for _, v in points], key, folder / name)


def _plot(epochs: list, values: list, label: str, path: Path) -> None:
    figure = Figure(figsize=(6, 4))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot(epochs, values, marker="o" if len(epochs) < 30 else None, label=label)
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    axes.set_title(f"{label} ({path.parent.name})")
    axes.set_ylabel(label)
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    write_atomic(path, lambda f: figure.savefig(f, format="png"))
