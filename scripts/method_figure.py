"""Draw the method from a real BasisConv2d: input splits, the shared basis, the basis responses, the 1x1
projection and the output (the README's picture, docs/method.png).

    python scripts/method_figure.py [OUT.png]          (default: docs/method.png)

The layer is ``BasisConv2d(12, 8, 3, basis_size=4, n_basis=3)`` fitted in closed form
(``BasisConv2d.from_conv``) to a dense 3x3 convolution of oriented edge and blob filters, and applied to
twelve channels made from scikit-image's ``camera`` picture; every panel shows the layer's own tensors.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from matplotlib.patches import FancyArrowPatch, Rectangle  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from filter_basis import BasisConv2d  # noqa: E402
from filter_basis.complexity import weight_params  # noqa: E402
from filter_basis.engine.checkpoint import write_atomic  # noqa: E402

IN, OUT, BASIS_SIZE, N_BASIS, K = 12, 8, 4, 3, 3
SPLIT_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c")
SIZE = 48


def dense_conv() -> torch.nn.Conv2d:
    """A dense 3x3 convolution 12 -> 8 whose filters are mixtures of edge, blob and flat kernels."""
    gx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]) / 4
    kernels = torch.stack([gx, gx.T, torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]) / 4,
                           torch.ones(3, 3) / 9])
    generator = torch.Generator().manual_seed(3)
    mix = torch.randn(OUT, IN, len(kernels), generator=generator)
    conv = torch.nn.Conv2d(IN, OUT, K, padding=1)
    with torch.no_grad():
        conv.weight.copy_(torch.einsum("oik,khw->oihw", mix, kernels))
        conv.bias.zero_()
    return conv


def input_maps() -> torch.Tensor:
    """Twelve channels from the camera picture: four shifted/flipped crops per split, scaled to [0, 1]."""
    from skimage import data

    image = torch.from_numpy(data.camera().astype(np.float32) / 255)[None, None]
    image = F.interpolate(image, size=(4 * SIZE, 4 * SIZE), mode="area")[0, 0]
    channels = []
    for c in range(IN):
        y, x = (c % 4) * SIZE // 2, (c // 4) * SIZE // 2 + SIZE // 2
        crop = image[y:y + SIZE * 2:2, x:x + SIZE * 2:2]
        channels.append(crop.flip(1) if c % 2 else crop)
    return torch.stack(channels)[None]


def tile(axes, array, title=None, colour=None, cmap="gray", symmetric=False):
    array = np.asarray(array)
    if symmetric:
        vmax = float(np.abs(array).max()) or 1.0
        axes.imshow(array, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
    else:
        axes.imshow(array, cmap=cmap)
    axes.set_xticks([])
    axes.set_yticks([])
    for spine in axes.spines.values():
        spine.set_edgecolor(colour or "#888888")
        spine.set_linewidth(2.5 if colour else 0.8)
    if title:
        axes.set_title(title, fontsize=7, pad=2)


def draw(path: Path) -> dict:
    torch.manual_seed(0)
    layer = BasisConv2d.from_conv(dense_conv(), BASIS_SIZE, N_BASIS)
    x = input_maps()
    with torch.no_grad():
        responses = layer.basis_forward(x)[0]  # (splits x n_basis) maps, split-major
        output = layer(x)[0]
    basis = layer.basis_weight().detach()  # (n_basis, basis_size, k, k), shared by every split
    projection = layer.projection.weight.detach()[:, :, 0, 0]  # (out, splits x n_basis)

    width, height = 11.0, 5.4
    figure = plt.figure(figsize=(width, height))

    def axes_at(x: float, y: float, size: float):
        """A square panel whose lower-left corner is (x, y) in figure fractions, ``size`` high."""
        return figure.add_axes((x, y, size * height / width, size))

    top, bottom = 0.82, 0.13
    splits = IN // BASIS_SIZE
    # input: 12 channels in 3 coloured splits
    size, gap = 0.044, 0.03
    step = min((top - bottom - (splits - 1) * gap - size) / (IN - 1), size * 1.15)
    y = top - size
    for c in range(IN):
        if c and c % BASIS_SIZE == 0:
            y -= gap
        tile(axes_at(0.03, y, size), x[0, c], colour=SPLIT_COLOURS[c // BASIS_SIZE])
        y -= step
    # the shared basis: one row per filter, one tile per input channel of a split
    size = 0.17
    for j in range(N_BASIS):
        for c in range(BASIS_SIZE):
            tile(axes_at(0.15 + c * 0.095, top - size - j * 0.235, size), basis[j, c], symmetric=True,
                 title=f"filter {j + 1}, channel {c + 1}")
    # basis responses: split-major, grouped by split
    size, gap = 0.062, 0.035
    y = top - size
    for m in range(responses.shape[0]):
        if m and m % N_BASIS == 0:
            y -= gap
        tile(axes_at(0.585, y, size), responses[m], colour=SPLIT_COLOURS[m // N_BASIS],
             title=None)
        y -= size + 0.012
    # the 1x1 projection
    proj = figure.add_axes((0.68, 0.3, 0.17, 0.36))
    tile(proj, projection, symmetric=True)
    proj.set_xlabel("columns: responses of split 1 | 2 | 3\nrows: output channels", fontsize=8)
    for s in range(1, splits):
        proj.axvline(s * N_BASIS - 0.5, color="black", linewidth=1)
    # output
    size = 0.075
    for o in range(OUT):
        tile(axes_at(0.9, top - size - o * (size + 0.015), size), output[o])

    heads = ((0.02, f"input: {IN} channels\n= {splits} splits of {BASIS_SIZE}"),
             (0.15, f"shared basis: {N_BASIS} filters of {BASIS_SIZE} x {K} x {K} (one per row),\n"
                    f"applied to every split"),
             (0.555, f"{splits} x {N_BASIS} basis\nresponses"),
             (0.68, f"1x1 projection\n{OUT} x {splits * N_BASIS} weights"),
             (0.885, f"output:\n{OUT} channels"))
    for x0, text in heads:
        figure.text(x0, 0.87, text, fontsize=9, va="bottom", ha="left", weight="bold")
    for x0, x1 in ((0.095, 0.14), (0.53, 0.575), (0.635, 0.675), (0.86, 0.895)):
        figure.add_artist(FancyArrowPatch((x0, 0.47), (x1, 0.47), transform=figure.transFigure,
                                          arrowstyle="-|>", mutation_scale=14, color="black"))
    figure.add_artist(Rectangle((0.135, 0.1), 0.4, 0.76, transform=figure.transFigure, fill=False,
                                linestyle="--", edgecolor="#666666"))
    dense = IN * OUT * K * K
    ours = weight_params(layer)
    figure.text(0.5, 0.015, f"Every split of the input is convolved with the same {N_BASIS} basis filters "
                f"(one convolution call); a 1x1 convolution mixes the {responses.shape[0]} responses "
                f"into the output. Weights: {ours} ({N_BASIS}x{BASIS_SIZE}x{K}x{K} basis + {OUT}x"
                f"{responses.shape[0]} projection) instead of the dense {OUT}x{IN}x{K}x{K} = {dense}.",
                fontsize=8.5, ha="center", wrap=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: figure.savefig(f, format="png", dpi=110))
    plt.close(figure)
    return {"weights": ours, "dense_weights": dense,
            "relative_error": float(layer.reconstruction_error)}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0]) if argv else ROOT / "docs" / "method.png"
    info = draw(path)
    print(f"{path}: {info['weights']} weights instead of {info['dense_weights']}; relative error of the "
          f"fitted filters {info['relative_error']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
