"""``--loss_norm``: the approximation regulariser as a term of the training loss
(docs/official-code.md#loss_norm).

The dense filters come from ``--pre_train_optim``: a state_dict of the uncompressed baseline of
``--model`` (ours or the official layout), loaded into that baseline built with the same options.  Each
basis layer is paired with the baseline's dense convolution at the same module path, or with the one
convolution inside the baseline's block at that path (VGG keeps conv -> ReLU where VGG_Basis has a
BasisConv2d).  The official code could not run this option (docs/official-code.md#defects, D2); this is
its evident intent.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from ..approx import approximation_loss
from ..errors import CheckpointError, OptionError
from ..layers.basis_conv import BasisConv2d
from .summary import baseline_options

LOSS_NORM = "loss_norm"  # the term's name in the loss log


class LossNorm(nn.Module):
    """``sum_l MSE(W_dense_l, W_l) + basis_weight * sum_l mean(B_l ** 2)`` of ``model``'s basis layers.

    A loss term that reads the model, not the network's output: the output and target it is called
    with are ignored.  The model is held but not registered, so the loss does not own its parameters.
    """

    def __init__(self, model: nn.Module, reference: dict, basis_weight: float):
        super().__init__()
        self.__dict__["model"] = model
        self.reference = reference
        self.basis_weight = basis_weight

    def forward(self, output=None, target=None) -> torch.Tensor:
        return approximation_loss(self.model, self.reference, weight=1.0, basis_weight=self.basis_weight)


def build_loss_norm(tree, args: argparse.Namespace, model: nn.Module) -> LossNorm:
    """The ``--loss_norm`` term for ``model`` (on its device), with the tree trainer's lambda."""
    reference = dense_reference(tree, args, model)
    device = next(model.parameters()).device
    return LossNorm(model, {path: weight.to(device) for path, weight in reference.items()},
                    tree.trainer_class.loss_norm_lambda)


def dense_reference(tree, args: argparse.Namespace, model: nn.Module) -> dict:
    """``{basis layer path: dense weight}`` from the baseline model loaded with ``--pre_train_optim``.

    Raises:
        OptionError: ``--model`` has no basis layer, or a basis layer has no dense counterpart of the
            shape its basis and projection compose.
        CheckpointError: the file does not fit the baseline model.
    """
    layers = [(path, m) for path, m in model.named_modules() if isinstance(m, BasisConv2d)]
    if not layers:
        raise OptionError(f"--loss_norm: --model {args.model} has no basis layer (BasisConv2d); "
                          f"the regulariser applies to the _Basis models")
    baseline_args = baseline_options(tree, args)
    with torch.random.fork_rng(devices=[]):  # its initial weights are replaced: leave the run's draws alone
        baseline = tree.build_model(baseline_args)
    try:
        tree.load_pretrained(baseline, args.pre_train_optim, baseline_args)
    except CheckpointError as error:
        raise CheckpointError(f"--pre_train_optim (dense baseline --model {baseline_args.model}): "
                              f"{error}") from None
    return {path: _paired_weight(baseline, baseline_args.model, path, layer, args.model)
            for path, layer in layers}


def _paired_weight(baseline: nn.Module, baseline_name: str, path: str, layer: BasisConv2d,
                   model_name: str) -> torch.Tensor:
    """The dense weight at ``path`` (or of the single conv inside the block there), checked against
    the shape of the filters ``layer`` composes."""
    where = f"--loss_norm: basis layer {path!r} of --model {model_name}"
    try:
        with torch.no_grad():
            shape = tuple(layer.composed_weight().shape)
    except ValueError as error:
        raise OptionError(f"{where} cannot be compared with dense filters ({error})") from None
    try:
        module = baseline.get_submodule(path)
    except AttributeError:
        module = None
    convs = [] if module is None else [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    if len(convs) != 1 or tuple(convs[0].weight.shape) != shape:
        found = ", ".join(str(tuple(c.weight.shape)) for c in convs) or "no convolution"
        raise OptionError(f"{where} has no dense counterpart in --model {baseline_name}: it composes "
                          f"filters of shape {shape}, the baseline has {found} at {path!r}")
    return convs[0].weight.detach()
