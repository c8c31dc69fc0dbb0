"""A fused model leaves PyTorch: ONNX (checked, and run with onnx's reference evaluator) and torch.export."""

import onnx
import pytest
import torch
from onnx.reference import ReferenceEvaluator
from torch import nn

from filter_basis import fuse
from filter_basis.layers import SIC, Basis, BasisConv2d, GroupConv2d, norm_act


def _small_model() -> nn.Module:
    """Conv+BN, a merged and a decomposed (shared-basis, two-split, strided) basis layer, SIC, Group:
    8 convolutions once fused (1 + 2 + 1 + 2 + 2), every BN folded."""
    torch.manual_seed(0)
    shared = Basis(4, 4, 3)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        BasisConv2d(8, 8, 3, 4, 4, basis=shared, stride=2, post=norm_act()),
        BasisConv2d.from_conv(nn.Conv2d(8, 8, 3, padding=1), 8, 72), nn.BatchNorm2d(8),
        SIC(8, 8, dw_norm=True, pw_norm=True),
        GroupConv2d(8, 8, groups=2, mid=norm_act(), post=nn.BatchNorm2d),
    )
    gen = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.rand(module.num_features, generator=gen) - 0.5)
            module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
    return model.eval()


def _fused_and_reference():
    model = _small_model()
    fused = fuse(model)
    x = torch.randn(2, 3, 10, 10, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = model(x)
    return fused, x, expected


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_fused_model_exports_to_onnx(tmp_path):
    fused, x, expected = _fused_and_reference()
    path = tmp_path / "fused.onnx"
    torch.onnx.export(fused, (x,), str(path), dynamo=False, input_names=["x"], output_names=["y"])
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph, full_check=True)
    ops = [node.op_type for node in graph.graph.node]
    assert "BatchNormalization" not in ops and ops.count("Conv") == 8
    (y,) = ReferenceEvaluator(graph).run(None, {"x": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(y), expected, rtol=1e-4, atol=1e-5)


def test_fused_model_exports_with_torch_export(tmp_path):
    fused, x, expected = _fused_and_reference()
    program = torch.export.export(fused, (x,))
    path = tmp_path / "fused.pt2"
    torch.export.save(program, str(path))
    loaded = torch.export.load(str(path))
    targets = [str(node.target) for node in loaded.graph.nodes if node.op == "call_function"]
    assert not any("batch_norm" in target for target in targets)
    assert sum("conv2d" in target for target in targets) == 8
    torch.testing.assert_close(loaded.module()(x), expected, rtol=1e-4, atol=1e-5)
