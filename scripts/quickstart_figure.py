"""One picture comparing SR outputs with the ground truth on a crop of a test image.

``comparison_figure`` reads the images that ``--save_results`` wrote
(``<run>/results/<set>_x<s>/<image>_SR.png``) and the HR image of the test set, picks the square crop
where the first output (e.g. Bicubic) is furthest from the ground truth, and draws the whole HR image with
the crop marked, then the crop of the ground truth and of each output, titled with the output's PSNR on
the whole image (Y channel, ``scale`` border pixels cut, as the test pipeline measures it).

    python scripts/quickstart_figure.py OUT.png --set Set5 --image butterfly --scale 2 \
        Bicubic=experiment/quickstart/super_resolution/Bicubic/results ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from filter_basis.engine.checkpoint import write_atomic  # noqa: E402
from filter_basis.errors import DataError, report_errors  # noqa: E402


def hr_path(dir_data: Path, set_name: str, image: str) -> Path:
    """The HR image of a benchmark set (``benchmark/SET/HR``) or of the Photos test split."""
    for folder in (dir_data / "benchmark" / set_name / "HR", dir_data / "super_resolution" / "benchmark" /
                   set_name / "HR", dir_data / set_name / "test" / "HR"):
        if (folder / f"{image}.png").is_file():
            return folder / f"{image}.png"
    raise FileNotFoundError(f"no HR image {image}.png of {set_name} under {dir_data}")


def rgb(path: Path) -> np.ndarray:
    pixels = iio.imread(path)
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, axis=-1)
    return pixels[..., :3].astype(np.float64)


def psnr_y(sr: np.ndarray, hr: np.ndarray, shave: int) -> float:
    """PSNR of the BT.601 luma of the difference with ``shave`` border pixels cut (the Set5 convention)."""
    diff = (sr - hr) / 255.0
    y = diff @ np.array([65.738, 129.057, 25.064]) / 256.0
    if shave:
        y = y[shave:-shave, shave:-shave]
    mse = float(np.mean(y ** 2))
    return float("inf") if mse == 0 else -10.0 * np.log10(mse)


def worst_crop(reference: np.ndarray, hr: np.ndarray, size: int) -> tuple:
    """``(top, left)`` of the ``size`` x ``size`` window with the largest absolute error of ``reference``."""
    error = np.abs(reference - hr).sum(axis=-1)
    table = np.pad(error.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = table[size:, size:] - table[:-size, size:] - table[size:, :-size] + table[:-size, :-size]
    top, left = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(top), int(left)


def comparison_figure(dir_data, outputs: dict, path, *, scale: int, set_name: str, image: str,
                      crop: int = 96) -> dict:
    """Draw the picture; ``outputs`` maps a label to a run's ``results`` folder (first: the reference).

    Returns ``{label: whole-image PSNR}``.  A missing output image is a :class:`FileNotFoundError`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    hr = rgb(hr_path(Path(dir_data), set_name, image))
    images = {}
    for label, results in outputs.items():
        found = Path(results) / f"{set_name}_x{scale}" / f"{image}_SR.png"
        if not found.is_file():
            raise FileNotFoundError(f"{label}: no {found} (run it with --save_results)")
        images[label] = rgb(found)
    height = min(sr.shape[0] for sr in images.values())
    width = min(sr.shape[1] for sr in images.values())
    hr = hr[:height, :width]
    images = {label: sr[:height, :width] for label, sr in images.items()}
    crop = min(crop, height, width)
    top, left = worst_crop(next(iter(images.values())), hr, crop)
    psnr = {label: psnr_y(sr, hr, scale) for label, sr in images.items()}

    panels = [("ground truth", hr)] + [(f"{label}\n{psnr[label]:.2f} dB", sr) for label, sr in images.items()]
    figure = Figure(figsize=(2.6 * (len(panels) + 1), 3.0))
    FigureCanvasAgg(figure)
    whole = figure.add_subplot(1, len(panels) + 1, 1)
    whole.imshow(hr.astype(np.uint8))
    whole.add_patch(Rectangle((left, top), crop, crop, fill=False, edgecolor="red", linewidth=1.5))
    whole.set_title(f"{set_name} {image} x{scale}", fontsize=9)
    for index, (title, pixels) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels) + 1, index + 2)
        axes.imshow(pixels[top:top + crop, left:left + crop].astype(np.uint8), interpolation="nearest")
        axes.set_title(title, fontsize=9)
    for axes in figure.axes:
        axes.set_xticks([])
        axes.set_yticks([])
    figure.tight_layout()
    write_atomic(path, lambda f: figure.savefig(f, format="png", dpi=110))
    return psnr


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="PNG file to write")
    parser.add_argument("outputs", nargs="+", metavar="LABEL=RESULTS_DIR",
                        help="a label and the run's results folder; the first is the reference")
    parser.add_argument("--dir_data", default=str(ROOT / "datasets"))
    parser.add_argument("--set", default="Set5", dest="set_name")
    parser.add_argument("--image", default="butterfly")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--crop", type=int, default=96)
    args = parser.parse_args(argv)
    outputs = dict(item.split("=", 1) for item in args.outputs)

    def draw() -> None:
        try:
            psnr = comparison_figure(args.dir_data, outputs, args.out, scale=args.scale,
                                     set_name=args.set_name, image=args.image, crop=args.crop)
        except FileNotFoundError as error:
            raise DataError(str(error)) from None
        print(" ".join(f"{label} {value:.2f} dB" for label, value in psnr.items()))
    return report_errors(draw)


if __name__ == "__main__":
    sys.exit(main())
