"""basisify: which convolutions it converts, that the converted model computes the same, the report."""

import copy

import pytest
import torch
import torchvision
from torch import nn

from filter_basis import Basis, BasisConv2d, ConversionReport, basisify


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=10).eval()


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.ModuleDict({
        "stem": nn.Conv2d(3, 8, 3, padding=1),
        "body": nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.ReLU(),
                              nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU()),
        "wide": nn.Conv2d(16, 16, 5, padding=2),
        "pointwise": nn.Conv2d(16, 16, 1),
        "depthwise": nn.Conv2d(16, 16, 3, padding=1, groups=16),
        "dilated": nn.Conv2d(16, 16, 3, padding=2, dilation=2),
    })).eval()


def run_small(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    parts = net[0]
    y = parts["body"](parts["stem"](x))
    y = parts["wide"](y)
    y = parts["pointwise"](y)
    return parts["dilated"](parts["depthwise"](y))


def test_resnet18_full_rank_conversion_keeps_outputs(resnet18):
    """Basis 8 / 72 filters (= 8 x 3 x 3, full rank): every 3x3 conv but the 3-channel stem converts."""
    model = copy.deepcopy(resnet18)
    x = torch.randn(2, 3, 32, 32)
    expected = model(x)
    report = basisify(model, 8, 72)
    assert isinstance(report, ConversionReport)
    three_by_three = [n for n, m in resnet18.named_modules()
                      if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert [r.path for r in report.replaced] == three_by_three and len(three_by_three) == 16
    assert all(isinstance(model.get_submodule(n), BasisConv2d) for n in three_by_three)
    assert all(not m.training for m in model.modules())
    skipped = {s.path: s.reason for s in report.skipped}
    assert skipped == {
        "conv1": "basis_size 8 does not divide in_channels 3",
        "layer2.0.downsample.0": "kernel size 1 not wanted (kernel_sizes: every size but 1)",
        "layer3.0.downsample.0": "kernel size 1 not wanted (kernel_sizes: every size but 1)",
        "layer4.0.downsample.0": "kernel size 1 not wanted (kernel_sizes: every size but 1)",
    }
    assert max(r.relative_error for r in report.replaced) < 1e-5
    out = model(x)
    assert (out - expected).norm() / expected.norm() < 1e-4
    # Report parameter counts are the modules' own counts.
    conv = resnet18.get_submodule("layer4.1.conv2")
    row = report.replaced[-1]
    assert row.path == "layer4.1.conv2" and row.n_splits == 64 and row.basis == "own"
    assert row.params_before == conv.weight.numel() == 512 * 512 * 9
    assert row.params_after == 72 * 8 * 9 + 512 * 64 * 72  # torchvision convs have no bias
    assert report.params_after == sum(sum(p.numel() for p in model.get_submodule(r.path).parameters())
                                      for r in report.replaced)


def test_resnet18_stem_is_converted_when_asked_for_with_a_fitting_split(resnet18):
    """The 7x7 stem has 3 input channels: basis_size 64 cannot split it; basis_size 3 with 147 filters
    (3 x 7 x 7, full rank) converts it exactly; asking for it by name with 64 is an error."""
    with pytest.raises(ValueError, match="'conv1' was asked for by name .* basis_size 64 does not divide "
                                         "in_channels 3"):
        basisify(copy.deepcopy(resnet18), 64, 576, include="conv1")
    model = copy.deepcopy(resnet18)
    x = torch.randn(1, 3, 32, 32)
    expected = model(x)
    report = basisify(model, 3, 147, include="conv1")
    assert [r.path for r in report.replaced] == ["conv1"]
    assert model.conv1.kernel_size == 7 and model.conv1.stride == (2, 2) and model.conv1.padding == (3, 3)
    assert all(s.reason == "not matched by include" for s in report.skipped) and len(report.skipped) == 19
    torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-4)


def test_low_rank_conversion_error_decreases_with_n_basis():
    """0.wide: 16 -> 16, 5x5, two splits of 8: 32 filter rows, so rank 32."""
    errors = [basisify(small_net(), 8, n_basis, include="0.wide").replaced[0].relative_error
              for n_basis in (4, 12, 24, 32)]
    assert errors[0] > errors[1] > errors[2] > 0.05 and errors[3] < 1e-5


def test_skip_reasons_and_type_filters():
    net = small_net()
    x = torch.randn(1, 3, 12, 12)
    expected = run_small(net, x)
    report = basisify(net, 8, 200, kernel_sizes=(1, 3, 5), min_channels=16)
    assert [r.path for r in report.replaced] == ["0.wide", "0.pointwise"]
    assert {s.path: s.reason for s in report.skipped} == {
        "0.stem": "basis_size 8 does not divide in_channels 3",
        "0.body.0": "in_channels 8 < min_channels 16",
        "0.body.2": "in_channels 8 < min_channels 16",
        "0.depthwise": "grouped convolution (groups=16)",
        "0.dilated": "dilated convolution (dilation=(2, 2))",
    }
    torch.testing.assert_close(run_small(net, x), expected, rtol=1e-4, atol=1e-4)


def test_include_exclude_patterns():
    net = small_net()
    report = basisify(net, 8, 72, include="0.body.*", exclude="0.body.2")
    assert [r.path for r in report.replaced] == ["0.body.0"]
    assert {s.path: s.reason for s in report.skipped}["0.body.2"] == "matched by exclude '0.body.2'"
    with pytest.raises(ValueError, match="pattern 'body.*' matches no nn.Conv2d"):
        basisify(small_net(), 8, 72, include="body.*")
    with pytest.raises(ValueError, match="pattern 'nothing' matches no nn.Conv2d"):
        basisify(small_net(), 8, 72, exclude="nothing")
    with pytest.raises(ValueError, match="'0.depthwise' was asked for by name .* grouped convolution"):
        basisify(small_net(), 8, 72, include=["0.body.*", "0.depthwise"])
    with pytest.raises(ValueError, match="'0.pointwise' was asked for by name .* kernel size 1 not wanted"):
        basisify(small_net(), 8, 72, include="0.pointwise")
    with pytest.raises(ValueError, match="'0.wide' was asked for by name .* matched by exclude '0.w\\*'"):
        basisify(small_net(), 8, 72, include="0.wide", exclude="0.w*")


def test_failed_named_request_leaves_the_model_unchanged():
    net = small_net()
    with pytest.raises(ValueError):
        basisify(net, 8, 72, include=["0.body.*", "0.depthwise"])
    assert not any(isinstance(m, BasisConv2d) for m in net.modules())


def test_share_true_fits_one_joint_basis_per_kernel_size():
    net = small_net()
    x = torch.randn(1, 3, 12, 12)
    expected = run_small(net, x)
    report = basisify(net, 8, 72, share=True, exclude="0.wide")
    body0, body2 = net[0]["body"][0], net[0]["body"][2]
    assert body0.basis is body2.basis and body0.basis.weight.shape == (72, 8, 3, 3)
    assert report.shared_bases == {"basis_3x3": 72 * 8 * 9}
    assert [r.basis for r in report.replaced] == ["basis_3x3", "basis_3x3"]
    torch.testing.assert_close(run_small(net, x), expected, rtol=1e-4, atol=1e-4)
    # The shared basis is counted once in the report and in the model.
    own = sum(r.params_after for r in report.replaced)
    assert report.params_after == own + 72 * 8 * 9
    assert sum(p.numel() for p in net[0]["body"].parameters()) == report.params_after


def test_shared_basis_is_the_joint_best_fit():
    """A shared basis of n filters is the top-n subspace of both layers' splits: better for the pair
    than either layer's own basis, worse for each layer than its own."""
    own_net, shared_net = small_net(), small_net()
    own = basisify(own_net, 8, 12, include="0.body.*")
    shared = basisify(shared_net, 8, 12, include="0.body.*", share=[["0.body.*"]])
    assert shared.shared_bases == {"shared_0": 12 * 8 * 9}
    for o, s in zip(own.replaced, shared.replaced):
        assert s.relative_error > o.relative_error
    originals = small_net()[0]["body"]

    def total_squared_error(basis):
        layers = [BasisConv2d.from_conv(originals[i], 8, None, basis=basis) for i in (0, 2)]
        return sum((layer.merged_weight() - originals[i].weight).pow(2).sum().item()
                   for layer, i in zip(layers, (0, 2)))

    joint = total_squared_error(shared_net[0]["body"][0].basis)
    assert all(joint < total_squared_error(own_net[0]["body"][i].basis) for i in (0, 2))


def test_share_groups_validation():
    net = small_net()
    report = basisify(net, 8, 72, kernel_sizes=(1, 3), share=["0.body.*", ["0.pointwise"]])
    assert set(report.shared_bases) == {"shared_0", "shared_1"}
    assert [r.basis for r in report.replaced] == ["shared_0", "shared_0", "shared_1"]
    one_group = basisify(small_net(), 8, 72, share="0.body.*")
    assert [r.basis for r in one_group.replaced] == ["shared_0", "shared_0", "own"]
    with pytest.raises(ValueError, match="pattern '0.nothing' matches no nn.Conv2d"):
        basisify(small_net(), 8, 72, share=["0.body.*", "0.nothing"])
    with pytest.raises(ValueError, match="layer '0.body.0' matches share groups \\[0, 1\\]"):
        basisify(small_net(), 8, 72, share=["0.body.*", "0.body.0"])
    with pytest.raises(ValueError, match="share group shared_0 mixes kernel sizes \\[3, 5\\]"):
        basisify(small_net(), 8, 72, share=[["0.body.2", "0.wide"]])


def test_existing_basis_layers_and_reused_modules():
    conv = nn.Conv2d(8, 8, 3, padding=1)
    torch.manual_seed(0)
    basis_layer = BasisConv2d(8, 8, 3, 8, 4, basis=Basis(4, 8, 3))
    net = nn.Sequential(conv, nn.ReLU(), conv, basis_layer)
    x = torch.randn(1, 8, 6, 6)
    expected = net(x)
    report = basisify(net, 4, 36, kernel_sizes=(1, 3))
    # The conv registered twice is converted once and replaced at both places; the projection inside
    # the existing basis layer is not touched.
    assert [r.path for r in report.replaced] == ["0"] and report.skipped == []
    assert net[0] is net[2] and isinstance(net[0], BasisConv2d)
    assert net[3] is basis_layer and isinstance(basis_layer.projection, nn.Conv2d)
    torch.testing.assert_close(net(x), expected, rtol=1e-4, atol=1e-4)


def test_report_prints_a_table():
    net = small_net()
    report = basisify(net, 8, 72, share=[["0.body.*"]])
    text = str(report)
    lines = text.splitlines()
    assert lines[0] == "basisify: basis_size 8, n_basis 72: 3 convolutions replaced, 4 left as they are"
    assert lines[1].split() == ["layer", "in", "out", "k", "splits", "basis", "rel.", "error", "params",
                                "->", "params"]
    assert any(line.split()[:6] == ["0.wide", "16", "16", "5", "2", "own"] for line in lines)
    shared_row = next(line for line in lines if line.startswith("shared_0 (shared basis)"))
    assert shared_row.endswith(f"{72 * 8 * 9:,}")
    total = next(line for line in lines if line.startswith("total"))
    assert total.split()[1:] == [f"{report.params_before:,}", f"{report.params_after:,}"]
    assert "left as they are:" in lines
    assert any(line.split() == ["0.stem", "basis_size", "8", "does", "not", "divide", "in_channels", "3"]
               for line in lines)


@pytest.mark.parametrize("kwargs,message", [
    (dict(basis_size=0), "basisify: basis_size must be an integer >= 1, got 0"),
    (dict(n_basis=-1), "basisify: n_basis must be an integer >= 1, got -1"),
    (dict(min_channels=0), "basisify: min_channels must be an integer >= 1, got 0"),
])
def test_invalid_arguments(kwargs, message):
    args = dict(basis_size=8, n_basis=8)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        basisify(small_net(), **args)
    with pytest.raises(ValueError, match="single nn.Conv2d"):
        basisify(nn.Conv2d(8, 8, 3), 8, 8)
