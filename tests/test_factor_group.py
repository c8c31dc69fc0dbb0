"""SIC, FactorConv2d, GroupConv2d and norm_act: behaviour against written-out references, official counts."""

import pytest
import torch
import torch.nn.functional as F
from randomize import randomize
from torch import nn

from filter_basis import SIC, FactorConv2d, GroupConv2d
from filter_basis.complexity import weight_params
from filter_basis.layers import norm_act


def bn(x, module: nn.BatchNorm2d):
    return F.batch_norm(x, module.running_mean, module.running_var, module.weight, module.bias, False, 0.0,
                        module.eps)


def all_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("in_channels,out_channels,stride,residual", [
    (6, 6, 1, True), (6, 6, 2, False), (6, 9, 1, False), (6, 3, 2, False)])
@pytest.mark.parametrize("dw_norm,pw_norm", [(False, False), (True, False), (True, True)])
def test_sic_matches_written_out_reference(in_channels, out_channels, stride, residual, dw_norm, pw_norm):
    torch.manual_seed(0)
    sic = randomize(SIC(in_channels, out_channels, 3, stride, dw_norm=dw_norm, pw_norm=pw_norm))
    assert sic.residual is residual
    x = torch.randn(2, in_channels, 7, 7)
    convs = [m for m in sic.body if isinstance(m, nn.Conv2d)]
    norms = [m for m in sic.body if isinstance(m, nn.BatchNorm2d)]
    y = F.conv2d(x, convs[0].weight, convs[0].bias, stride, 1, groups=in_channels)
    if dw_norm:
        y = bn(y, norms.pop(0))
    y = F.conv2d(y, convs[1].weight, convs[1].bias)
    if pw_norm:
        y = bn(y, norms.pop(0))
    if residual:
        y = y + x
    torch.testing.assert_close(sic(x), torch.relu(y))


def test_sic_activation_options():
    torch.manual_seed(0)
    x = torch.randn(1, 4, 5, 5)
    linear = randomize(SIC(4, 4, act=None))
    y = linear(x)
    assert (y < 0).any()
    shared = nn.PReLU()
    with torch.no_grad():
        shared.weight.fill_(0.1)
    sic = SIC(4, 4, act=shared)
    sic.load_state_dict(linear.state_dict(), strict=False)
    assert sic.act is shared
    torch.testing.assert_close(sic(x), F.prelu(y, shared.weight))
    assert isinstance(SIC(4, 4, act=nn.Tanh).act, nn.Tanh)
    with pytest.raises(ValueError, match="activation must be"):
        SIC(4, 4, act="relu")


def test_factor_chain_widths_and_strides():
    last = FactorConv2d(4, 8, stride=2, n_layers=3)
    assert [(s.body[0].in_channels, s.body[-1].out_channels, s.body[0].stride[0], s.residual)
            for s in last.layers] == [(4, 4, 2, False), (4, 4, 1, True), (4, 8, 1, False)]
    first = FactorConv2d(4, 8, n_layers=2, widen="first")
    assert [(s.body[0].in_channels, s.body[-1].out_channels, s.residual) for s in first.layers] == \
        [(4, 8, False), (8, 8, True)]
    x = torch.randn(1, 4, 6, 6)
    torch.testing.assert_close(last(x), last.layers[2](last.layers[1](last.layers[0](x))))
    assert last(x).shape == (1, 8, 3, 3)


def test_factor_shares_one_activation_instance_across_sics():
    prelu = nn.PReLU()
    factor = FactorConv2d(8, 8, n_layers=3, act=prelu)
    assert all(s.act is prelu for s in factor.layers)
    assert all_params(factor) == 3 * (8 * 9 + 8 + 8 * 8 + 8) + 1


def test_official_sr_sic_counts():
    """EDSR_Factor: SIC = 9F + F^2 weights; blocks 70,144 / 105,216 / 135,680; SRResNet SIC 576 + 4,096."""
    with torch.device("meta"):
        for f in (64, 128, 256):
            sic = SIC(f, f)
            assert weight_params(sic) == 9 * f + f * f
            assert all_params(sic) == 9 * f + f * f + 2 * f
        for f, n_layers, block in [(128, 2, 70_144), (128, 3, 105_216), (256, 1, 135_680)]:
            pair = nn.ModuleList(FactorConv2d(f, f, n_layers=n_layers) for _ in range(2))
            assert weight_params(pair) == block
        assert weight_params(SIC(64, 64, act=nn.PReLU())) == 576 + 4_096


def test_official_resnet56_factor_counts():
    """docs/official-code.md#resnet: FactorConv weights 2 x 400 (16), 400 + 656 (16->32, s2), 2,624 (32),
    1,312 + 2,336 (32->64, s2), 9,344 (64); no biases, no BN inside."""
    with torch.device("meta"):
        cases = [(16, 16, 1, 2 * 400), (16, 32, 2, 400 + 656), (32, 32, 1, 2_624), (32, 64, 2, 1_312 + 2_336),
                 (64, 64, 1, 9_344)]
        for c_in, c_out, stride, weights in cases:
            factor = FactorConv2d(c_in, c_out, stride=stride, bias=False)
            assert weight_params(factor) == weights == all_params(factor)


def test_official_vgg16_factor_counts():
    """docs/official-code.md#vgg: decomposed VGG_Factor layers (biases on, BN after dw and 1x1)."""
    with torch.device("meta"):
        for c_in, c_out, weights in [(128, 128, 35_072), (128, 256, 51_456), (256, 256, 135_680),
                                     (256, 512, 201_216), (512, 512, 533_504)]:
            factor = FactorConv2d(c_in, c_out, dw_norm=True, pw_norm=True)
            assert weight_params(factor) == weights
            others = 2 * (c_in + 2 * c_in) + (c_in + 2 * c_in) + (c_out + 2 * c_out)
            assert all_params(factor) - weights == others


def test_official_densenet40_factor_counts():
    """docs/official-code.md#densenet: dense layer 21C + 252 weights (SIC_a C -> 12, SIC_b 12 -> 12), BN
    after dw."""
    with torch.device("meta"):
        for c in (24, 168, 444):
            factor = FactorConv2d(c, 12, bias=False, dw_norm=True, widen="first")
            assert weight_params(factor) == 21 * c + 252
            assert all_params(factor) - weight_params(factor) == 2 * c + 2 * 12
            assert [s.residual for s in factor.layers] == [False, True]


@pytest.mark.parametrize("groups,grouped_out,stride,with_norms", [
    (1, None, 1, False), (2, None, 2, True), (4, 12, 1, False), (2, 6, 2, True)])
def test_group_conv_matches_written_out_reference(groups, grouped_out, stride, with_norms):
    torch.manual_seed(0)
    norms = dict(mid=norm_act(), post=norm_act()) if with_norms else {}
    layer = randomize(GroupConv2d(8, 5, 3, stride, groups, grouped_out=grouped_out, **norms))
    x = torch.randn(2, 8, 7, 7)
    y = F.conv2d(x, layer.grouped.weight, layer.grouped.bias, stride, 1, groups=groups)
    if with_norms:
        y = torch.relu(bn(y, layer.mid[0]))
    y = F.conv2d(y, layer.projection.weight, layer.projection.bias)
    if with_norms:
        y = torch.relu(bn(y, layer.post[0]))
    torch.testing.assert_close(layer(x), y)


def test_official_group_counts():
    """docs/official-code.md (VGG, ResNet, DenseNet): VGG_Group (gs 64), ResNet_Group (gs 4 / 8),
    DenseNet_Group."""
    with torch.device("meta"):
        for c_in, c_out, groups, weights in [(128, 128, 2, 90_112), (128, 256, 2, 106_496),
                                             (256, 256, 4, 212_992), (256, 512, 4, 278_528),
                                             (512, 512, 8, 557_056)]:
            layer = GroupConv2d(c_in, c_out, groups=groups, mid=norm_act(), post=norm_act())
            assert weight_params(layer) == weights
            assert all_params(layer) - weights == 3 * c_in + 3 * c_out
        for c_in, c_out, groups, weights in [(16, 16, 4, 832), (16, 32, 4, 1_088), (32, 32, 8, 2_176),
                                             (32, 64, 4, 4_352), (64, 64, 8, 8_704)]:
            layer = GroupConv2d(c_in, c_out, groups=groups)
            assert weight_params(layer) == weights and all_params(layer) == weights + c_in + c_out
        for c, groups in [(24, 3), (252, 3), (264, 6), (444, 6)]:
            layer = GroupConv2d(c, 12, groups=groups, bias=False, grouped_out=12)
            assert all_params(layer) == 108 * c // groups + 144


def test_norm_act_factory():
    prelu = nn.PReLU()
    make = norm_act(prelu)
    a, b = make(4), make(6)
    assert isinstance(a[0], nn.BatchNorm2d) and a[0].num_features == 4 and b[0].num_features == 6
    assert a[1] is prelu and b[1] is prelu
    fresh = norm_act(nn.ReLU)
    assert fresh(3)[1] is not fresh(3)[1]
    assert len(norm_act(nn.ReLU, norm=None)(3)) == 1
    assert len(norm_act(None)(3)) == 1
    with pytest.raises(ValueError, match="norm and act are both None"):
        norm_act(None, norm=None)
    with pytest.raises(ValueError, match="activation must be"):
        norm_act(3)


@pytest.mark.parametrize("build,message", [
    (lambda: SIC(0, 4), r"SIC\(0->4\): in_channels must be an integer >= 1, got 0"),
    (lambda: SIC(4, 4, stride=0), r"SIC\(4->4\): stride must be an integer >= 1, got 0"),
    (lambda: FactorConv2d(4, 4, n_layers=0), r"FactorConv2d\(4->4\): n_layers must be an integer >= 1"),
    (lambda: FactorConv2d(4, 4, widen="middle"), r"FactorConv2d\(4->4\): widen must be 'first' or 'last'"),
    (lambda: GroupConv2d(12, 4, groups=5),
     r"GroupConv2d\(12->4, groups=5\): groups 5 must divide in_channels 12 and .* output width 12"),
    (lambda: GroupConv2d(12, 4, groups=4, grouped_out=6), r"groups 4 must divide .* output width 6"),
    (lambda: GroupConv2d(12, 4, groups=0), r"groups must be an integer >= 1, got 0"),
    (lambda: GroupConv2d(12, 4, mid=nn.BatchNorm2d(12)),
     r"GroupConv2d\(12->4, groups=1\): mid must be a factory"),
])
def test_invalid_configurations_raise_value_error(build, message):
    with pytest.raises(ValueError, match=message):
        build()
