"""Named option presets (``--template``) of the classification tree, as in the official template.py.

A template applies every rule whose name it contains (``ResNet50`` applies ``ResNet`` and ``ResNet50``).
After the templates, ``--linear L > 1`` scales the batch and learning rate by L and adds the warm-up.
"""

from __future__ import annotations

import argparse
from typing import Collection

from filter_basis.engine.templates import TemplateTable

TEMPLATES = TemplateTable()


@TEMPLATES.rule("CIFAR100")
def _cifar100(args: argparse.Namespace, template: str) -> None:
    args.data_train = args.data_test = "CIFAR100"


@TEMPLATES.rule("ImageNet")
def _imagenet(args: argparse.Namespace, template: str) -> None:
    args.data_train = args.data_test = "ImageNet"


@TEMPLATES.rule("VGG")
def _vgg(args: argparse.Namespace, template: str) -> None:
    args.weight_decay = 5e-4
    args.print_every = 100


@TEMPLATES.rule("AlexNet")
def _alexnet(args: argparse.Namespace, template: str) -> None:
    args.weight_decay = 1e-4
    args.batch_size = 64
    args.print_every = 50


@TEMPLATES.rule("ResNet")
def _resnet(args: argparse.Namespace, template: str) -> None:
    args.weight_decay = 1e-4
    args.print_every = 50


@TEMPLATES.rule("ResNet18")
def _resnet18(args: argparse.Namespace, template: str) -> None:
    args.depth = 18


@TEMPLATES.rule("ResNet50")
def _resnet50(args: argparse.Namespace, template: str) -> None:
    args.depth = 50
    args.bottleneck = True


@TEMPLATES.rule("ResNet101")
def _resnet101(args: argparse.Namespace, template: str) -> None:
    args.depth = 101
    args.bottleneck = True


@TEMPLATES.rule("DenseNet")
def _densenet(args: argparse.Namespace, template: str) -> None:
    bc = "BC" in template
    args.bottleneck = bc
    args.reduction = 0.5 if bc else 1
    args.weight_decay = 1e-4
    args.print_every = 50
    args.nesterov = True


@TEMPLATES.rule("efficient")
def _efficient(args: argparse.Namespace, template: str) -> None:
    args.lr /= 100
    args.epochs = 300


def apply(args: argparse.Namespace, given: Collection[str] = ()) -> None:
    """The matching templates (noting the ``given`` options they override), then the --linear scaling
    rule (for any template, as officially)."""
    TEMPLATES.apply(args, given)
    if args.linear > 1:
        args.batch_size *= args.linear
        args.lr *= args.linear
        if "warm" not in args.decay:
            args.decay = "warm" + args.decay
        args.print_every = max(1, args.print_every // args.linear)
