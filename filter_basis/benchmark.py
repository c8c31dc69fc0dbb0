"""Speed of BasisConv2d against the dense convolution it replaces and against the naive basis layer.

``python -m filter_basis.benchmark [--json FILE] [--device cpu|cuda] [--repeats N] [--shapes NAME,...]
[--batch N] [--threads N] [--channels_last]``.  Whole training steps of the paper's models are measured by
``python scripts/benchmark_train.py``, which builds them through their trees (``docs/benchmarks.md``).

For each of the paper's layer shapes it times the forward pass and the forward+backward pass of three
layers with the same input and output: a dense ``nn.Conv2d`` (k x k), ``BasisConv2d``, and the naive
form of the same basis layer (a Python loop over the channel splits and a concatenation, the reference
written below).  Rounds alternate dense, basis, naive so that drift in machine load hits all three
alike; times are medians over rounds, ratios are medians of the per-round ratios.  FLOPs come from
``FlopCounterMode`` and are printed beside the time ratios, with a hint at what limits each shape.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .errors import OptionError, report_errors
from .layers import Basis, BasisConv2d

VARIANTS = ("dense", "basis", "naive")
PASSES = ("forward", "forward+backward")
MIN_MEASURE_S = 0.02  # calls per measurement are chosen so that one measurement lasts at least this


@dataclass(frozen=True)
class LayerShape:
    """One basis layer of the paper and the dense convolution it replaces (3x3, stride 1)."""

    name: str
    source: str
    in_channels: int
    out_channels: int
    height: int
    width: int
    basis_size: int
    n_basis: int
    batch: int
    basis_width: Optional[int] = None  # a wider shared basis the layer slices (DenseNet_Basis)
    kernel_size2: int = 1


SHAPES = {s.name: s for s in (
    LayerShape("vgg16-4x4", "VGG-16 512-ch layer, 4x4 maps", 512, 512, 4, 4, 128, 128, 64),
    LayerShape("vgg16-2x2", "VGG-16 512-ch layer, 2x2 maps", 512, 512, 2, 2, 128, 128, 64),
    LayerShape("resnet56-s3", "ResNet-56 stage 3", 64, 64, 8, 8, 64, 84, 64),
    LayerShape("densenet40", "DenseNet-40 dense layer, C=432, 444-ch shared basis", 432, 12, 8, 8,
               432, 36, 64, basis_width=444, kernel_size2=3),
    LayerShape("srresnet-32-32", "SRResNet Basis-32-32", 64, 64, 24, 24, 32, 32, 16),
    LayerShape("srresnet-64-14", "SRResNet Basis-64-14", 64, 64, 24, 24, 64, 14, 16),
    LayerShape("edsr8-128-27", "EDSR-8-128 Basis-128-27", 128, 128, 48, 48, 128, 27, 16),
    LayerShape("edsr8-128-40", "EDSR-8-128 Basis-128-40", 128, 128, 48, 48, 128, 40, 16),
    LayerShape("edsr-256-32", "EDSR Basis-256-32", 256, 256, 48, 48, 256, 32, 16),
)}


def naive_forward(layer: BasisConv2d, x: torch.Tensor) -> torch.Tensor:
    """The straightforward linear basis layer: one convolution per split, concatenated, projected."""
    weight = layer.basis_weight()
    b = layer.basis_size
    maps = [F.conv2d(x[:, g * b:(g + 1) * b], weight, layer.basis_bias, layer.stride, layer.padding)
            for g in range(layer.n_splits)]
    return layer.projection(torch.cat(maps, 1))


def build_layers(shape: LayerShape, device: torch.device,
                 memory_format: torch.memory_format = torch.contiguous_format) -> dict:
    """The three variants of one shape on ``device``: ``{name: (callable, its parameters)}``."""
    dense = nn.Conv2d(shape.in_channels, shape.out_channels, 3, padding=1)
    shared = Basis(shape.n_basis, shape.basis_width) if shape.basis_width else None
    layer = BasisConv2d(shape.in_channels, shape.out_channels, 3, shape.basis_size, shape.n_basis,
                        kernel_size2=shape.kernel_size2, basis=shared, name=shape.name)
    layer.form = "decomposed"  # the layer benchmark characterises the basis kernels
    dense.to(device, memory_format=memory_format)
    layer.to(device, memory_format=memory_format)
    return {"dense": (dense, list(dense.parameters())),
            "basis": (layer, list(layer.parameters())),
            "naive": (lambda x: naive_forward(layer, x), list(layer.parameters()))}


def _step(fn: Callable, params: list, x: torch.Tensor, grad: torch.Tensor,
          backward: bool) -> Callable[[], None]:
    """One call of a pass: forward without autograd, or forward then backward into input and weights."""
    def forward() -> None:
        with torch.no_grad():
            fn(x)

    def forward_backward() -> None:
        x.grad = None
        for p in params:
            p.grad = None
        fn(x).backward(grad)

    return forward_backward if backward else forward


def _timer(device: torch.device) -> Callable[[Callable[[], None], int], float]:
    """Seconds per call of ``step`` over ``calls`` calls (CUDA events on a GPU, a wall clock otherwise)."""
    if device.type == "cuda":
        def measure(step, calls):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(calls):
                step()
            end.record()
            torch.cuda.synchronize(device)
            return start.elapsed_time(end) / 1000.0 / calls
    else:
        def measure(step, calls):
            start = time.perf_counter()
            for _ in range(calls):
                step()
            return (time.perf_counter() - start) / calls
    return measure


def _count_flops(step: Callable[[], None]) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return counter.get_total_flops()


def _spread_pct(samples: list) -> float:
    """Interquartile range over median, in percent: how noisy one variant's measurements were."""
    if len(samples) < 4:
        return 0.0
    q1, median, q3 = statistics.quantiles(samples, n=4)
    return 100.0 * (q3 - q1) / median


def _limit(flop_ratio: float, ms: dict, dense_flops: int) -> str:
    """A short hint at what bounds the basis layer's time on this shape."""
    if flop_ratio >= 1.0:
        return "FLOPs (basis layer does more work than dense)"
    if ms["basis"] < 0.5:
        return f"per-call overhead ({1000 * ms['basis']:.0f} us/call)"
    dense_rate = dense_flops / ms["dense"] / 1e6  # GFLOP/s
    basis_rate = flop_ratio * dense_flops / ms["basis"] / 1e6
    return f"kernel efficiency: basis {basis_rate:.0f} vs dense {dense_rate:.0f} GFLOP/s"


def benchmark_shape(shape: LayerShape, device: torch.device, repeats: int,
                    memory_format: torch.memory_format = torch.contiguous_format) -> dict:
    """Time and count one shape; returns its record of the JSON file."""
    torch.manual_seed(0)
    variants = build_layers(shape, device, memory_format)
    x = torch.randn(shape.batch, shape.in_channels, shape.height, shape.width, device=device)
    grad = torch.randn(shape.batch, shape.out_channels, shape.height, shape.width, device=device)
    x, grad = x.contiguous(memory_format=memory_format), grad.contiguous(memory_format=memory_format)
    with torch.no_grad():
        difference = (variants["naive"][0](x) - variants["basis"][0](x)).abs().max().item()
    measure = _timer(device)
    record = {"shape": asdict(shape), "naive_max_abs_diff": difference, "passes": {}}
    for backward, pass_name in zip((False, True), PASSES):
        leaf = x.detach().requires_grad_(backward)
        steps = {v: _step(fn, params, leaf, grad, backward) for v, (fn, params) in variants.items()}
        flops = {v: _count_flops(steps[v]) for v in VARIANTS}
        for step in steps.values():  # warm up kernels and the allocator
            step()
            step()
        calls = max(1, round(MIN_MEASURE_S / max(measure(steps["dense"], 1), 1e-6)))
        samples = {v: [] for v in VARIANTS}
        for _ in range(repeats):
            for v in VARIANTS:
                samples[v].append(measure(steps[v], calls))
        ms = {v: 1000.0 * statistics.median(samples[v]) for v in VARIANTS}
        flop_ratio = flops["basis"] / flops["dense"]
        record["passes"][pass_name] = {
            "ms": ms,
            "flops": flops,
            "calls_per_measurement": calls,
            "spread_pct": {v: _spread_pct(samples[v]) for v in VARIANTS},
            "basis_over_dense": statistics.median(b / d for b, d in zip(samples["basis"], samples["dense"])),
            "basis_over_naive": statistics.median(b / n for b, n in zip(samples["basis"], samples["naive"])),
            "flop_ratio_basis_over_dense": flop_ratio,
            "limit": _limit(flop_ratio, ms, flops["dense"]),
        }
    return record


def format_table(records: list) -> str:
    """The printed table: times, time ratios beside the FLOP ratio, noise and the limiting factor."""
    header = (f"{'shape':<15} {'pass':<8} {'dense ms':>9} {'basis ms':>9} {'naive ms':>9} "
              f"{'b/dense':>7} {'FLOPs b/d':>9} {'b/naive':>7} {'noise%':>6}  limit")
    lines = [header, "-" * len(header)]
    for record in records:
        for pass_name, p in record["passes"].items():
            ms = p["ms"]
            lines.append(
                f"{record['shape']['name']:<15} {'fwd' if pass_name == 'forward' else 'fwd+bwd':<8} "
                f"{ms['dense']:>9.3f} {ms['basis']:>9.3f} {ms['naive']:>9.3f} "
                f"{p['basis_over_dense']:>7.3f} {p['flop_ratio_basis_over_dense']:>9.3f} "
                f"{p['basis_over_naive']:>7.3f} {max(p['spread_pct'].values()):>6.1f}  {p['limit']}")
    return "\n".join(lines)


def parse_args(argv: Optional[list]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m filter_basis.benchmark",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--json", metavar="FILE", help="write the figures to FILE as JSON")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--repeats", type=int, default=11, help="alternating rounds per pass (default 11)")
    parser.add_argument("--shapes", default=",".join(SHAPES),
                        help=f"comma-separated shape names (default all: {','.join(SHAPES)})")
    parser.add_argument("--batch", type=int, help="override every shape's batch size (quick runs)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's choice)")
    parser.add_argument("--channels_last", "--channels-last", dest="channels_last", action="store_true",
                        help="inputs, gradients and weights in channels_last (NHWC) memory format")
    parser.add_argument("--train", action="store_true", help=argparse.SUPPRESS)  # moved: see _check
    return parser.parse_args(argv)


def known_names(value: str, known, option: str, what: str, also: str = "") -> list:
    """The comma-separated names of ``value``, each one of ``known`` (else a one-line OptionError;
    ``also`` adds to its list of known values)."""
    names = [n for n in value.split(",") if n]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise OptionError(f"{option}: unknown {what} {','.join(unknown) or '(none)'!r}; "
                          f"known: {', '.join(known)}{also}")
    return names


def check_device(device: str) -> None:
    """``--device``: cpu, or cuda where a CUDA device is available (else a one-line OptionError)."""
    if device not in ("cpu", "cuda"):
        raise OptionError(f"--device {device!r}: use cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise OptionError("--device cuda: no CUDA device is available here; use --device cpu")


def _check(args: argparse.Namespace) -> tuple:
    if args.train:
        raise OptionError("--train: the training-step benchmark builds the models through their trees, so it "
                          "is a script now: python scripts/benchmark_train.py (see docs/benchmarks.md)")
    names = known_names(args.shapes, SHAPES, "--shapes", "shape")
    check_device(args.device)
    for option, value in (("--repeats", args.repeats), ("--batch", args.batch), ("--threads", args.threads)):
        if value is not None and value < 1:
            raise OptionError(f"{option} {value}: must be at least 1")
    shapes = [SHAPES[n] for n in names]
    if args.batch is not None:
        shapes = [LayerShape(**{**asdict(s), "batch": args.batch}) for s in shapes]
    return shapes, torch.device(args.device)


def main(argv: Optional[list] = None) -> int:
    args = parse_args(argv)
    return report_errors(lambda: _run(args))


def _run(args: argparse.Namespace) -> None:
    shapes, device = _check(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    records = []
    for shape in shapes:
        records.append(benchmark_shape(shape, device, args.repeats, memory_format))
        print(f"done {shape.name}", file=sys.stderr, flush=True)
    name = _device_name(device)
    layout = "channels_last" if args.channels_last else "NCHW"
    print(f"device: {name}; {layout}; torch {torch.__version__}; {args.repeats} alternating rounds; "
          "times are medians, ratios medians of per-round ratios; noise% = worst IQR / median")
    print(format_table(records))
    if args.json:
        result = {"device": name, "memory_format": layout, "torch": torch.__version__,
                  "repeats": args.repeats, "shapes": records}
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu, {torch.get_num_threads()} threads"


if __name__ == "__main__":
    sys.exit(main())
