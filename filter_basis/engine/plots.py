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


def basis_image(filters, scale: int = 8, gap: int = 2):
    """One grey tile per basis filter (its first input channel), ``scale`` pixels per weight, mid-grey 0.

    Every tile is scaled by its own largest magnitude, so shapes, not sizes, are compared; returns a
    ``uint8`` array of rows x columns tiles (columns ~ sqrt of the number of filters).
    """
    import numpy as np

    weights = filters.detach().float().cpu()[:, 0].numpy()  # (n, k, k)
    n, kh, kw = weights.shape
    peak = np.abs(weights).reshape(n, -1).max(axis=1)
    tiles = 0.5 + 0.5 * weights / np.where(peak > 0, peak, 1)[:, None, None]
    columns = int(np.ceil(np.sqrt(n)))
    rows = -(-n // columns)
    th, tw = kh * scale, kw * scale
    image = np.full((rows * (th + gap) + gap, columns * (tw + gap) + gap), 255, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        y, x = gap + r * (th + gap), gap + c * (tw + gap)
        image[y:y + th, x:x + tw] = np.kron(tile, np.ones((scale, scale))).clip(0, 1) * 255
    return image


def save_basis_images(model, folder: Path) -> list:
    """``<folder>/<basis path>.png`` for every filter basis of ``model`` (a shared one once); the paths
    written."""
    import imageio.v3 as iio

    from ..layers.basis_conv import Basis

    written = []
    for name, module in model.named_modules():
        if isinstance(module, Basis):
            path = folder / f"{name or 'basis'}.png"
            png = iio.imwrite("<bytes>", basis_image(module.weight), extension=".png")
            write_atomic(path, lambda f, png=png: f.write(png))
            written.append(path)
    return written
