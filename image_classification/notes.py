"""Notes (one line each, on standard error) on options given on the command line that ``--model`` does
not read, or that make a compressed model larger than its baseline.  Nothing is refused: the run goes on
as the options say (see docs/monitoring.md, "Notes")."""

from __future__ import annotations

import argparse
import copy
from typing import Collection, List

from filter_basis.errors import UserError

from .model.options import is_imagenet


def _unused(args: argparse.Namespace) -> dict:
    """Option name -> why ``--model`` does not read it."""
    model, imagenet = args.model, is_imagenet(args)
    stages = "1..4" if imagenet else "1..3"
    unused = {}
    if model != "VGG_Basis":
        unused["n_basis_str"] = {
            "ResNet_Basis": f"it has one basis per stage, set by --n_basis{stages} (--n_basis_str is "
                            f"VGG_Basis's)",
            "DenseNet_Basis": "it has one basis for the whole network, set by --n_basis (--n_basis_str is "
                              "VGG_Basis's)",
        }.get(model, "only VGG_Basis reads it")
    if model == "ResNet_Basis":
        unused["n_basis"] = f"it has one basis per stage, set by --n_basis{stages}"
        unused["basis_size"] = f"it has one basis per stage, set by --basis_size{stages}"
        if imagenet:
            unused["k_size2"] = "the ImageNet ResNet_Basis has 1x1 projections"
    if model.startswith("VGG"):
        unused["bottleneck"] = "VGG has no bottleneck blocks (DenseNet-BC and the deep ImageNet ResNets do)"
    elif model.startswith("ResNet") and imagenet:
        unused["bottleneck"] = "on ImageNet the depth decides (--depth 50, 101, 152 have bottleneck blocks)"
    return unused


def _weights(args: argparse.Namespace, model: str) -> int:
    """Weight parameters of ``model`` built with ``args`` on the meta device (nothing is allocated)."""
    import torch

    from .model import MODELS

    options = copy.copy(args)
    options.model = model
    with torch.device("meta"):
        network = MODELS.get(model)(options)
    return sum(p.numel() for p in network.parameters() if p.dim() > 1)


def _size_note(args: argparse.Namespace) -> List[str]:
    """ResNet_Basis with k x k projections (the official --k_size2 3) can outweigh the dense ResNet."""
    if args.model != "ResNet_Basis" or is_imagenet(args) or args.k_size2 == 1 or args.basis_init:
        return []
    try:
        baseline = _weights(args, "ResNet")
        percent = 100.0 * _weights(args, args.model) / baseline
        if percent <= 100:
            return []
        with_one = 100.0 * _weights(argparse.Namespace(**{**vars(args), "k_size2": 1}), args.model) / baseline
    except UserError:  # options the model cannot be built with: the run reports them itself
        return []
    return [f"--model ResNet_Basis with --k_size2 {args.k_size2} has {percent:.1f}% of the weights of ResNet "
            f"at --depth {args.depth}: larger than its baseline, not compressed; --k_size2 1 (1x1 "
            f"projections) gives {with_one:.1f}%"]


def option_notes(args: argparse.Namespace, given: Collection[str]) -> List[str]:
    """The notes for these options; ``given``: the options set on the command line."""
    notes = [f"--{option} is ignored by --model {args.model}: {why}"
             for option, why in _unused(args).items() if option in given]
    return notes + _size_note(args)
