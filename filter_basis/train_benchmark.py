"""Samples per second of complete training steps of the paper's models: ``python -m filter_basis.benchmark
--train``.

A step is what the training loop does: take a batch (classification: the device batch pipeline of the
in-memory sets, random crop, flip and normalisation included; SR: a random choice of prepared LR/HR patch
pairs already on the device), forward under ``--amp``, loss, backward, optimiser step (SGD with momentum
and weight decay for classification, Adam for SR, as the official scripts).  Models are built by their
tree from the official command-line options, so they are exactly what ``main.py`` trains.  Rounds
interleave the models (every round runs ``--steps`` steps of each) so that drift in machine load hits all
alike; figures are medians over rounds, ratios medians of per-round ratios.  The input pipeline is also
measured alone (samples/s at batch 128): batches made on the device against the per-image DataLoader.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .deploy import fuse
from .engine.device import AMP_DTYPES
from .errors import OptionError


@dataclass(frozen=True)
class TrainModel:
    """One model of the benchmark: its tree, its command-line options, its batch and input size."""

    name: str
    tree: str  # "classification" or "sr"
    argv: tuple
    batch: int
    baselines: tuple = ()  # the models its samples/s is compared with (the dense one first)


_SR = ("--scale", "4")
MODELS = {m.name: m for m in (
    TrainModel("resnet56", "classification", ("--model", "ResNet", "--depth", "56"), 64),
    TrainModel("resnet56-basis", "classification",
               ("--model", "ResNet_Basis", "--depth", "56", "--k_size2", "1"), 64,
               ("resnet56", "resnet56-basis-decomposed")),
    TrainModel("resnet56-basis-decomposed", "classification",
               ("--model", "ResNet_Basis", "--depth", "56", "--k_size2", "1", "--basis_form", "decomposed"),
               64, ("resnet56",)),
    TrainModel("vgg16", "classification", ("--model", "VGG", "--vgg_type", "16"), 64),
    TrainModel("vgg16-basis", "classification",
               ("--model", "VGG_Basis", "--vgg_type", "16", "--basis_size", "128"), 64, ("vgg16",)),
    TrainModel("densenet40", "classification", ("--model", "DenseNet", "--depth", "40"), 64),
    TrainModel("densenet40-basis", "classification",
               ("--model", "DenseNet_Basis", "--depth", "40", "--transition_group", "6", "--n_basis", "36"),
               64, ("densenet40",)),
    TrainModel("srresnet", "sr", ("--model", "SRResNet", *_SR, "--n_resblocks", "16", "--n_feats", "64",
                                  "--patch_size", "96"), 16),
    TrainModel("srresnet-basis-32-32", "sr",
               ("--model", "SRResNet_Basis", *_SR, "--n_resblocks", "16", "--n_feats", "64",
                "--patch_size", "96", "--basis_size", "32", "--n_basis", "32", "--bn_every"), 16,
               ("srresnet",)),
    TrainModel("edsr8-128", "sr", ("--model", "EDSR", *_SR, "--n_resblocks", "8", "--n_feats", "128",
                                   "--res_scale", "1", "--patch_size", "192"), 16),
    TrainModel("edsr8-128-basis-128-27", "sr",
               ("--model", "EDSR_Basis", *_SR, "--n_resblocks", "8", "--n_feats", "128", "--res_scale", "1",
                "--patch_size", "192", "--basis_size", "128", "--n_basis", "27"), 16, ("edsr8-128",)),
)}
PIPELINE_BATCH = 128
PIPELINE_SET_SIZE = 50_000  # as CIFAR's training set


def parse_options(spec: TrainModel, batch: Optional[int]) -> argparse.Namespace:
    """The tree's options for ``spec`` (validated as main.py validates them)."""
    if spec.tree == "classification":
        from image_classification import option
        extra = ("--data_train", "Synthetic", "--data_test", "Synthetic")
    else:
        from super_resolution import option
        extra = ()
    return option.parse_args([*spec.argv, *extra, "--batch_size", str(batch or spec.batch)])


def build(spec: TrainModel, args: argparse.Namespace) -> nn.Module:
    from .layers import set_basis_form

    if spec.tree == "classification":
        from image_classification.model import build_model
    else:
        from super_resolution.model import build_model
    torch.manual_seed(0)
    model = build_model(args)
    set_basis_form(model, args.basis_form)
    return model


def _in_memory_set(size: int):
    from image_classification.data.in_memory import InMemoryImages

    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (size, 3, 32, 32), dtype=torch.uint8, generator=generator)
    return InMemoryImages(images, torch.randint(0, 10, (size,), generator=generator))


def classification_batches(batch: int, device: torch.device, memory_format) -> Callable[[], tuple]:
    """Endless training batches from the device pipeline (random sampler, crop, flip, normalise)."""
    from torch.utils.data import RandomSampler

    from image_classification.data.batches import DeviceBatches
    from image_classification.data.transforms import cifar_batch_transform

    dataset = _in_memory_set(max(4 * batch, 1024))
    loader = DeviceBatches(dataset, batch, RandomSampler(dataset), cifar_batch_transform(True), device, 0,
                           memory_format)
    state = {"it": iter(loader)}

    def next_batch():
        try:
            return next(state["it"])
        except StopIteration:
            state["it"] = iter(loader)
            return next(state["it"])
    return next_batch


def sr_batches(args: argparse.Namespace, batch: int, device: torch.device,
               memory_format) -> Callable[[], tuple]:
    """Batches drawn at random from 8 batches of prepared LR/HR patch pairs on the device."""
    scale, hr = args.scale[0], args.patch_size
    generator = torch.Generator().manual_seed(0)
    pool = 8 * batch
    hr_patches = (torch.rand(pool, args.n_colors, hr, hr, generator=generator) * args.rgb_range).to(device)
    lr_patches = F.avg_pool2d(hr_patches, scale).contiguous(memory_format=memory_format)
    hr_patches = hr_patches.contiguous(memory_format=memory_format)
    draw = torch.Generator(device=device).manual_seed(0)

    def next_batch():
        index = torch.randint(0, pool, (batch,), generator=draw, device=device)
        return lr_patches.index_select(0, index), hr_patches.index_select(0, index)
    return next_batch


class Runner:
    """One model's training step with its data source, optimiser, loss, autocast and scaler."""

    def __init__(self, spec: TrainModel, opts: argparse.Namespace, device: torch.device):
        args = parse_options(spec, opts.batch)
        self.spec, self.batch, self.device = spec, args.batch_size, device
        memory_format = torch.channels_last if opts.channels_last else torch.contiguous_format
        self.model = build(spec, args).to(device, memory_format=memory_format)
        self.inference = opts.fused
        if self.inference:  # forward passes only, of the deployed form (BatchNorm folded, cheaper forms)
            self.model = fuse(self.model.eval())
        else:
            self.model.train()
        self.net = torch.compile(self.model) if opts.compile else self.model
        if spec.tree == "classification":
            self.next_batch = classification_batches(self.batch, device, memory_format)
            self.loss = nn.CrossEntropyLoss()
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9,
                                             weight_decay=1e-4)
        else:
            self.next_batch = sr_batches(args, self.batch, device, memory_format)
            self.loss = nn.L1Loss()
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-5)
        amp = AMP_DTYPES.get(opts.amp)
        self.autocast = (lambda: torch.autocast(device.type, dtype=amp)) if amp is not None else None
        fp16_cuda = amp == torch.float16 and device.type == "cuda"
        self.scaler = torch.amp.GradScaler(device.type, enabled=fp16_cuda)
        self.data_s = 0.0

    def step(self) -> None:
        start = time.perf_counter()
        inputs, targets = self.next_batch()
        self.data_s += time.perf_counter() - start
        if self.inference:
            autocast = self.autocast() if self.autocast is not None else contextlib.nullcontext()
            with torch.no_grad(), autocast:
                self.net(inputs)
            return
        if self.autocast is not None:
            with self.autocast():
                loss = self.loss(self.net(inputs), targets)
        else:
            loss = self.loss(self.net(inputs), targets)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_training(opts: argparse.Namespace, device: torch.device, log: Callable[[str], None]) -> dict:
    """Interleaved rounds over the chosen models; returns the ``training`` record of the JSON file."""
    names = [n for n in opts.models.split(",") if n]
    runners = {}
    for name in names:
        runners[name] = Runner(MODELS[name], opts, device)
        for _ in range(opts.warmup):
            runners[name].step()
        _sync(device)
        log(f"built and warmed up {name}")
    samples = {name: [] for name in names}
    data_share = {name: [] for name in names}
    for r in range(opts.rounds):
        for name, runner in runners.items():
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
        record["models"][name] = {
            "options": " ".join(runner.spec.argv), "batch": runner.batch,
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


def add_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("--train: whole training steps")
    group.add_argument("--train", action="store_true",
                       help="benchmark complete training steps instead of layers")
    group.add_argument("--models", default=",".join(MODELS),
                       help=f"comma-separated models (default all: {','.join(MODELS)}); 'none' for the "
                            "input pipeline alone")
    group.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    group.add_argument("--steps", type=int, default=3, help="training steps per model and round (default 3)")
    group.add_argument("--warmup", type=int, default=2, help="steps per model before timing (default 2)")
    group.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"),
                       help="autocast (as main.py)")
    group.add_argument("--compile", action="store_true", help="torch.compile every model (as main.py)")
    group.add_argument("--fused", action="store_true",
                       help="time inference of each fuse()d model (forward, no_grad) instead of training")
    group.add_argument("--no_pipeline", action="store_true", help="skip the input-pipeline measurement")
    group.add_argument("--pipeline_batches", type=int, default=100,
                       help="batches per pipeline measurement (per-image path: a tenth)")
    group.add_argument("--pipeline_rounds", type=int, default=3, help="pipeline rounds (default 3)")
    group.add_argument("--workers", type=int, default=6,
                       help="per-image DataLoader workers (main.py's --n_threads; capped at the cores)")


def check(opts: argparse.Namespace) -> None:
    if opts.models != "none":
        unknown = [n for n in opts.models.split(",") if n not in MODELS]
        if unknown or not opts.models:
            raise OptionError(f"--models: unknown model {','.join(unknown) or '(none)'!r}; "
                              f"known: {', '.join(MODELS)} (or 'none')")
    for option in ("rounds", "steps", "pipeline_batches", "pipeline_rounds", "workers"):
        if getattr(opts, option) < 1:
            raise OptionError(f"--{option} {getattr(opts, option)}: must be at least 1")
    if opts.warmup < 0:
        raise OptionError(f"--warmup {opts.warmup}: must be at least 0")


def format_table(record: dict) -> str:
    lines = []
    training = record.get("training")
    if training:
        header = f"{'model':<28} {'batch':>5} {'samples/s':>10} {'data %':>7}  options"
        lines += [header, "-" * len(header)]
        for name, m in training["models"].items():
            lines.append(f"{name:<28} {m['batch']:>5} {m['samples_per_s']:>10.4g} "
                         f"{100 * m['data_share']:>7.2f}  {m['options']}")
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
