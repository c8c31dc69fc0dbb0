"""Named option presets (``--template``) of the SR tree, as in the official template.py (substring match).

None is used by the paper's commands; ``MDSR`` and ``DDBPN`` name networks this project does not build,
so they end in an unknown-model error, as any unknown ``--model`` does.
"""

from __future__ import annotations

import argparse
from typing import Collection

from filter_basis.engine.templates import TemplateTable

TEMPLATES = TemplateTable()


@TEMPLATES.rule("jpeg")
def _jpeg(args: argparse.Namespace, template: str) -> None:
    args.data_train = args.data_test = "DIV2K_jpeg"
    args.epochs = 200
    args.lr_decay = 100


@TEMPLATES.rule("MDSR")
def _mdsr(args: argparse.Namespace, template: str) -> None:
    args.model = "MDSR"
    args.patch_size = 48
    args.epochs = 650


@TEMPLATES.rule("DDBPN")
def _ddbpn(args: argparse.Namespace, template: str) -> None:
    args.model = "DDBPN"
    args.patch_size = 128
    args.scale = "4"
    args.data_test = "Set5"
    args.batch_size = 20
    args.epochs = 1000
    args.lr_decay = 500
    args.gamma = 0.1
    args.weight_decay = 1e-4
    args.loss = "1*MSE"


@TEMPLATES.rule("GAN")
def _gan(args: argparse.Namespace, template: str) -> None:
    args.epochs = 200
    args.lr = 5e-5
    args.lr_decay = 150


def apply(args: argparse.Namespace, given: Collection[str] = ()) -> None:
    """The matching templates, noting the ``given`` (command-line) options they override."""
    TEMPLATES.apply(args, given)
