"""``--summary`` (DESIGN.md contract 2) and ``summary.json``: the model's complexity against its baseline."""

from __future__ import annotations

import argparse
import copy

import torch


def baseline_options(tree, args: argparse.Namespace) -> argparse.Namespace:
    """The options of the uncompressed model ``--model`` is compared with: the same, but its --model."""
    baseline_args = copy.copy(args)
    baseline_args.model = tree.baseline_name(args)
    return baseline_args


def describe(tree, args: argparse.Namespace) -> tuple:
    """``(text table, contract-2 dict)`` for the model the options describe; built on the meta device.

    Nothing is read (no dataset, no checkpoint) and nothing is written.
    """
    from ..complexity import summarize  # on first use: a bad option exits without loading the FLOP counter

    baseline_args = baseline_options(tree, args)
    with torch.device("meta"):
        model = tree.build_model(args)
        baseline = model if baseline_args.model == args.model else tree.build_model(baseline_args)
    block = tree.summary_block(args) if tree.summary_block else None
    summary = summarize(model, tree.summary_input_size(args), baseline, block=block)
    counts = summary.to_dict()
    info = {"model": args.model, "params": counts.pop("params"), "weight_params": counts.pop("weight_params"),
            "flops": counts.pop("flops"), "baseline": baseline_args.model, **counts}
    return summary.table(), info
