"""Samples per second of complete training steps of the paper's models, as ``main.py`` trains them.

``python scripts/benchmark_train.py [--models a,b] [--device cpu|cuda] [--amp none|bf16|fp16]
[--channels_last] [--compile] [--fused] [--threads N] [--json FILE] ...``

Every model is built the way ``main.py`` builds it: its tree (``<tree>/tree.py``'s ``TREE``) parses the
options (so optimiser, learning rate, loss and schedule are the tree's defaults for those options), builds
the model, the loss, the device ``Runtime`` and the tree's ``Trainer``; a step is the trainer's own
``Trainer.step`` (forward under ``--amp``, loss, backward with the gradient scaler, optimiser step).
Classification batches come from the tree's device batch pipeline (random crop, flip and normalisation
included) over the built-in ``Synthetic`` set; SR batches are drawn at random from prepared LR/HR patch
pairs on the device (no image files needed).  Rounds interleave the models (every round runs ``--steps``
steps of each) so that drift in machine load hits all alike; figures are medians over rounds, ratios
medians of per-round ratios.  The classification input pipeline is also measured alone (samples/s at
batch 128): batches made on the device against the per-image DataLoader.  The layer benchmark is
``python -m filter_basis.benchmark``; both are described in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout: the trees are importable from the root
    sys.path.insert(0, str(ROOT))

from filter_basis.benchmark import check_device, known_names  # noqa: E402
from filter_basis.deploy import fuse  # noqa: E402
from filter_basis.engine.device import Runtime  # noqa: E402
from filter_basis.engine.distributed import DistEnv  # noqa: E402
from filter_basis.engine.losses import build_loss  # noqa: E402
from filter_basis.errors import OptionError, report_errors  # noqa: E402
from filter_basis.layers import set_basis_form  # noqa: E402


@dataclass(frozen=True)
class TrainModel:
    """One model of the benchmark: its tree, its command-line options, and what it is compared with."""

    name: str
    tree: str  # "image_classification" or "super_resolution"
    argv: tuple
    baselines: tuple = ()  # the models its samples/s is compared with (the dense one first)


_CLS = ("--batch_size", "64")  # the batch of the official ResNet/DenseNet training scripts
_SR = ("--scale", "4")
MODELS = {m.name: m for m in (
    TrainModel("resnet56", "image_classification", ("--model", "ResNet", "--depth", "56", *_CLS)),
    TrainModel("resnet56-basis", "image_classification",
               ("--model", "ResNet_Basis", "--depth", "56", "--k_size2", "1", *_CLS),
               ("resnet56", "resnet56-basis-decomposed")),
    TrainModel("resnet56-basis-decomposed", "image_classification",
               ("--model", "ResNet_Basis", "--depth", "56", "--k_size2", "1", "--basis_form", "decomposed",
                *_CLS),
               ("resnet56",)),
    TrainModel("vgg16", "image_classification", ("--model", "VGG", "--vgg_type", "16", *_CLS)),
    TrainModel("vgg16-basis", "image_classification",
               ("--model", "VGG_Basis", "--vgg_type", "16", "--basis_size", "128", *_CLS), ("vgg16",)),
    TrainModel("densenet40", "image_classification", ("--model", "DenseNet", "--depth", "40", *_CLS)),
    TrainModel("densenet40-basis", "image_classification",
               ("--model", "DenseNet_Basis", "--depth", "40", "--transition_group", "6", "--n_basis", "36",
                *_CLS), ("densenet40",)),
    TrainModel("srresnet", "super_resolution",
               ("--model", "SRResNet", *_SR, "--n_resblocks", "16", "--n_feats", "64", "--patch_size", "96")),
    TrainModel("srresnet-basis-32-32", "super_resolution",
               ("--model", "SRResNet_Basis", *_SR, "--n_resblocks", "16", "--n_feats", "64",
                "--patch_size", "96", "--basis_size", "32", "--n_basis", "32", "--bn_every"), ("srresnet",)),
    TrainModel("edsr8-128", "super_resolution",
               ("--model", "EDSR", *_SR, "--n_resblocks", "8", "--n_feats", "128", "--res_scale", "1",
                "--patch_size", "192")),
    TrainModel("edsr8-128-basis-128-27", "super_resolution",
               ("--model", "EDSR_Basis", *_SR, "--n_resblocks", "8", "--n_feats", "128", "--res_scale", "1",
                "--patch_size", "192", "--basis_size", "128", "--n_basis", "27"), ("edsr8-128",)),
)}
PIPELINE_BATCH = 128
PIPELINE_SET_SIZE = 50_000  # as CIFAR's training set


def tree_of(spec: TrainModel):
    """The tree's engine plug-in (``image_classification.tree.TREE`` or ``super_resolution.tree.TREE``)."""
    from filter_basis.engine import find_tree

    return find_tree(spec.tree)


def parse_options(spec: TrainModel, opts: argparse.Namespace) -> argparse.Namespace:
    """The tree's options for ``spec`` plus this run's device options, validated as main.py validates them."""
    argv = list(spec.argv)
    if spec.tree == "image_classification":
        argv += ["--data_train", "Synthetic", "--data_test", "Synthetic"]
    if getattr(opts, "batch", None):
        argv += ["--batch_size", str(opts.batch)]
    if getattr(opts, "device", "cpu") == "cpu":
        argv.append("--cpu")
    argv += ["--amp", getattr(opts, "amp", "none")]
    argv += ["--channels_last"] if getattr(opts, "channels_last", False) else []
    argv += ["--compile"] if getattr(opts, "compile", False) else []
    return tree_of(spec).parse_args(argv)


def build(spec: TrainModel, args: argparse.Namespace) -> torch.nn.Module:
    """The model ``main.py`` would train for these options (seeded, in its training form)."""
    torch.manual_seed(0)
    model = tree_of(spec).build_model(args)
    set_basis_form(model, args.basis_form)
    return model


def _endless(loader) -> Callable[[], tuple]:
    state = {"it": iter(loader)}

    def next_batch():
        try:
            return next(state["it"])
        except StopIteration:
            state["it"] = iter(loader)
            return next(state["it"])
    return next_batch


def classification_batches(tree, args: argparse.Namespace, device: torch.device) -> Callable[[], tuple]:
    """Endless training batches of the tree's own pipeline for ``--data_train`` (batches made on the
    device: random sampler, crop, flip, normalisation)."""
    from torch.utils.data import RandomSampler

    dataset = tree.build_train_set(args)
    loader = tree.device_loader(args.data_train, dataset, True, args.batch_size, RandomSampler(dataset), args,
                                device)
    return _endless(loader)


def sr_batches(args: argparse.Namespace, runtime: Runtime) -> Callable[[], tuple]:
    """Batches drawn at random from 8 batches of prepared LR/HR patch pairs on the device."""
    scale, hr, batch, device = args.scale[0], args.patch_size, args.batch_size, runtime.device
    generator = torch.Generator().manual_seed(0)
    pool = 8 * batch
    hr_patches = (torch.rand(pool, args.n_colors, hr, hr, generator=generator) * args.rgb_range).to(device)
    lr_patches = F.avg_pool2d(hr_patches, scale)
    draw = torch.Generator(device=device).manual_seed(0)

    def next_batch():
        index = torch.randint(0, pool, (batch,), generator=draw, device=device)
        return runtime.to_device(lr_patches.index_select(0, index)), \
            runtime.to_device(hr_patches.index_select(0, index))
    return next_batch


class Runner:
    """One model's training step: the tree's Trainer with its optimiser, loss, autocast and scaler."""

    def __init__(self, spec: TrainModel, opts: argparse.Namespace):
        tree = tree_of(spec)
        args = parse_options(spec, opts)
        env = DistEnv()
        self.spec, self.args, self.batch = spec, args, args.batch_size
        self.runtime = runtime = Runtime.from_args(args, env)
        self.model = runtime.prepare(build(spec, args))
        if spec.tree == "image_classification":
            self.next_batch = classification_batches(tree, args, runtime.device)
        else:
            self.next_batch = sr_batches(args, runtime)
        self.inference = opts.fused
        if self.inference:  # forward passes only, of the deployed form (BatchNorm folded, cheaper forms)
            self.model = fuse(self.model.eval())
            self.net = torch.compile(self.model) if args.compile else self.model
            self.trainer = None
        else:
            loss = build_loss(args.loss, tree.loss_types, args)
            self.trainer = tree.trainer_class(args, self.model, loss, runtime, env, None, None, {},
                                              schedule=tree.schedule(args))
            self.model.train()
        self.data_s = 0.0

    @property
    def optimizer(self) -> Optional[torch.optim.Optimizer]:
        return self.trainer.optimizer if self.trainer is not None else None

    def step(self) -> None:
        start = time.perf_counter()
        batch = self.next_batch()
        self.data_s += time.perf_counter() - start
        if self.trainer is not None:
            self.trainer.step(batch)
            return
        with torch.no_grad(), self.runtime.autocast():
            self.net(batch[0])


def _in_memory_set(size: int):
    from image_classification.data.in_memory import InMemoryImages

    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (size, 3, 32, 32), dtype=torch.uint8, generator=generator)
    return InMemoryImages(images, torch.randint(0, 10, (size,), generator=generator))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_training(opts: argparse.Namespace, log: Callable[[str], None]) -> dict:
    """Interleaved rounds over the chosen models; returns the ``training`` record of the JSON file."""
    names = [n for n in opts.models.split(",") if n]
    runners = {}
    for name in names:
        runners[name] = Runner(MODELS[name], opts)
        for _ in range(opts.warmup):
            runners[name].step()
        _sync(runners[name].runtime.device)
        log(f"built and warmed up {name}")
    samples = {name: [] for name in names}
    data_share = {name: [] for name in names}
    for r in range(opts.rounds):
        for name, runner in runners.items():
            device = runner.runtime.device
            runner.data_s = 0.0
            _sync(device)
            start = time.perf_counter()
            for _ in range(opts.steps):
                runner.step()
            _sync(device)
            elapsed = time.perf_counter() - start
            samples[name].append(opts.steps * runner.batch / elapsed)
            data_share[name].append(runner.data_s / elapsed)
        log(f"round {r + 1}/{opts.rounds}: " + ", ".join(f"{n} {samples[n][-1]:.1f}" for n in names))
    record = {"models": {}, "ratios": {}}
    for name, runner in runners.items():
        args = runner.args
        record["models"][name] = {
            "options": " ".join(runner.spec.argv), "batch": runner.batch,
            "optimizer": args.optimizer, "lr": args.lr, "loss": args.loss,
            "samples_per_s": statistics.median(samples[name]), "per_round": samples[name],
            "data_share": statistics.median(data_share[name]),
        }
        for base in runner.spec.baselines:
            if base in samples:
                record["ratios"][f"{name}/{base}"] = statistics.median(
                    s / b for s, b in zip(samples[name], samples[base]))
    return record


def run_pipeline(opts: argparse.Namespace, device: torch.device, log: Callable[[str], None]) -> dict:
    """Samples/s of the classification input pipeline alone at batch 128 on a CIFAR-sized set: batches
    made on the device (in the run's memory format) against the per-image DataLoader (workers as
    main.py would start them; its batches still need the copy to the device)."""
    from torch.utils.data import DataLoader, RandomSampler

    from image_classification.data.batches import DeviceBatches
    from image_classification.data.transforms import cifar_batch_transform, cifar_transform

    dataset = _in_memory_set(PIPELINE_SET_SIZE)
    memory_format = torch.channels_last if opts.channels_last else torch.contiguous_format
    device_loader = DeviceBatches(dataset, PIPELINE_BATCH, RandomSampler(dataset),
                                  cifar_batch_transform(True), device, 0, memory_format)
    per_image = type(dataset)(dataset.images, dataset.labels, cifar_transform(True))  # the same images
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = min(opts.workers, cores)
    loader = DataLoader(per_image, batch_size=PIPELINE_BATCH, sampler=RandomSampler(per_image),
                        num_workers=workers, pin_memory=device.type == "cuda")

    def rate(source, batches: int) -> float:
        iterator = iter(source)
        next(iterator)  # start-up (workers, first epoch order) is not the steady rate
        _sync(device)
        start = time.perf_counter()
        n = 0
        for _ in range(batches):
            images, _ = next(iterator)
            if images.device != device:
                images = images.to(device, non_blocking=True)
            n += images.shape[0]
        _sync(device)
        return n / (time.perf_counter() - start)

    batches = min(opts.pipeline_batches, math.ceil(PIPELINE_SET_SIZE / PIPELINE_BATCH) - 1)
    rates = {"device": [], "per_image": []}
    for _ in range(opts.pipeline_rounds):
        rates["device"].append(rate(device_loader, batches))
        rates["per_image"].append(rate(loader, max(1, batches // 10)))
    log("pipeline: " + ", ".join(f"{k} {statistics.median(v):,.0f} samples/s" for k, v in rates.items()))
    return {"batch": PIPELINE_BATCH, "set_size": PIPELINE_SET_SIZE, "per_image_workers": workers,
            "samples_per_s": {k: statistics.median(v) for k, v in rates.items()}, "per_round": rates}


def parse_args(argv: Optional[list]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python scripts/benchmark_train.py",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"comma-separated models (default all: {','.join(MODELS)}); 'none' for the "
                             "input pipeline alone")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--batch", type=int, help="override every model's --batch_size")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's choice)")
    parser.add_argument("--channels_last", "--channels-last", dest="channels_last", action="store_true",
                        help="--channels_last for every model (as main.py)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--steps", type=int, default=3, help="training steps per model and round (default 3)")
    parser.add_argument("--warmup", type=int, default=2, help="steps per model before timing (default 2)")
    parser.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"),
                        help="autocast (as main.py)")
    parser.add_argument("--compile", action="store_true", help="torch.compile every model (as main.py)")
    parser.add_argument("--fused", action="store_true",
                        help="time inference of each fuse()d model (forward, no_grad) instead of training")
    parser.add_argument("--no_pipeline", action="store_true", help="skip the input-pipeline measurement")
    parser.add_argument("--pipeline_batches", type=int, default=100,
                        help="batches per pipeline measurement (per-image path: a tenth)")
    parser.add_argument("--pipeline_rounds", type=int, default=3, help="pipeline rounds (default 3)")
    parser.add_argument("--workers", type=int, default=6,
                        help="per-image DataLoader workers (main.py's --n_threads; capped at the cores)")
    parser.add_argument("--json", metavar="FILE", help="write the figures to FILE as JSON")
    return parser.parse_args(argv)


def check(opts: argparse.Namespace) -> torch.device:
    if opts.models != "none":
        known_names(opts.models, MODELS, "--models", "model", also=" (or 'none')")
    check_device(opts.device)
    for option in ("rounds", "steps", "pipeline_batches", "pipeline_rounds", "workers"):
        if getattr(opts, option) < 1:
            raise OptionError(f"--{option} {getattr(opts, option)}: must be at least 1")
    for option in ("batch", "threads"):
        if getattr(opts, option) is not None and getattr(opts, option) < 1:
            raise OptionError(f"--{option} {getattr(opts, option)}: must be at least 1")
    if opts.warmup < 0:
        raise OptionError(f"--warmup {opts.warmup}: must be at least 0")
    return torch.device(opts.device)


def format_table(record: dict) -> str:
    lines = []
    training = record.get("training")
    if training:
        header = f"{'model':<28} {'batch':>5} {'samples/s':>10} {'data %':>7}  optimiser  options"
        lines += [header, "-" * len(header)]
        for name, m in training["models"].items():
            lines.append(f"{name:<28} {m['batch']:>5} {m['samples_per_s']:>10.4g} "
                         f"{100 * m['data_share']:>7.2f}  {m['optimizer']} {m['lr']:g}  {m['options']}")
        if training["ratios"]:
            lines += ["", "ratios (median of per-round ratios):"]
            lines += [f"  {k:<48} {v:.3f}" for k, v in training["ratios"].items()]
    pipeline = record.get("pipeline")
    if pipeline:
        rates = pipeline["samples_per_s"]
        lines += ["", f"input pipeline at batch {pipeline['batch']}: on the device {rates['device']:,.0f} "
                      f"samples/s, per-image DataLoader ({pipeline['per_image_workers']} workers) "
                      f"{rates['per_image']:,.0f} samples/s"]
    return "\n".join(lines)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu, {torch.get_num_threads()} threads"


def run(opts: argparse.Namespace) -> None:
    device = check(opts)
    if opts.threads:
        torch.set_num_threads(opts.threads)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    layout = "channels_last" if opts.channels_last else "NCHW"
    result = {"device": _device_name(device), "torch": torch.__version__, "amp": opts.amp,
              "memory_format": layout, "compile": opts.compile, "rounds": opts.rounds, "steps": opts.steps,
              "step": "fused inference" if opts.fused else "training"}
    if opts.models != "none":
        result["training"] = run_training(opts, log)
    if not opts.no_pipeline:
        result["pipeline"] = run_pipeline(opts, device, log)
    print(f"device: {result['device']}; {layout}; amp {opts.amp}; compile {opts.compile}; torch "
          f"{torch.__version__}; {opts.rounds} interleaved rounds of {opts.steps} {result['step']} steps per "
          "model; samples/s are medians over rounds; data % = share of step time spent getting the batch")
    print(format_table(result))
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(result, f, indent=2)


def main(argv: Optional[list] = None) -> int:
    opts = parse_args(argv)
    return report_errors(lambda: run(opts))


if __name__ == "__main__":
    sys.exit(main())
