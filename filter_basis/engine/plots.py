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


def epoch_figure(epochs: list, values: list, label: str, title: str) -> Figure:
    """One curve over epochs; the epoch axis has whole-number ticks only (a one-epoch run included)."""
    figure = Figure(figsize=(6, 4))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot(epochs, values, marker="o" if len(epochs) < 30 else None, label=label)
    axes.set_xlabel("epoch")
    distinct = sorted(set(epochs))
    if len(distinct) <= 10:  # MaxNLocator falls back to fractions when fewer than two integers are in view
        axes.set_xticks(distinct)
        axes.set_xlim(distinct[0] - 0.5, distinct[-1] + 0.5)
    else:
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_title(title)
    axes.set_ylabel(label)
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    return figure


def _plot(epochs: list, values: list, label: str, path: Path) -> None:
    figure = epoch_figure(epochs, values, label, f"{label} ({path.parent.name})")
    write_atomic(path, lambda f: figure.savefig(f, format="png"))


def basis_grid(filters, gap: int = 1):
    """The first input channel of every basis filter as one tile of a grid (columns ~ sqrt of the number
    of filters), tiles ``gap`` weights apart; a float array, NaN between tiles (drawn blank)."""
    import numpy as np

    weights = filters.detach().float().cpu()[:, 0].numpy()  # (n, k, k)
    n, kh, kw = weights.shape
    columns = int(np.ceil(np.sqrt(n)))
    rows = -(-n // columns)
    grid = np.full((rows * (kh + gap) - gap, columns * (kw + gap) - gap), np.nan)
    for i, tile in enumerate(weights):
        r, c = divmod(i, columns)
        grid[r * (kh + gap):r * (kh + gap) + kh, c * (kw + gap):c * (kw + gap) + kw] = tile
    return grid


def _layer_list(layers: list, shown: int = 4) -> str:
    if not layers:
        return "no layer"
    more = f" and {len(layers) - shown} more" if len(layers) > shown else ""
    return ", ".join(layers[:shown]) + more


def basis_figure(name: str, filters, layers: list) -> Figure:
    """The filters of one basis on a diverging colour map (blue negative, white 0, red positive) with its
    colour scale, all filters on one scale; titled with the basis and the layers that use it."""
    import numpy as np
    from matplotlib import colormaps

    grid = basis_grid(filters)
    peak = float(np.nanmax(np.abs(grid))) or 1.0
    n, width, kh, kw = filters.shape
    rows, columns = grid.shape
    scale = min(0.6, 10 / max(rows, columns))  # inches per weight: large tiles, at most ~10 inches across
    figure = Figure(figsize=(max(5.0, columns * scale + 2.0), max(4.0, rows * scale + 1.5)), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    cmap = colormaps["RdBu_r"].with_extremes(bad="white")
    shown = axes.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=-peak, vmax=peak, interpolation="nearest")
    axes.set_xticks([])
    axes.set_yticks([])
    figure.colorbar(shown, ax=axes, label="weight", shrink=0.8)
    axes.set_title(f"{name}: {n} filters {width}x{kh}x{kw} (input channel 1 shown)\n"
                   f"used by {_layer_list(layers)}", fontsize=9)
    return figure


def save_basis_images(model, folder: Path) -> list:
    """``<folder>/<basis path>.png`` for every filter basis of ``model`` (a shared one once); the paths
    written."""
    from ..layers.basis_conv import Basis, BasisConv2d

    users: dict = {}
    for name, module in model.named_modules():
        if isinstance(module, BasisConv2d):
            users.setdefault(id(module.basis), []).append(name)
    written = []
    for name, module in model.named_modules():
        if isinstance(module, Basis):
            path = folder / f"{name or 'basis'}.png"
            figure = basis_figure(name or "basis", module.weight, users.get(id(module), []))
            write_atomic(path, lambda f, fig=figure: fig.savefig(f, format="png", bbox_inches="tight"))
            written.append(path)
    return written
