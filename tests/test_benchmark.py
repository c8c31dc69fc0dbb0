"""The speed benchmark: runs end to end, writes its JSON, and its naive reference is the same layer."""

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from filter_basis.benchmark import SHAPES, LayerShape, build_layers, main, naive_forward


def test_runs_end_to_end_and_writes_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert main(["--shapes", "srresnet-32-32", "--batch", "1", "--repeats", "1", "--json", str(path)]) == 0
    assert "srresnet-32-32" in capsys.readouterr().out
    data = json.loads(path.read_text())
    assert set(data) == {"device", "memory_format", "torch", "repeats", "shapes"}
    assert data["memory_format"] == "NCHW" and data["repeats"] == 1
    (record,) = data["shapes"]
    assert record["shape"]["name"] == "srresnet-32-32" and record["shape"]["batch"] == 1
    assert record["naive_max_abs_diff"] < 1e-4
    assert set(record["passes"]) == {"forward", "forward+backward"}
    for figures in record["passes"].values():
        assert set(figures["ms"]) == set(figures["flops"]) == {"dense", "basis", "naive"}
        assert all(t > 0 for t in figures["ms"].values())
        for key in ("basis_over_dense", "basis_over_naive", "flop_ratio_basis_over_dense", "limit"):
            assert key in figures
        flops = figures["flops"]
        assert flops["basis"] == flops["naive"]  # the same work, folded into one call
        assert figures["flop_ratio_basis_over_dense"] == flops["basis"] / flops["dense"]
    # Forward FLOPs: 24x24 maps, 2 splits of 32 channels against 32 filters, then a 64 -> 64 projection.
    forward = record["passes"]["forward"]["flops"]
    assert forward["dense"] == 2 * 64 * 64 * 9 * 24 * 24
    assert forward["basis"] == forward["naive"] == 2 * (2 * 32 * 32 * 9 + 64 * 64) * 24 * 24


@pytest.mark.parametrize("name", ["vgg16-2x2", "srresnet-32-32", "densenet40"])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_naive_reference_equals_basis_layer(name, memory_format):
    torch.manual_seed(0)
    shape = LayerShape(**{**SHAPES[name].__dict__, "batch": 2, "height": 5, "width": 6})
    variants = build_layers(shape, torch.device("cpu"), memory_format)
    layer = variants["basis"][0]
    x = torch.randn(2, shape.in_channels, 5, 6).contiguous(memory_format=memory_format)
    x.requires_grad_(True)
    y = layer(x)
    y.square().sum().backward()
    grads = [x.grad] + [p.grad for p in layer.parameters()]
    x.grad = None
    layer.zero_grad(set_to_none=True)
    reference = naive_forward(layer, x)
    reference.square().sum().backward()
    torch.testing.assert_close(y, reference, rtol=1e-5, atol=1e-5)
    assert layer.basis_forward(x).is_contiguous(memory_format=memory_format)  # the layout is kept
    for got, want in zip(grads, [x.grad] + [p.grad for p in layer.parameters()]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    with FlopCounterMode(display=False) as basis_flops:
        layer(x).square().sum().backward()
    with FlopCounterMode(display=False) as naive_flops:
        naive_forward(layer, x).square().sum().backward()
    assert basis_flops.get_total_flops() == naive_flops.get_total_flops()  # the same work in any layout


def test_unknown_shape_is_a_one_line_error(capsys):
    assert main(["--shapes", "vgg16-4x4,alexnet"]) == 2
    err = capsys.readouterr().err
    assert "alexnet" in err and "edsr-256-32" in err and len(err.strip().splitlines()) == 1


@pytest.mark.cuda
@pytest.mark.parametrize("layout", [[], ["--channels-last"]])
def test_runs_on_cuda(tmp_path, layout):
    path = tmp_path / "bench.json"
    argv = ["--device", "cuda", "--shapes", "vgg16-2x2,srresnet-64-14", "--batch", "2", "--repeats", "2"]
    assert main(argv + layout + ["--json", str(path)]) == 0
    data = json.loads(path.read_text())
    assert data["device"] == torch.cuda.get_device_name()
    assert all(record["naive_max_abs_diff"] < 1e-3 for record in data["shapes"])


def _benchmark_train():
    """scripts/benchmark_train.py as a module (a script, not part of the library)."""
    path = Path(__file__).resolve().parents[1] / "scripts" / "benchmark_train.py"
    spec = importlib.util.spec_from_file_location("benchmark_train", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_layer_benchmark_says_where_the_training_benchmark_went(capsys):
    assert main(["--train"]) == 2
    err = capsys.readouterr().err
    assert "scripts/benchmark_train.py" in err and len(err.strip().splitlines()) == 1


def test_train_benchmark_runs_whole_steps_and_writes_json(tmp_path, capsys, one_thread):
    bench = _benchmark_train()
    path = tmp_path / "train.json"
    argv = ["--models", "resnet56,resnet56-basis,resnet56-basis-decomposed", "--batch", "2",
            "--rounds", "2", "--steps", "1", "--warmup", "0", "--pipeline_batches", "2",
            "--pipeline_rounds", "1", "--workers", "1", "--channels_last", "--json", str(path)]
    assert bench.main(argv) == 0
    data = json.loads(path.read_text())
    assert data["memory_format"] == "channels_last" and data["amp"] == "none" and not data["compile"]
    models = data["training"]["models"]
    assert list(models) == ["resnet56", "resnet56-basis", "resnet56-basis-decomposed"]
    assert all(len(m["per_round"]) == 2 and m["samples_per_s"] > 0 and m["batch"] == 2
               for m in models.values())
    # the optimiser main.py builds for these options (the classification tree's defaults), not a fixed one
    assert all((m["optimizer"], m["lr"], m["loss"]) == ("SGD", 0.1, "1*CE") for m in models.values())
    ratios = {"resnet56-basis/resnet56", "resnet56-basis-decomposed/resnet56",
              "resnet56-basis/resnet56-basis-decomposed"}
    assert set(data["training"]["ratios"]) == ratios
    assert set(data["pipeline"]["samples_per_s"]) == {"device", "per_image"}
    out = capsys.readouterr().out
    assert "resnet56-basis-decomposed" in out and "input pipeline at batch 128" in out


def test_train_benchmark_steps_are_the_trees_training_steps(one_thread):
    """A step is the tree's Trainer step: its optimiser (SGD 0.1 / Adam 1e-4 as main.py), its loss, autocast,
    and it changes the weights."""
    bench = _benchmark_train()
    opts = argparse.Namespace(batch=2, channels_last=False, compile=False, amp="bf16", fused=False,
                              device="cpu")
    for name, optimizer, lr in (("resnet56-basis", torch.optim.SGD, 0.1),
                                ("srresnet-basis-32-32", torch.optim.Adam, 1e-4)):
        runner = bench.Runner(bench.MODELS[name], opts)
        assert isinstance(runner.optimizer, optimizer) and runner.optimizer.param_groups[0]["lr"] == lr
        assert runner.runtime.amp_dtype == torch.bfloat16
        before = [p.detach().clone() for p in runner.model.parameters()]
        runner.step()
        assert any(not torch.equal(a, b) for a, b in zip(before, runner.model.parameters()))


def test_fused_benchmark_runs_forward_passes_of_the_deployed_model(one_thread):
    """--fused: the fuse()d model (BatchNorm folded, eval mode) is timed; a step changes no weight."""
    bench = _benchmark_train()
    opts = argparse.Namespace(batch=2, channels_last=False, compile=False, amp="none", fused=True,
                              device="cpu")
    runner = bench.Runner(bench.MODELS["resnet56-basis"], opts)
    assert not runner.model.training
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in runner.model.modules())
    before = [p.detach().clone() for p in runner.model.parameters()]
    runner.step()
    assert all(torch.equal(a, b) for a, b in zip(before, runner.model.parameters()))


def test_train_benchmark_models_are_the_paper_configurations():
    bench = _benchmark_train()
    opts = argparse.Namespace(batch=None, device="cpu", amp="none")
    args = bench.parse_options(bench.MODELS["resnet56-basis"], opts)
    model = bench.build(bench.MODELS["resnet56-basis"], args)
    # the weight parameters --summary reports for the official train_resnet.sh command
    assert sum(p.numel() for p in model.parameters() if p.dim() > 1) == 194_992
    decomposed = bench.parse_options(bench.MODELS["resnet56-basis-decomposed"], opts)
    assert decomposed.basis_form == "decomposed" and args.basis_form == "auto" and args.batch_size == 64


def test_train_benchmark_unknown_model_is_a_one_line_error(capsys):
    assert _benchmark_train().main(["--models", "resnet56,alexnet"]) == 2
    err = capsys.readouterr().err
    assert "alexnet" in err and "edsr8-128" in err and len(err.strip().splitlines()) == 1
