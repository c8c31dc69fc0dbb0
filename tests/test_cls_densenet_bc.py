"""DenseNet-BC (``--bottleneck``, ``--reduction``; ``--template DenseNet-BC``): parameter counts against an
independent formula (and the published 0.77M of DenseNet-BC-100, k = 12), the bottleneck layer's
computation, the transitions' floor(reduction x C), and the refused DenseNet_Basis form."""

import math
import shlex

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from filter_basis.errors import OptionError
from image_classification.model import build_model
from image_classification.option import parse_args

pytestmark = pytest.mark.usefixtures("one_thread")


def build(command_line: str, meta: bool = True) -> nn.Module:
    args = parse_args(shlex.split(command_line))
    if meta:
        with torch.device("meta"):
            return build_model(args)
    torch.manual_seed(0)
    return build_model(args).eval()


def total_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv3x3_params(method: str, c: int, k: int) -> int:
    """The parameters replacing the bottleneck's 3x3 conv (4k = c -> k)."""
    if method == "DenseNet":
        return c * k * 9
    if method == "DenseNet_Factor":  # SIC(c -> k): dw + BN(c) + 1x1; SIC(k -> k): dw + BN(k) + 1x1
        return (c * 9 + 2 * c + c * k) + (k * 9 + 2 * k + k * k)
    groups = 3  # DenseNet_Group: 3 groups up to 252 input channels; the 3x3 conv sees 4k = 48
    return k * (c // groups) * 9 + k * k


def bc_params(method: str, depth: int, k: int, reduction: float, classes: int = 10) -> int:
    """Stem 3 -> 2k; per layer BN(C), 1x1 C -> 4k, BN(4k), 3x3 4k -> k; transitions BN(C), 1x1 C ->
    floor(reduction C); final BN(C) and Linear(C, classes); (depth - 4) / 6 layers per block."""
    n = (depth - 4) // 6
    c, total = 2 * k, 3 * 2 * k * 9
    for block in range(3):
        for _ in range(n):
            total += 2 * c + c * 4 * k + 2 * 4 * k + conv3x3_params(method, 4 * k, k)
            c += k
        if block < 2:
            out = math.floor(reduction * c)
            total += 2 * c + c * out
            c = out
    return total + 2 * c + c * classes + classes


def test_densenet_bc_100_has_the_published_size():
    model = build("--template DenseNet-BC --model DenseNet --depth 100")
    assert total_params(model) == bc_params("DenseNet", 100, 12, 0.5) == 769_162


@pytest.mark.parametrize("method", ["DenseNet", "DenseNet_Factor", "DenseNet_Group"])
@pytest.mark.parametrize("depth, k, reduction", [(100, 12, 0.5), (40, 12, 0.3), (22, 24, 0.5)])
def test_bc_counts_match_the_formula(method, depth, k, reduction):
    extra = " --group_size 6" if method == "DenseNet_Group" else ""
    model = build(f"--model {method} --depth {depth} --k {k} --bottleneck --reduction {reduction}" + extra)
    assert total_params(model) == bc_params(method, depth, k, reduction)


def test_template_sets_bottleneck_and_half_reduction():
    args = parse_args(shlex.split("--template DenseNet-BC --model DenseNet --depth 40"))
    assert args.bottleneck and args.reduction == 0.5
    assert not parse_args(shlex.split("--template DenseNet --model DenseNet --depth 40")).bottleneck


def test_transitions_compress_to_the_floor_of_reduction_times_width():
    model = build("--model DenseNet --depth 40 --bottleneck --reduction 0.3")  # 6 layers of k = 12
    assert [model.features[i][2].weight.shape[:2] for i in (2, 4)] == [(28, 96), (30, 100)]  # 0.3 x 96 = 28.8


def test_bottleneck_layer_is_bn_relu_1x1_bn_relu_3x3_then_concatenation():
    model = build("--model DenseNet --depth 22 --k 6 --bottleneck --reduction 0.5", meta=False)
    layer = model.features[1][1]
    with torch.no_grad():
        for m in layer.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    bn1, conv1, bn2, conv2 = layer.body[0], layer.body[2], layer.body[3], layer.body[5]
    assert tuple(conv1.weight.shape) == (24, 18, 1, 1) and tuple(conv2.weight.shape) == (6, 24, 3, 3)
    x = torch.randn(2, 18, 8, 8)

    def bn(m, y):
        return F.batch_norm(y, m.running_mean, m.running_var, m.weight, m.bias, eps=m.eps)

    new = F.conv2d(F.relu(bn(bn2, F.conv2d(F.relu(bn(bn1, x)), conv1.weight))), conv2.weight, padding=1)
    with torch.no_grad():
        assert torch.allclose(layer(x), torch.cat([x, new], 1), atol=1e-5)
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_densenet_basis_bottleneck_is_refused_in_one_line():
    with pytest.raises(OptionError, match="--bottleneck with --model DenseNet_Basis") as error:
        build("--template DenseNet-BC --model DenseNet_Basis --depth 40")
    assert "\n" not in str(error.value)
