"""The run's pictures: curves over whole epochs, and the basis pictures (colour scale, title, layers)."""

import imageio.v3 as iio
import pytest
import torch
from torch import nn

from filter_basis.engine.plots import basis_figure, epoch_figure, plot_results, save_basis_images
from filter_basis.layers.basis_conv import Basis, BasisConv2d


@pytest.mark.parametrize("epochs", [[1], [1, 2], [0, 1, 2], list(range(1, 41))])
def test_epoch_ticks_are_whole_numbers_even_for_a_one_epoch_run(epochs):
    figure = epoch_figure(epochs, [1.0 / (e + 1) for e in epochs], "loss", "loss (run)")
    ticks = figure.axes[0].get_xticks()
    low, high = figure.axes[0].get_xlim()
    shown = [t for t in ticks if low <= t <= high]
    assert shown and all(float(t).is_integer() for t in shown), shown
    if len(epochs) <= 10:
        assert shown == epochs  # every epoch labelled


def test_one_epoch_results_are_plotted(tmp_path):
    plot_results([{"epoch": 1, "train_loss": 0.5, "metrics": {"Set5": {"psnr": 30.0}}}], tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plot_Set5_psnr.png", "plot_train_loss.png"]


class TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.basis = Basis(6, 4, 3)
        self.first = BasisConv2d(4, 8, 3, 4, 6, basis=self.basis)
        self.second = BasisConv2d(4, 8, 3, 4, 6, basis=self.basis)


def test_a_basis_picture_has_a_diverging_colour_scale_and_names_the_basis_and_its_layers(tmp_path):
    model = TwoLayers()
    with torch.no_grad():
        model.basis.weight.zero_()
        model.basis.weight[0, 0, 0, 0] = -2.0
        model.basis.weight[5, 0, 2, 2] = 1.0
    figure = basis_figure("basis", model.basis.weight, ["first", "second"])
    axes, colour_bar = figure.axes  # the picture and its colour scale
    image = axes.get_images()[0]
    assert image.get_cmap().name.startswith("RdBu")
    assert image.get_clim() == (-2.0, 2.0)  # symmetric about 0: white is zero
    assert axes.get_title() == "basis: 6 filters 4x3x3 (input channel 1 shown)\nused by first, second"
    assert colour_bar.get_ylabel() == "weight"

    assert save_basis_images(model, tmp_path) == [tmp_path / "basis.png"]
    picture = iio.imread(tmp_path / "basis.png")[..., :3].astype(int)
    assert picture.shape[0] >= 300 and picture.shape[1] >= 400
    red = (picture[..., 0] > 150) & (picture[..., 2] < 100)
    blue = (picture[..., 2] > 100) & (picture[..., 0] < 60)
    assert red.any() and blue.any()  # negative and positive weights in different colours


def test_long_layer_lists_are_shortened_in_the_title():
    figure = basis_figure("basis1", torch.zeros(2, 1, 3, 3), [f"layer{i}" for i in range(7)])
    assert figure.axes[0].get_title().endswith("used by layer0, layer1, layer2, layer3 and 3 more")
