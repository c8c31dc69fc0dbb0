"""fuse(): BatchNorm folding, the cheaper form of each basis layer, equivalence with the original model."""

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from filter_basis import fuse, fuse_with_report
from filter_basis.deploy import FuseReport
from filter_basis.layers import Basis, BasisConv2d, FactorConv2d, GroupConv2d, forced_form, norm_act

INPUT = (3, 12, 12)


def _trained_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BN non-trivial statistics and affine parameters, as training would, and set eval."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            c = module.num_features
            if module.running_mean is not None:
                module.running_mean.copy_(torch.rand(c, generator=gen) - 0.5)
                module.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            if module.weight is not None:
                module.weight.data.copy_(torch.rand(c, generator=gen) + 0.5)
                module.bias.data.copy_(torch.rand(c, generator=gen) - 0.5)
    return model.eval()


def _mixed_model() -> nn.Module:
    """Every place fuse() handles, with the paths the tests below name."""
    torch.manual_seed(0)
    shared = Basis(6, 8, 3)
    return _trained_norms(nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),          # 0, 1, 2
        BasisConv2d(8, 16, 3, 8, 6, basis=shared, mid=norm_act(), post=norm_act()),      # 3: G = 1
        BasisConv2d(16, 16, 3, 8, 6, basis=shared, stride=2), nn.BatchNorm2d(16),         # 4: G = 2, 5
        BasisConv2d.from_conv(nn.Conv2d(16, 16, 3, padding=1), 4, 36),                    # 6: full rank
        BasisConv2d(16, 16, 3, 16, 6, mid=nn.BatchNorm2d),                                # 7: mid BN only
        BasisConv2d(16, 16, 3, 8, 4, basis=Basis(4, 8, 3), mid=norm_act()),               # 8: G = 2, ReLU
        FactorConv2d(16, 24, dw_norm=True, pw_norm=True),                                 # 9
        GroupConv2d(24, 24, groups=4, mid=norm_act(), post=norm_act()),                   # 10
        nn.BatchNorm2d(24), nn.ReLU(),                                                    # 11, 12
    ))


def _flops(model: nn.Module, x: torch.Tensor) -> int:
    """The FLOPs of the model's own structure: its basis layers decomposed, as summarize() counts."""
    with forced_form("decomposed"), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


@pytest.fixture(scope="module")
def mixed():
    model = _mixed_model()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    fused, report = fuse_with_report(model)
    return model, state, fused, report


def test_fused_outputs_equal_original(mixed):
    model, _, fused, _ = mixed
    x = torch.randn(2, *INPUT, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-5)


def test_expected_norms_folded_and_kept(mixed):
    _, _, fused, report = mixed
    assert {(f.norm, f.into) for f in report.folded} == {
        ("1", "0"),
        ("3.post.0", "3.projection"),
        ("5", "4.projection"),
        ("7.mid", "7.projection (input side)"),
        ("9.layers.0.body.1", "9.layers.0.body.0"), ("9.layers.0.body.3", "9.layers.0.body.2"),
        ("9.layers.1.body.1", "9.layers.1.body.0"), ("9.layers.1.body.3", "9.layers.1.body.2"),
        ("10.mid.0", "10.grouped"), ("10.post.0", "10.projection"),
    }
    # A shared basis stays shared by default; several splits with a ReLU after the BN, and a BN after a
    # layer ending in a ReLU, cannot fold.
    assert report.kept_norms == ["3.mid.0", "8.mid.0", "11"]
    assert report.notes == [
        "3.mid.0 kept: its layer shares the basis (unshare_bases=True folds it into a copy)"]
    remaining = sorted(name for name, m in fused.named_modules() if isinstance(m, nn.BatchNorm2d))
    assert remaining == ["11", "3.mid.0", "8.mid.0"]
    assert isinstance(fused[1], nn.Identity) and isinstance(fused[5], nn.Identity)
    assert fused[7].mid is None and type(fused[10].mid[0]) is nn.Identity


def test_linear_layers_take_their_cheaper_form(mixed):
    _, _, fused, report = mixed
    forms = {layer.name: layer.form for layer in report.layers}
    assert forms == {"3": "decomposed", "4": "decomposed", "6": "dense", "7": "decomposed", "8": "decomposed"}
    assert type(fused[6]) is nn.Conv2d
    for i in (3, 4, 7, 8):
        assert isinstance(fused[i], BasisConv2d)
    for layer in report.layers:
        if layer.flops_dense is not None:
            assert (layer.form == "dense") == (layer.flops_dense <= layer.flops_decomposed)
    # Layer 6 is a full-rank from_conv: 36 filters per 4-channel split cost more than the dense conv.
    assert report.merged == ["6"] and report.layers[2].flops_dense < report.layers[2].flops_decomposed
    # Per output position: basis 4 splits x 36 filters x 4*9 MACs + projection 144 x 16, dense 16 x 16*9.
    assert (report.layers[2].flops_decomposed, report.layers[2].flops_dense) == (
        2 * (4 * 36 * 36 + 144 * 16), 2 * 16 * 16 * 9)


def test_merge_false_keeps_every_basis_layer_decomposed():
    model = _mixed_model()
    fused, report = fuse_with_report(model, merge=False)
    assert isinstance(fused[6], BasisConv2d) and report.merged == []
    assert [layer.reason for layer in report.layers if layer.name == "6"] == ["merge=False"]
    x = torch.randn(2, *INPUT)
    torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-5)


def test_fused_flops_never_higher_and_reported():
    model = _mixed_model()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    fused, report = fuse_with_report(model, INPUT)
    x = torch.randn(1, *INPUT)
    before, after = _flops(model, x), _flops(fused, x)
    assert after < before  # layer 6 merged
    assert (report.flops_before, report.flops_after) == (before, after)
    assert f"FLOPs at input {INPUT}: {before:,} -> {after:,}" in str(report)
    # Counting the original's FLOPs must leave it (and its shared basis) as it was.
    for key, value in model.state_dict().items():
        assert not value.is_meta and torch.equal(value, state[key]), key


def test_original_untouched(mixed):
    model, state, fused, _ = mixed
    assert model.training is False and isinstance(model[1], nn.BatchNorm2d)
    assert isinstance(model[6], BasisConv2d) and model[3].mid is not None
    assert model[3].basis is model[4].basis
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    # The copy shares its own basis between its layers, as the original does.
    assert fused[3].basis is fused[4].basis and fused[4].basis is not model[4].basis


@pytest.mark.parametrize("unshare", [False, True])
def test_norm_after_one_split_basis_folds_into_the_basis(unshare):
    torch.manual_seed(0)
    shared = Basis(6, 8, 3)
    model = _trained_norms(nn.Sequential(
        BasisConv2d(8, 8, 3, 8, 6, mid=norm_act()),                # owned basis
        BasisConv2d(8, 8, 3, 8, 6, basis=shared, mid=norm_act()),  # shared basis
        BasisConv2d(8, 8, 3, 8, 6, basis=shared),
    ))
    fused, report = fuse_with_report(model, unshare_bases=unshare)
    folded = [(f.norm, f.into) for f in report.folded]
    bn_params = 2 * 6
    if unshare:
        assert folded == [("0.mid.0", "0.basis"), ("1.mid.0", "1.basis (own copy)")]
        assert fused[1].basis is not fused[2].basis
        assert report.params_after == report.params_before - 2 * bn_params + shared.weight.numel()
    else:
        assert folded == [("0.mid.0", "0.basis")] and report.kept_norms == ["1.mid.0"]
        assert fused[1].basis is fused[2].basis
        assert report.params_after == report.params_before - bn_params
    assert report.params_after == sum(p.numel() for p in fused.parameters())
    x = torch.randn(2, 8, 6, 6)
    torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-5)


def test_layer_with_post_activation_merges_into_conv_then_activation():
    torch.manual_seed(0)
    layer = BasisConv2d.from_conv(nn.Conv2d(8, 8, 3, padding=1, bias=False), 8, 72)
    layer.post = nn.Sequential(nn.BatchNorm2d(8), nn.ReLU())
    model = _trained_norms(nn.Sequential(layer))
    fused, report = fuse_with_report(model)
    assert [type(m) for m in fused[0]] == [nn.Conv2d, nn.Sequential]
    assert [type(m) for m in fused[0][1]] == [nn.Identity, nn.ReLU]
    assert report.merged == ["0"] and [f.into for f in report.folded] == ["0.projection"]
    x = torch.randn(2, 8, 6, 6)
    torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-5)


def test_root_basis_layer_becomes_a_conv():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1)
    layer = BasisConv2d.from_conv(conv, 2, 18).eval()
    fused, report = fuse_with_report(layer)
    assert type(fused) is nn.Conv2d and fused.stride == (2, 2)
    assert report.merged == [""] and report.notes == []
    x = torch.randn(1, 4, 7, 7)
    torch.testing.assert_close(fused(x), conv(x), rtol=1e-4, atol=1e-5)


class _AttributeBlock(nn.Module):
    """torchvision style: conv/BN pairs as attributes, one conv output also feeding a shortcut."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv2 = BasisConv2d(4, 4, 3, 2, 3)
        self.bn2 = nn.BatchNorm2d(4)

    def forward(self, x):
        a = self.conv1(x)
        y = torch.relu(self.bn1(a)) + a  # conv1's output is used twice: bn1 must stay
        return self.bn2(self.conv2(y))


class _Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it, the Sequential still folds."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4))
        self.conv, self.bn = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.body(x)
        return self.bn(self.conv(y)) if y.sum() > 0 else -y


def test_attribute_pairs_folded_through_the_graph():
    torch.manual_seed(0)
    model = _trained_norms(_AttributeBlock())
    fused, report = fuse_with_report(model)
    assert [(f.norm, f.into) for f in report.folded] == [("bn2", "conv2.projection")]
    assert report.kept_norms == ["bn1"] and isinstance(fused.bn2, nn.Identity)
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-5)


def test_untraceable_model_keeps_structural_folding():
    torch.manual_seed(0)
    model = _trained_norms(_Untraceable())
    fused, report = fuse_with_report(model)
    assert [f.norm for f in report.folded] == ["body.1"] and report.kept_norms == ["bn"]
    assert len(report.notes) == 1 and "torch.fx could not trace" in report.notes[0]
    x = torch.randn(2, 3, 5, 5).abs()
    torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-5)


def test_unfoldable_norms_stay():
    torch.manual_seed(0)
    shared_conv = nn.Conv2d(3, 3, 3, padding=1)
    model = _trained_norms(nn.Sequential(
        nn.Sequential(shared_conv, nn.BatchNorm2d(3)),        # conv used at two places: no fold
        nn.Sequential(shared_conv, nn.BatchNorm2d(3)),
        nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3, track_running_stats=False),  # batch statistics
        nn.BatchNorm2d(3), nn.Conv2d(3, 3, 3, padding=1),     # BN before a padded conv
    ))
    fused, report = fuse_with_report(model)
    assert report.folded == [] and report.kept_norms == ["0.1", "1.1", "3", "4"]
    x = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-5)


def test_train_mode_model_is_refused():
    model = nn.Sequential(nn.Conv2d(3, 3, 3), nn.BatchNorm2d(3))
    with pytest.raises(ValueError, match=r"model\.eval\(\)"):
        fuse(model)
    model.eval()[1].train()
    with pytest.raises(ValueError, match="1 modules in training mode, e.g. 1"):
        fuse(model)


def test_bad_input_size_is_refused():
    with pytest.raises(ValueError, match=r"input_size must be \(channels, height, width\)"):
        fuse(nn.Conv2d(3, 3, 3).eval(), (1, 3, 8, 8))


def test_report_table_lists_what_was_done(mixed):
    *_, report = mixed
    assert isinstance(report, FuseReport)
    text = str(report)
    assert text.splitlines()[:2] == [
        "fuse: 10 BatchNorm folded, 3 kept; 1 basis layers merged into dense convs, 4 kept decomposed",
        f"parameters (shared counted once): {report.params_before:,} -> {report.params_after:,}"]
    assert report.flops_before is None and "FLOPs at input" not in text
    assert "9.layers.0.body.1" in text and "layers between basis and projection" in text


@pytest.mark.cuda
def test_fuse_on_cuda_matches_original(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # compare float32 with float32
    model = _mixed_model().cuda()
    fused = fuse(model)
    assert all(p.is_cuda for p in fused.parameters())
    x = torch.randn(2, *INPUT, device="cuda")
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-3, atol=1e-4)


def test_fuse_always_returns_the_module_and_fuse_with_report_the_pair():
    model = _mixed_model()
    fused = fuse(model, INPUT)
    assert isinstance(fused, nn.Module) and not isinstance(fused, tuple)
    again, report = fuse_with_report(model, INPUT)
    assert isinstance(report, FuseReport) and report.flops_after is not None
    x = torch.randn(2, *INPUT)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), again(x))
    with pytest.raises(TypeError):
        fuse(model, report=True)  # the old spelling fails loudly instead of returning another type
