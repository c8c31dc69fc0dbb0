"""summarize(): parameter counts, FLOPs from FlopCounterMode, rows, compression, meta-device counting."""

import json

import pytest
import torch
from torch import nn

from filter_basis import Basis, BasisConv2d, Summary, summarize


def conv_flops(c_out, c_in, k, h, w, groups=1):
    """Analytic FLOPs of a convolution producing h x w maps: 2 x multiply-accumulates."""
    return 2 * c_out * (c_in // groups) * k * k * h * w


def small_classifier():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.BatchNorm1d(16), nn.Linear(16, 10),
    )


class ResidualBlock(nn.Module):
    def __init__(self, conv1, conv2):
        super().__init__()
        self.body = nn.Sequential(conv1, nn.ReLU(), conv2)

    def forward(self, x):
        return x + self.body(x)


class TinySR(nn.Module):
    """An EDSR-shaped network: head, residual blocks, tail; ``conv`` makes the block convolutions."""

    def __init__(self, conv, n_feats=16, n_blocks=2):
        super().__init__()
        self.head = nn.Conv2d(3, n_feats, 3, padding=1)
        self.body = nn.Sequential(*[ResidualBlock(*conv()) for _ in range(n_blocks)])
        self.tail = nn.Conv2d(n_feats, 3, 3, padding=1)

    def forward(self, x):
        return self.tail(self.body(self.head(x)))


def dense_pair(n_feats=16):
    return nn.Conv2d(n_feats, n_feats, 3, padding=1), nn.Conv2d(n_feats, n_feats, 3, padding=1)


def shared_basis_pair(n_feats=16, n_basis=4):
    basis = Basis(n_basis, n_feats)
    return (BasisConv2d(n_feats, n_feats, 3, n_feats, n_basis, basis=basis),
            BasisConv2d(n_feats, n_feats, 3, n_feats, n_basis, basis=basis))


def test_parameter_counts_follow_the_formulas():
    summary = summarize(small_classifier(), (3, 8, 8))
    weights = 8 * 3 * 9 + 16 * 8 * 9 + 10 * 16
    others = 8 + 2 * 8 + 2 * 16 + 10  # conv bias, two BatchNorms, linear bias
    assert summary.weight_params == weights
    assert summary.params == weights + others


def test_rows_add_up_to_the_totals():
    summary = summarize(TinySR(shared_basis_pair), (3, 6, 6))
    assert sum(r.params for r in summary.modules) == summary.params
    assert sum(r.weight_params for r in summary.modules) == summary.weight_params
    assert sum(r.flops for r in summary.modules) == summary.flops
    assert [r.name for r in summary.blocks] == ["body.0", "body.1"]
    assert sum(r.flops for r in summary.blocks) + summary.modules[1].flops + summary.modules[-1].flops \
        == summary.flops  # head + blocks + tail


def test_shared_basis_is_counted_once():
    basis = Basis(5, 4)
    model = nn.Sequential(BasisConv2d(8, 6, 3, 4, 5, basis=basis), BasisConv2d(6, 8, 3, 2, 5, basis=basis))
    summary = summarize(model, (8, 5, 5))
    weights = 5 * 4 * 9 + 6 * 2 * 5 + 8 * 3 * 5  # one basis, two projections
    biases = 2 * 5 + 6 + 8  # each layer's own basis bias, two projection biases
    assert summary.weight_params == weights
    assert summary.params == weights + biases
    assert [r.name for r in summary.modules].count("0.basis") == 1
    assert "1.basis" not in [r.name for r in summary.modules]


@pytest.mark.parametrize("in_channels,basis_size,n_basis,stride", [(8, 4, 5, 1), (8, 4, 5, 2), (6, 6, 7, 1)])
def test_basis_layer_flops_equal_the_analytic_count(in_channels, basis_size, n_basis, stride):
    layer = BasisConv2d(in_channels, 6, 3, basis_size, n_basis, stride=stride)
    h, w = 10 // stride, 12 // stride
    splits = in_channels // basis_size
    expected = (conv_flops(splits * n_basis, in_channels, 3, h, w, groups=splits)  # basis conv
                + conv_flops(6, splits * n_basis, 1, h, w))  # projection
    assert summarize(layer, (in_channels, 10, 12)).flops == expected


def test_dense_conv_flops():
    assert summarize(nn.Conv2d(5, 7, 3, padding=1), (5, 9, 11)).flops == 2 * 7 * 5 * 9 * 9 * 11


def test_compression_against_a_baseline_and_per_block():
    n_feats, n_basis = 16, 4
    summary = summarize(TinySR(shared_basis_pair), (3, 6, 6), TinySR(dense_pair), block="body.0")
    outer = 2 * (3 * n_feats * 9)  # head and tail
    block = n_basis * n_feats * 9 + 2 * n_feats * n_basis  # one shared basis, two projections
    baseline_block = 2 * n_feats * n_feats * 9
    assert summary.weight_params == outer + 2 * block
    assert summary.baseline_weight_params == outer + 2 * baseline_block
    assert summary.compression_pct == pytest.approx(100 * (outer + 2 * block) / (outer + 2 * baseline_block))
    assert summary.block_weight_params == block
    assert summary.baseline_block_weight_params == baseline_block
    assert summary.block_compression_pct == pytest.approx(100 * 704 / 4608)


def test_to_dict_is_json_with_the_contract_keys():
    summary = summarize(TinySR(shared_basis_pair), (3, 6, 6), TinySR(dense_pair), block="body.0")
    data = json.loads(json.dumps(summary.to_dict()))
    assert set(data) == {"params", "weight_params", "flops", "baseline_weight_params", "compression_pct",
                         "block_weight_params", "baseline_block_weight_params", "block_compression_pct"}
    assert data["flops"] == summary.flops
    assert set(summarize(nn.Conv2d(1, 1, 1), (1, 2, 2)).to_dict()) == {"params", "weight_params", "flops"}


def test_table_lists_modules_blocks_and_totals():
    summary = summarize(TinySR(shared_basis_pair), (3, 6, 6), TinySR(dense_pair), block="body.0")
    text = str(summary)
    assert text == summary.table()
    for piece in ("body.0.body.0.projection", "BasisConv2d", "body.1", f"{summary.params:,}",
                  f"{summary.flops:,}", f"{summary.compression_pct:.1f}%"):
        assert piece in text


def test_real_model_is_counted_on_meta_and_left_unchanged():
    model = small_classifier().train()
    model[0].eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen_devices = set()
    model[0].register_forward_hook(lambda m, args, out: seen_devices.add(out.device.type))
    summary = summarize(model, (3, 8, 8))  # BatchNorm1d on a batch of one would fail in train mode
    assert seen_devices == {"meta"}
    assert summary.flops == conv_flops(8, 3, 3, 8, 8) + conv_flops(16, 8, 3, 8, 8) + 2 * 16 * 10
    assert [m.training for m in model.modules()] == [True, False] + [True] * 7
    for key, value in model.state_dict().items():
        assert value.device.type == "cpu" and torch.equal(value, before[key])


def test_unknown_block_path_names_it():
    with pytest.raises(ValueError, match="body.9"):
        summarize(TinySR(dense_pair), (3, 4, 4), block="body.9")


def test_large_model_on_meta_is_summarised():
    """A 32-block, 256-channel EDSR-like body at 640x360 (1280x720 output at x2): counted, not computed."""
    with torch.device("meta"):
        model = TinySR(lambda: dense_pair(256), n_feats=256, n_blocks=32)
    summary = summarize(model, (3, 360, 640), block="body.0")
    assert isinstance(summary, Summary)
    assert summary.block_weight_params == 2 * 256 * 256 * 9
    assert summary.flops == (64 * conv_flops(256, 256, 3, 360, 640) + conv_flops(256, 3, 3, 360, 640)
                             + conv_flops(3, 256, 3, 360, 640))


@pytest.mark.cuda
def test_model_on_cuda_is_counted_like_on_cpu():
    cpu = summarize(TinySR(shared_basis_pair), (3, 6, 6), block="body.0")
    cuda = summarize(TinySR(shared_basis_pair).cuda(), (3, 6, 6), block="body.0")
    assert cuda.to_dict() == cpu.to_dict()


def test_shared_basis_survives_counting():
    """Counting swaps tensors for meta ones; a basis shared by several layers must come back intact."""
    torch.manual_seed(0)
    basis = Basis(6, 8, 3)
    model = nn.Sequential(BasisConv2d(8, 8, 3, 8, 6, basis=basis), nn.ReLU(),
                          BasisConv2d(8, 8, 3, 8, 6, basis=basis))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    summarize(model, (8, 5, 5))
    after = model.state_dict()
    assert model[0].basis is model[2].basis
    for key, value in before.items():
        assert not after[key].is_meta, key
        assert torch.equal(after[key], value), key


def test_weight_params_counts_tensors_of_more_than_one_dimension_and_a_shared_one_once():
    from filter_basis.complexity import weight_params

    shared = Basis(n_basis=4, width=8, kernel_size=3)
    model = torch.nn.Sequential(BasisConv2d(8, 8, 3, 8, None, basis=shared),
                                BasisConv2d(8, 8, 3, 8, None, basis=shared), torch.nn.BatchNorm2d(8))
    # one 4 x 8 x 3 x 3 basis, two 8 x 4 x 1 x 1 projections; biases and BatchNorm are not weights
    assert weight_params(model) == 4 * 8 * 9 + 2 * 8 * 4
    assert weight_params(model) == summarize(model, (8, 6, 6)).weight_params
