"""The state_dict key each of our parameters had in the official code
(tests/data/official/official_state_dicts/).

The model files mirror the official module paths (``head.0``, ``body.<i>.body.<j>``, ``tail.0.<k>``,
``sub_mean``), so only the compressed layers are named differently:

- a linear :class:`BasisConv2d` (EDSR_Basis): ``basis.weight`` -> ``basis_weight``,
  ``projection.*`` -> ``proj_*``;
- a :class:`BasisConv2d` with norm/activation inside (SRResNet_Basis): one ``conv`` sequence of
  basis conv (``conv.0.basis_weight``/``basis_bias``), the ``mid`` modules, the projection and the
  ``post`` modules, numbered in that order;
- a :class:`FactorConv2d`: ``layers.<s>`` -> ``body.<s>``.
"""

from __future__ import annotations

from typing import Dict, List

from torch import nn

from filter_basis.layers import BasisConv2d, FactorConv2d

_FLAT_BASIS_KEYS = {"basis.weight": "basis_weight", "basis_bias": "basis_bias",
                    "projection.weight": "proj_weight", "projection.bias": "proj_bias"}


def _basis_conv_key(layer: BasisConv2d, rest: List[str]) -> List[str]:
    """The official path, inside the layer, of the layer's key ``rest``."""
    if layer.mid is None and layer.post is None:  # EDSR_Basis: flat names
        return [_FLAT_BASIS_KEYS[".".join(rest)]]
    # SRResNet_Basis: one "conv" sequence of basis conv, mid modules, projection, post modules
    n_mid = len(layer.mid) if layer.mid is not None else 0
    head, tail = rest[0], rest[1:]
    if head == "basis":
        return ["conv", "0", "basis_weight"]
    if head == "basis_bias":
        return ["conv", "0", "basis_bias"]
    if head == "projection":
        return ["conv", str(1 + n_mid), *tail]
    offset = 1 if head == "mid" else 2 + n_mid
    return ["conv", str(offset + int(tail[0])), *tail[1:]]


def official_key(model: nn.Module, key: str) -> str:
    """The official name of one of ``model.state_dict()``'s keys."""
    parts = key.split(".")
    module, out = model, []
    for i, name in enumerate(parts):
        if isinstance(module, BasisConv2d):
            return ".".join(out + _basis_conv_key(module, parts[i:]))
        out.append("body" if isinstance(module, FactorConv2d) and name == "layers" else name)
        module = getattr(module, name, None)
    return ".".join(out)


def official_key_map(model: nn.Module) -> Dict[str, str]:
    """``{our key: official key}`` over the full state_dict (shared tensors under all their keys)."""
    return {key: official_key(model, key) for key in model.state_dict()}
