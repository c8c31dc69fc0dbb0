"""BasisConv2d computed decomposed or merged: same function, same gradients, the cheaper form chosen."""

import copy
import json

import pytest
import torch
from randomize import randomize
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from filter_basis.complexity import summarize, training_flops
from filter_basis.layers import Basis, BasisConv2d, forced_form, norm_act, set_basis_form


def _grads(model: nn.Module, x: torch.Tensor, form: str) -> tuple:
    """Output, input gradient and parameter gradients (by name) of one forward/backward in ``form``."""
    model = copy.deepcopy(model)
    set_basis_form(model, form)
    x = x.detach().clone().requires_grad_(True)
    y = model(x)
    weights = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)
    (y * weights).sum().backward()
    return y.detach(), x.grad, {name: p.grad for name, p in model.named_parameters()}


def _assert_same(model: nn.Module, x: torch.Tensor, **tolerance) -> None:
    y_d, gx_d, gp_d = _grads(model, x, "decomposed")
    y_m, gx_m, gp_m = _grads(model, x, "merged")
    torch.testing.assert_close(y_m, y_d, **tolerance)
    torch.testing.assert_close(gx_m, gx_d, **tolerance)
    assert gp_m.keys() == gp_d.keys()
    for name in gp_d:
        torch.testing.assert_close(gp_m[name], gp_d[name], **tolerance, msg=name)


def _layer(**kwargs) -> BasisConv2d:
    args = dict(in_channels=8, out_channels=6, kernel_size=3, basis_size=4, n_basis=5)
    args.update(kwargs)
    return BasisConv2d(**args)


@pytest.mark.parametrize("kwargs", [
    {},
    {"stride": 2},
    {"bias": False},
    {"basis_size": 8, "n_basis": 12},
    {"padding": 0, "kernel_size": 5},
    {"post": norm_act()},
], ids=["splits", "stride", "no-bias", "one-split", "kernel5-nopad", "post"])
def test_merged_and_decomposed_agree_in_output_and_every_gradient(kwargs):
    model = randomize(_layer(**kwargs).double()).train()
    _assert_same(model, torch.randn(3, 8, 9, 9, dtype=torch.float64))


def test_shared_basis_gets_the_same_accumulated_gradient():
    basis = Basis(5, 4)
    model = nn.Sequential(_layer(basis=basis), nn.ReLU(), _layer(in_channels=6, out_channels=8, basis_size=2,
                                                                   basis=basis, inverse_index=True))
    model = randomize(model.double()).train()
    assert model[0].basis is model[2].basis and model[2].slices_basis
    _assert_same(model, torch.randn(2, 8, 7, 7, dtype=torch.float64))


@pytest.mark.parametrize("inverse_index", [False, True])
def test_sliced_densenet_style_basis(inverse_index):
    basis = Basis(9, 24)
    layers = [_layer(in_channels=c, out_channels=12, basis_size=c, n_basis=None, basis=basis,
                     inverse_index=inverse_index) for c in (16, 20, 24)]
    model = randomize(nn.ModuleList(layers).double()).train()
    for layer, c in zip(model, (16, 20, 24)):
        _assert_same(layer, torch.randn(2, c, 6, 6, dtype=torch.float64))


def test_channels_last_input_gives_the_same_result_and_layout():
    model = randomize(_layer()).train()
    x = torch.randn(2, 8, 10, 10).contiguous(memory_format=torch.channels_last)
    model = model.to(memory_format=torch.channels_last)
    _assert_same(model, x, rtol=1e-4, atol=1e-5)
    set_basis_form(model, "merged")
    assert model(x).is_contiguous(memory_format=torch.channels_last)


def test_autocast_bfloat16_forms_agree_within_bfloat16_rounding():
    model = randomize(_layer()).train()
    x = torch.randn(4, 8, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _assert_same(model, x, rtol=0.05, atol=0.1)
        y = copy.deepcopy(model)
        set_basis_form(y, "merged")
        assert y(x).dtype == torch.bfloat16
    reference = model(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        set_basis_form(model, "merged")
        torch.testing.assert_close(model(x).float(), reference, rtol=0.05, atol=0.1)


def test_state_dict_and_parameters_do_not_depend_on_the_form():
    model = _layer()
    keys, names = list(model.state_dict()), [n for n, _ in model.named_parameters()]
    for form in ("merged", "decomposed", "auto"):
        set_basis_form(model, form)
        model(torch.randn(1, 8, 5, 5))
        assert list(model.state_dict()) == keys and [n for n, _ in model.named_parameters()] == names
    assert sorted(names) == ["basis.weight", "basis_bias", "projection.bias", "projection.weight"]


def _counted(layer: nn.Module, x: torch.Tensor, form: str) -> int:
    with forced_form(form), FlopCounterMode(display=False) as counter:
        layer(x)
    return counter.get_total_flops()


@pytest.mark.parametrize("kwargs,shape", [
    ({}, (2, 8, 9, 9)),
    ({"stride": 2, "bias": False}, (3, 8, 9, 7)),
    ({"padding": 0, "kernel_size": 5, "basis_size": 8, "n_basis": 30}, (1, 8, 11, 11)),
    ({"kernel_size2": 3}, (2, 8, 6, 6)),
])
def test_flop_rule_matches_flop_counter(kwargs, shape):
    layer = _layer(**kwargs)
    x = torch.randn(shape)
    decomposed, merged = layer.form_flops(layer.output_positions(shape))
    assert decomposed == _counted(layer, x, "decomposed")
    if layer.mergeable:
        assert merged == _counted(layer, x, "merged")
    else:
        assert merged is None and layer.resolved_form(shape) == "decomposed"


def test_auto_takes_the_cheaper_form_once_per_input_shape(monkeypatch):
    cheap_merged = _layer(in_channels=16, out_channels=16, basis_size=16, n_basis=24)  # ResNet-56 stage 1
    low_rank = _layer(in_channels=64, out_channels=64, basis_size=64, n_basis=8)
    assert cheap_merged.resolved_form((64, 16, 32, 32)) == "merged"
    assert low_rank.resolved_form((64, 64, 32, 32)) == "decomposed"
    # One position of one image: composing the weight costs more than the convolution it saves.
    assert cheap_merged.resolved_form((1, 16, 1, 1)) == "decomposed"
    calls = []
    original = BasisConv2d.form_flops
    monkeypatch.setattr(BasisConv2d, "form_flops", lambda self, p=None: calls.append(p) or original(self, p))
    layer = _layer()
    for _ in range(3):
        layer(torch.randn(2, 8, 5, 5))
    layer(torch.randn(3, 8, 5, 5))
    assert len(calls) == 2


def test_auto_runs_the_chosen_form(monkeypatch):
    layer = _layer(in_channels=16, out_channels=16, basis_size=16, n_basis=24)
    used = []
    monkeypatch.setattr(BasisConv2d, "merged_forward", lambda self, x: used.append("merged") or x)
    monkeypatch.setattr(BasisConv2d, "basis_forward", lambda self, x: used.append("decomposed") or x)
    layer.mid, layer.projection = None, nn.Identity()
    layer(torch.randn(8, 16, 8, 8))
    with forced_form("decomposed"):
        layer(torch.randn(8, 16, 8, 8))
    assert used == ["merged", "decomposed"]


def test_set_basis_form_and_bad_values():
    model = nn.Sequential(_layer(), nn.ReLU(), _layer(in_channels=6, basis_size=3))
    assert set_basis_form(model, "merged") == 2
    assert all(m.form == "merged" for m in (model[0], model[2])) and BasisConv2d.form == "auto"
    with pytest.raises(ValueError, match="'fast'.*auto, decomposed, merged"):
        set_basis_form(model, "fast")
    model[0].form = "fast"
    with pytest.raises(ValueError, match="'fast'"):
        model(torch.randn(1, 8, 4, 4))


def test_summarize_counts_the_decomposed_form_whatever_the_layers_run_in():
    model = _layer(in_channels=16, out_channels=16, basis_size=16, n_basis=24)
    counts = set()
    for form in ("auto", "merged", "decomposed"):
        set_basis_form(model, form)
        counts.add(summarize(model, (16, 8, 8)).flops)
    assert counts == {model.form_flops(64)[0]}


def test_training_flops_count_forward_and_backward_in_the_training_form():
    layer = _layer()
    positions = layer.output_positions((2, 8, 9, 9))
    per_basis = 2 * 2 * 5 * 4 * 9 * positions
    per_projection = 2 * 6 * 10 * positions
    # the input needs no gradient: the basis convolution computes only its weight gradient
    set_basis_form(layer, "decomposed")
    flops, forms = training_flops(layer, (8, 9, 9), batch=2)
    assert (flops, forms) == ((2 * per_basis + 3 * per_projection) // 2, {"": "decomposed"})
    set_basis_form(layer, "merged")
    _, merged = layer.form_flops(positions)
    compose = 2 * 6 * 2 * 5 * 4 * 9
    flops, forms = training_flops(layer, (8, 9, 9), batch=2)
    assert (flops, forms) == ((2 * (merged - compose) + 3 * compose) // 2, {"": "merged"})
    assert layer.training


def test_summary_keeps_forward_flops_and_adds_training_keys(capsys):
    from filter_basis.engine import run
    from image_classification import option
    from image_classification.tree import TREE

    seen = {}
    for form in ("decomposed", "merged", "auto"):
        args = option.parse_args(["--model", "ResNet_Basis", "--depth", "20", "--k_size2", "1", "--summary",
                                  "--data_train", "Synthetic", "--basis_form", form])
        run(TREE, args)
        info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert len(info["basis_forms"]) == 18
        if form != "auto":
            assert set(info["basis_forms"].values()) == {form}
        seen[form] = info
    assert len({info["flops"] for info in seen.values()}) == 1  # the forward count does not depend on it
    trains = {form: info["train_flops"] for form, info in seen.items()}
    assert trains["auto"] == min(trains.values()) < trains["decomposed"]


def test_auto_form_compiles_without_graph_breaks():
    layer = _layer(in_channels=16, out_channels=16, basis_size=16, n_basis=24)
    x = torch.randn(8, 16, 8, 8)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)  # fullgraph: a break raises
    torch.testing.assert_close(compiled(x), layer(x))
    assert layer.resolved_form(x.shape) == "merged"
