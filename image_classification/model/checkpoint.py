"""Loading pretrained weights: our own plain state_dicts, or the official layouts mapped onto ours.

The official code saved tensors under its own module paths (listed in
tests/data/official/official_state_dicts/), and a tensor shared by several layers (a stage basis, the
DenseNet basis) under every path that uses it.
Keys are renamed with the model's regular-expression rules, then loaded strictly by the engine
(``model.load_pretrained``): every mismatch is a one-line :class:`~filter_basis.errors.CheckpointError`
naming the file and the key.
"""

from __future__ import annotations

import re
from typing import Callable, Dict, Iterable, Tuple

import torch

KeyRules = Iterable[Tuple[str, str]]

# The official grouped conv + 1x1 pair without norm/activation inside (ResNet_Group, DenseNet_Group): one
# ``conv`` sequence of the two, where our GroupConv2d names them ``grouped`` and ``projection``.
GROUP_PAIR_KEYS = [(r"\.conv\.0\.", ".grouped."), (r"\.conv\.1\.", ".projection.")]


def key_renamer(rules: KeyRules) -> Callable[[str], str]:
    """Apply every ``(pattern, replacement)`` rule in order to a key; keys that match none stay."""
    compiled = [(re.compile(p), r) for p, r in rules]

    def rename(key: str) -> str:
        for pattern, replacement in compiled:
            key = pattern.sub(replacement, key)
        return key

    return rename


def rename_keys(state: Dict[str, torch.Tensor], rules: KeyRules) -> Dict[str, torch.Tensor]:
    """``state`` with every key renamed by ``rules``."""
    rename = key_renamer(rules)
    return {rename(key): value for key, value in state.items()}
