"""BasisConv2d and Basis: equivalence with dense and naive forms, fitting, sharing, gradients, counts."""

import copy
import re

import pytest
import torch
import torch.nn.functional as F
from randomize import randomize
from torch import nn

from filter_basis import Basis, BasisConv2d
from filter_basis.complexity import weight_params
from filter_basis.layers import norm_act


def naive_forward(layer: BasisConv2d, x: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """The layer written out: a Python loop over the splits, concatenated split-major."""
    b = layer.basis_size
    maps = [F.conv2d(x[:, g * b:(g + 1) * b], filters, layer.basis_bias, layer.stride, layer.padding)
            for g in range(layer.in_channels // b)]
    y = torch.cat(maps, dim=1)
    if layer.mid is not None:
        y = layer.mid(y)
    y = F.conv2d(y, layer.projection.weight, layer.projection.bias, padding=layer.kernel_size2 // 2)
    return y if layer.post is None else layer.post(y)


def test_basis_layer_has_split_major_structure():
    layer = BasisConv2d(12, 5, 3, basis_size=4, n_basis=7)
    assert layer.n_splits == 3
    assert layer.basis.weight.shape == (7, 4, 3, 3)
    assert layer.basis_bias.shape == (7,)
    assert layer.projection.weight.shape == (5, 21, 1, 1)
    assert layer.padding == (1, 1) and layer.stride == (1, 1)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("in_channels,basis_size", [(6, 6), (6, 3), (12, 2)])
@pytest.mark.parametrize("basis_kind", ["own", "shared", "slice_first", "slice_last"])
def test_linear_layer_equals_dense_conv_of_merged_weight(stride, bias, in_channels, basis_size, basis_kind):
    torch.manual_seed(0)
    basis = None if basis_kind == "own" else Basis(5, basis_size + (basis_kind != "shared") * 3, 3)
    layer = BasisConv2d(in_channels, 7, 3, basis_size, 5, stride=stride, bias=bias, basis=basis,
                        inverse_index=basis_kind == "slice_last")
    randomize(layer)
    x = torch.randn(2, in_channels, 9, 8)
    expected = F.conv2d(x, layer.merged_weight(), layer.merged_bias(), stride, 1)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.to_conv()(x), expected, rtol=1e-5, atol=1e-5)
    assert (layer.merged_bias() is None) == (not bias)


def test_explicit_padding_and_other_kernel_sizes():
    torch.manual_seed(0)
    for k, padding in [(1, 0), (5, 2), (3, 0), (3, (0, 2))]:
        layer = randomize(BasisConv2d(8, 4, k, 4, 6, stride=2, padding=padding))
        x = torch.randn(1, 8, 11, 10)
        expected = F.conv2d(x, layer.merged_weight(), layer.merged_bias(), 2, padding)
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_merged_weight_is_the_official_formula():
    """W[o, g*b + c] = sum_j P[o, g*n + j] B[j, c] with split-major projection columns."""
    layer = randomize(BasisConv2d(6, 2, 3, basis_size=3, n_basis=4))
    basis, proj = layer.basis.weight, layer.projection.weight[:, :, 0, 0]
    w = layer.merged_weight()
    for o in range(2):
        for g in range(2):
            expected = sum(proj[o, g * 4 + j] * basis[j] for j in range(4))
            torch.testing.assert_close(w[o, g * 3:(g + 1) * 3], expected)
    bias = layer.projection.bias + proj.reshape(2, 2, 4).sum(1) @ layer.basis_bias
    torch.testing.assert_close(layer.merged_bias(), bias)


@pytest.mark.parametrize("variant", ["mid", "post", "mid_post", "k2_3", "all"])
@pytest.mark.parametrize("in_channels,basis_size", [(8, 8), (8, 2)])
def test_nonlinear_variants_match_naive_reference(variant, in_channels, basis_size):
    torch.manual_seed(0)
    prelu = nn.PReLU()
    kwargs = {
        "mid": dict(mid=norm_act(prelu)),
        "post": dict(post=norm_act(nn.ReLU)),
        "mid_post": dict(mid=norm_act(prelu), post=norm_act(prelu)),
        "k2_3": dict(kernel_size2=3),
        "all": dict(mid=norm_act(), post=norm_act(nn.Tanh), kernel_size2=3),
    }[variant]
    layer = randomize(BasisConv2d(in_channels, 5, 3, basis_size, 4, stride=2, **kwargs))
    assert not layer.is_linear
    x = torch.randn(2, in_channels, 7, 7)
    torch.testing.assert_close(layer(x), naive_forward(layer, x, layer.basis.weight))
    with pytest.raises(ValueError, match="merged_weight"):
        layer.merged_weight()


@pytest.mark.parametrize("inverse_index", [False, True])
def test_densenet_style_sliced_shared_basis(inverse_index):
    """One 12-channel basis, layers of 4, 8 and 12 input channels use its first (or last) channels."""
    torch.manual_seed(0)
    basis = Basis(6, 12, 3)
    layers = [randomize(BasisConv2d(c, 3, 3, c, None, basis=basis, kernel_size2=3, mid=norm_act(),
                                    inverse_index=inverse_index), seed=c)
              for c in (4, 8, 12)]
    assert all(layer.basis is basis for layer in layers)
    x = torch.randn(2, 12, 6, 6)
    for layer in layers:
        c = layer.in_channels
        filters = basis.weight[:, -c:] if inverse_index else basis.weight[:, :c]
        torch.testing.assert_close(layer(x[:, :c]), naive_forward(layer, x[:, :c], filters))
    # A split narrower than the input inside a wide basis: 8 channels as 2 splits of 4.
    layer = randomize(BasisConv2d(8, 3, 3, 4, 6, basis=basis, inverse_index=inverse_index), seed=1)
    filters = basis.weight[:, -4:] if inverse_index else basis.weight[:, :4]
    torch.testing.assert_close(layer(x[:, :8]), naive_forward(layer, x[:, :8], filters))


def test_shared_basis_is_one_parameter():
    basis = Basis(4, 8, 3)
    model = nn.Sequential(BasisConv2d(8, 8, 3, 8, 4, basis=basis), BasisConv2d(16, 8, 3, 8, 4, basis=basis))
    own = (4 + 8 * 4 + 8) + (4 + 8 * 8 + 8)  # per layer: basis bias, projection weight and bias
    assert sum(p.numel() for p in model.parameters()) == basis.weight.numel() + own
    # Each layer still owns its basis bias.
    assert model[0].basis_bias is not model[1].basis_bias


def test_shared_basis_gradient_accumulates_from_every_user():
    torch.manual_seed(0)
    shared = Basis(5, 8, 3)
    users = [BasisConv2d(8, 4, 3, 8, 5, basis=shared), BasisConv2d(8, 4, 3, 4, 5, basis=shared, stride=2),
             BasisConv2d(6, 4, 3, 6, 5, basis=shared, inverse_index=True)]
    inputs = [torch.randn(2, u.in_channels, 6, 6) for u in users]
    sum(u(x).pow(2).sum() for u, x in zip(users, inputs)).backward()

    expected = torch.zeros_like(shared.weight)
    for user, x in zip(users, inputs):
        own = Basis(5, 8, 3)
        with torch.no_grad():
            own.weight.copy_(shared.weight)
        user.basis = own
        user(x).pow(2).sum().backward()
        expected += own.weight.grad
        user.basis = shared
    assert expected.abs().sum() > 0
    torch.testing.assert_close(shared.weight.grad, expected)


def test_gradcheck_in_double():
    torch.manual_seed(0)
    layer = BasisConv2d(4, 3, 3, 2, 3, stride=2, mid=norm_act(nn.Tanh, norm=None)).double()
    randomize(layer)
    names = ["basis.weight", "basis_bias", "projection.weight", "projection.bias"]
    params = dict(layer.named_parameters())

    def run(x, *values):
        return torch.func.functional_call(layer, dict(zip(names, values)), (x,))

    x = torch.randn(1, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    values = [params[n].detach().clone().requires_grad_() for n in names]
    assert torch.autograd.gradcheck(run, (x, *values))


@pytest.mark.parametrize("bias", [True, False])
def test_from_conv_is_exact_at_full_rank(bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(12, 10, 3, stride=2, padding=1, bias=bias)
    layer = BasisConv2d.from_conv(conv, basis_size=4, n_basis=4 * 9)
    assert layer.reconstruction_error < 1e-6
    torch.testing.assert_close(layer.merged_weight(), conv.weight, rtol=1e-5, atol=1e-6)
    x = torch.randn(2, 12, 9, 9)
    torch.testing.assert_close(layer(x), conv(x), rtol=1e-5, atol=1e-5)


def test_from_conv_error_decreases_with_n_basis():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3)
    errors = [BasisConv2d.from_conv(conv, 4, n).reconstruction_error for n in (1, 4, 12, 24, 36, 40)]
    assert all(a > b for a, b in zip(errors[:4], errors[1:5]))
    assert errors[0] > 0.5 and errors[4] < 1e-6 and errors[5] < 1e-6


def test_from_conv_keeps_stride_padding_and_a_given_basis():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 6, 5, stride=(2, 1), padding=(1, 2))
    basis = Basis(100, 8, 5)
    layer = BasisConv2d.from_conv(conv, 4, None, basis=basis)
    assert layer.basis is basis and layer.stride == (2, 1) and layer.padding == (1, 2)
    x = torch.randn(1, 8, 10, 10)
    torch.testing.assert_close(layer(x), conv(x), rtol=1e-4, atol=1e-4)  # 100 random filters span 4*25


def test_from_conv_rejects_what_it_cannot_represent():
    with pytest.raises(ValueError, match="enc.conv: cannot convert: grouped convolution \\(groups=2\\)"):
        BasisConv2d.from_conv(nn.Conv2d(4, 4, 3, groups=2), 2, 4, name="enc.conv")
    with pytest.raises(ValueError, match="dilated"):
        BasisConv2d.from_conv(nn.Conv2d(4, 4, 3, dilation=2), 2, 4)
    with pytest.raises(ValueError, match="padding 'same'"):
        BasisConv2d.from_conv(nn.Conv2d(4, 4, 3, padding="same"), 2, 4)
    with pytest.raises(ValueError, match="basis_size 3 does not divide in_channels 4"):
        BasisConv2d.from_conv(nn.Conv2d(4, 4, 3), 3, 4)


def test_channels_last_gives_the_same_result():
    torch.manual_seed(0)
    for in_channels, basis_size in [(8, 8), (8, 2)]:
        layer = randomize(BasisConv2d(in_channels, 6, 3, basis_size, 5, stride=2, mid=norm_act()))
        x = torch.randn(2, in_channels, 9, 9)
        expected = layer(x)
        layer_cl = layer.to(memory_format=torch.channels_last)
        out = layer_cl(x.contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
        assert out.is_contiguous(memory_format=torch.channels_last)  # the layout is kept


def test_autocast_bfloat16_on_cpu_is_close_to_float32():
    torch.manual_seed(0)
    layer = randomize(BasisConv2d(16, 8, 3, 4, 6))
    x = torch.randn(2, 16, 8, 8)
    expected = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    assert out.dtype == torch.bfloat16
    rel = (out.float() - expected).norm() / expected.norm()
    assert rel < 2e-2


def basis_layer_params(c_in, c_out, k, b, n, k2=1, bias=True):
    g = c_in // b
    return n * b * k * k + c_out * g * n * k2 * k2 + bias * (n + c_out)


@pytest.mark.parametrize("c_in,c_out,k,b,n,k2,bias", [
    (12, 5, 3, 4, 7, 1, True), (12, 5, 3, 4, 7, 1, False), (8, 8, 5, 8, 3, 3, True),
    (6, 2, 1, 2, 1, 1, True)])
def test_parameter_count_formula(c_in, c_out, k, b, n, k2, bias):
    layer = BasisConv2d(c_in, c_out, k, b, n, kernel_size2=k2, bias=bias)
    assert sum(p.numel() for p in layer.parameters()) == basis_layer_params(c_in, c_out, k, b, n, k2, bias)


@pytest.mark.parametrize("features,basis_size,n_basis,share,block_weights,block_others", [
    (128, 128, 27, False, 69_120, 2 * (27 + 128)),
    (128, 128, 40, False, 102_400, 2 * (40 + 128)),
    (256, 256, 32, False, 163_840, 2 * (32 + 256)),
    (256, 256, 32, True, 90_112, 576),
])
def test_official_edsr_basis_block_counts(features, basis_size, n_basis, share, block_weights, block_others):
    """docs/official-code.md#edsr: block weights 2 x (N*B*9 + F*N), or N*B*9 + 2*F*N with one shared basis."""
    with torch.device("meta"):
        basis = Basis(n_basis, basis_size, 3) if share else None
        block = nn.Sequential(*(BasisConv2d(features, features, 3, basis_size, n_basis, basis=basis)
                                for _ in range(2)))
    assert weight_params(block) == block_weights
    assert sum(p.numel() for p in block.parameters()) - block_weights == block_others


def test_official_vgg16_basis_decomposed_layer_counts():
    """docs/official-code.md#parameter-counts: VGG16_Basis (B 128, N 128) decomposed-layer weights."""
    expected = {(128, 128): 163_840, (128, 256): 180_224, (256, 256): 212_992, (256, 512): 278_528,
                (512, 512): 409_600}
    with torch.device("meta"):
        for (c_in, c_out), count in expected.items():
            layer = BasisConv2d(c_in, c_out, 3, 128, 128, mid=norm_act(), post=norm_act())
            assert weight_params(layer) == count
            g = c_in // 128
            others = 128 + 2 * g * 128 + c_out + 2 * c_out  # basis bias, BN(G*N), projection bias, BN
            assert sum(p.numel() for p in layer.parameters()) - count == others


def test_official_densenet40_basis_counts():
    """docs/official-code.md#parameter-counts: one 36 x 444 x 9 basis; 36 projections of 12 x 36 x 9;
    120 others per layer."""
    with torch.device("meta"):
        basis = Basis(36, 444, 3)
        widths = [24 + 12 * i for i in range(12)] + [168 + 12 * i for i in range(12)] + \
                 [312 + 12 * i for i in range(12)]
        layers = nn.ModuleList(BasisConv2d(c, 12, 3, c, 36, basis=basis, kernel_size2=3, mid=norm_act())
                               for c in widths)
    assert weight_params(layers) == 143_856 + 36 * 3_888
    assert sum(p.numel() for p in layers.parameters()) == 143_856 + 36 * 3_888 + 36 * 120


def test_official_resnet56_basis_stage_counts():
    """docs/official-code.md#parameter-counts: ResNet56_Basis stage 2 (first conv on basis1) weights and
    other params."""
    with torch.device("meta"):
        basis1, basis2 = Basis(24, 16, 3), Basis(48, 32, 3)
        convs = [BasisConv2d(16, 32, 3, 16, 24, stride=2, basis=basis1)]
        convs += [BasisConv2d(32, 32, 3, 32, 48, basis=basis2) for _ in range(17)]
        stage = nn.ModuleList(convs)
    projections = 768 + 26_112
    assert weight_params(stage) == 3_456 + 13_824 + projections
    assert sum(p.numel() for p in stage.parameters()) - weight_params(stage) == (24 + 32) + 17 * (48 + 32)


@pytest.mark.parametrize("kwargs,message", [
    (dict(in_channels=12, basis_size=5), "layer1.conv: basis_size 5 does not divide in_channels 12"),
    (dict(n_basis=0), "layer1.conv: n_basis must be an integer >= 1, got 0"),
    (dict(basis_size=0), "basis_size must be an integer >= 1, got 0"),
    (dict(kernel_size2=0), "kernel_size2 must be an integer >= 1, got 0"),
    (dict(stride=0), "stride must be integers >= 1"),
    (dict(padding=-1), "padding integers >= 0"),
    (dict(basis=Basis(6, 4, 5)), "layer1.conv: shared basis has kernel_size 5, the layer needs 3"),
    (dict(basis=Basis(6, 2, 3)), "layer1.conv: shared basis is 2 channels wide, narrower than basis_size 4"),
    (dict(basis=Basis(5, 4, 3)), "layer1.conv: shared basis has 5 filters, n_basis is 6"),
    (dict(n_basis=None), "layer1.conv: n_basis is required when no shared basis is given"),
    (dict(basis=torch.zeros(6, 4, 3, 3)), "layer1.conv: basis must be a Basis module, got Tensor"),
    (dict(mid=nn.ReLU()), "layer1.conv: mid must be a factory f(num_channels)"),
    (dict(post=3), "layer1.conv: post must be a factory"),
])
def test_invalid_configurations_raise_value_error_naming_layer_and_numbers(kwargs, message):
    args = dict(in_channels=8, out_channels=8, kernel_size=3, basis_size=4, n_basis=6, name="layer1.conv")
    args.update(kwargs)
    with pytest.raises(ValueError, match=re.escape(message)):
        BasisConv2d(**args)


def test_unnamed_layer_errors_describe_the_layer():
    with pytest.raises(ValueError, match=r"BasisConv2d\(12->4, kernel_size=3\): basis_size 5 does not"):
        BasisConv2d(12, 4, 3, 5, 6)
    with pytest.raises(ValueError, match="Basis: width must be an integer >= 1, got 0"):
        Basis(3, 0)


def test_wrong_input_width_fails_with_a_clear_message():
    layer = BasisConv2d(8, 4, 3, 4, 6, name="body.0")
    with pytest.raises(ValueError, match=r"body.0: expects \(N, 8, H, W\) input, got \(1, 6, 5, 5\)"):
        layer(torch.randn(1, 6, 5, 5))


@pytest.mark.cuda
def test_cuda_fit_and_forward_match_cpu():
    """Fitting on the GPU (including filters beyond the rank, 40 > 4 x 3 x 3) and the forward pass in
    NCHW, channels_last and float16 autocast agree with the CPU."""
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 8, 3, padding=1).double()
    x = torch.randn(2, 16, 9, 9, dtype=torch.float64)
    layer = BasisConv2d.from_conv(copy.deepcopy(conv).cuda(), 4, 40)
    assert layer.basis.weight.is_cuda and layer.reconstruction_error < 1e-10
    torch.testing.assert_close(layer(x.cuda()).cpu(), conv(x))
    layer = layer.float()
    expected = conv.float()(x.float())
    x_cl = x.float().cuda().contiguous(memory_format=torch.channels_last)
    out = layer.to(memory_format=torch.channels_last)(x_cl)
    torch.testing.assert_close(out.cpu(), expected, rtol=1e-2, atol=1e-2)  # TF32 convolutions
    with torch.autocast("cuda", dtype=torch.float16):
        half = layer(x.float().cuda())
    assert half.dtype == torch.float16
    assert (half.float().cpu() - expected).norm() / expected.norm() < 1e-2
