"""The approximation regulariser of the official ``--loss_norm`` option (docs/official-code.md#loss_norm).

While a basis model is trained from a pretrained dense one, its layers are pulled towards the dense
filters they replace: for every basis layer ``l`` the filters its basis and projection compose,
``W_l[o, g*b + c] = sum_j P_l[o, g*n + j] B_l[j, c]`` (split-major), are compared with the pretrained
filters, and the basis is kept small so that basis and projection cannot trade scale freely::

    weight * sum_l MSE(W_pretrained_l, W_l) + basis_weight * sum_l mean(B_l ** 2)

Normalisation or activations between basis and projection (``mid``/``post``) are ignored, as in the
official formula.  A basis shared by several layers enters the basis term once per layer, as the sum
over layers states.
"""

from __future__ import annotations

from typing import Mapping, Union

import torch
import torch.nn.functional as F
from torch import nn

from .layers.basis_conv import BasisConv2d

Reference = Union[nn.Module, Mapping[str, torch.Tensor]]


def _reference_weight(reference: Reference, path: str) -> torch.Tensor:
    """The dense weight at ``path``: a conv of a reference model, or ``path``/``path.weight`` of a dict."""
    if isinstance(reference, nn.Module):
        try:
            module = reference.get_submodule(path)
        except AttributeError:
            module = None
        if not isinstance(module, nn.Conv2d):
            found = "nothing" if module is None else type(module).__name__
            raise ValueError(f"approximation_loss: the reference model has {found} at {path!r}, "
                             f"where the model has a BasisConv2d; expected an nn.Conv2d")
        return module.weight
    for key in (path, f"{path}.weight"):
        if key in reference:
            return reference[key]
    raise ValueError(f"approximation_loss: the reference has no dense weight for basis layer {path!r} "
                     f"(looked for keys {path!r} and {path + '.weight'!r})")


def approximation_loss(model: nn.Module, reference: Reference, weight: float = 1.0,
                       basis_weight: float = 0.05) -> torch.Tensor:
    """``weight * sum MSE(dense, composed filters) + basis_weight * sum mean(basis ** 2)`` over the
    :class:`BasisConv2d` layers of ``model``; differentiable with respect to bases and projections.

    Args:
        reference: a model with a dense ``nn.Conv2d`` at the path of every basis layer, or a mapping
            from those paths (or ``path + ".weight"``, as in a state_dict) to dense weight tensors.
        weight: weight of the filter-difference term (1 in both official trees).
        basis_weight: the official lambda (0.05 for classification, 1.0 for super-resolution).

    Raises:
        ValueError: no basis layer in ``model``, a layer without reference, shapes that differ, or a
            layer whose projection is not ``1 x 1`` (its filters are not ``k x k``).
    """
    layers = [(path, m) for path, m in model.named_modules() if isinstance(m, BasisConv2d)]
    if not layers:
        raise ValueError(f"approximation_loss: {type(model).__name__} has no BasisConv2d layer")
    difference, basis_norm = 0.0, 0.0
    for path, layer in layers:
        try:
            composed = layer.composed_weight()
        except ValueError as error:
            raise ValueError(f"approximation_loss: layer {path!r}: {error}") from error
        target = _reference_weight(reference, path).detach()
        if target.shape != composed.shape:
            raise ValueError(f"approximation_loss: layer {path!r} composes filters of shape "
                             f"{tuple(composed.shape)}, the reference has {tuple(target.shape)}")
        difference = difference + F.mse_loss(composed, target.to(composed))
        basis_norm = basis_norm + layer.basis_weight().pow(2).mean()
    return weight * difference + basis_weight * basis_norm
