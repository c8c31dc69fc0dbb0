"""``--summary`` (docs/design.md#summary-json) and ``summary.json``: the model's complexity against its
baseline.

Beyond the contract keys: ``train_flops`` (forward + backward FLOPs of one training input at the summary
input size and ``--batch_size``, basis layers in the forms they train in) and ``basis_forms`` (each basis
layer's path and form, ``decomposed`` or ``merged``, under ``--basis_form``).
"""

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
    from ..complexity import summarize, training_flops  # on first use: a bad option exits without loading
    from ..layers import set_basis_form

    baseline_args = baseline_options(tree, args)
    with torch.device("meta"):
        model = tree.build_model(args)
        baseline = model if baseline_args.model == args.model else tree.build_model(baseline_args)
    set_basis_form(model, args.basis_form)
    block = tree.summary_block(args) if tree.summary_block else None
    input_size = tree.summary_input_size(args)
    summary = summarize(model, input_size, baseline, block=block)
    counts = summary.to_dict()
    train_flops, forms = training_flops(model, input_size, args.batch_size)
    info = {"model": args.model, "params": counts.pop("params"), "weight_params": counts.pop("weight_params"),
            "flops": counts.pop("flops"), "baseline": baseline_args.model, **counts,
            "train_flops": train_flops, "basis_forms": forms}
    table = summary.table()
    if forms:
        merged = sum(form == "merged" for form in forms.values())
        table += (f"\ntraining (--basis_form {args.basis_form}, batch {args.batch_size}): "
                  f"{train_flops:,} FLOPs per input for forward + backward; "
                  f"{merged} of {len(forms)} basis layers merged")
    return table, info
