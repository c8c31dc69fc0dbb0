"""Loading pretrained weights: our own plain state_dicts, or the official layouts mapped onto ours.

The official code saved tensors under its own module paths (listed in reference/official_state_dicts/),
and a tensor shared by several layers (a stage basis, the DenseNet basis) under every path that uses it.
Keys are renamed with the model's regular-expression rules, then loaded strictly: every mismatch is a
:class:`CheckpointError` naming the file and the key.
"""

from __future__ import annotations

import re
from typing import Dict, Iterable, Tuple

import torch
from torch import nn

from filter_basis.errors import CheckpointError

KeyRules = Iterable[Tuple[str, str]]


def read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """A flat ``{key: tensor}`` from ``path``, read without running pickled code."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} not found") from None
    except Exception as e:  # torch raises a variety of types for unreadable or unsafe files
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: {first_line}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {path} is not a state_dict (a dict of tensors)")
    return state


def rename_keys(state: Dict[str, torch.Tensor], rules: KeyRules) -> Dict[str, torch.Tensor]:
    """Apply every ``(pattern, replacement)`` rule in order to every key; keys that match none stay."""
    compiled = [(re.compile(p), r) for p, r in rules]
    renamed = {}
    for key, value in state.items():
        for pattern, replacement in compiled:
            key = pattern.sub(replacement, key)
        renamed[key] = value
    return renamed


def _check_shared(state: Dict[str, torch.Tensor], model: nn.Module, path: str) -> None:
    """A tensor the model shares must have equal values under all of its keys in the checkpoint."""
    first_key = {}
    for key, tensor in model.state_dict(keep_vars=True).items():
        owner = first_key.setdefault(id(tensor), key)
        if owner != key and not torch.equal(state[owner], state[key]):
            raise CheckpointError(f"checkpoint {path}: {key!r} and {owner!r} hold the same shared tensor in "
                                  "the model but differ in the checkpoint")


def load_state_dict(model: nn.Module, state: Dict[str, torch.Tensor], path: str) -> None:
    """Strict load with a one-line error for the first missing, unexpected or mis-shaped key."""
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in state:
            raise CheckpointError(f"checkpoint {path} lacks {key!r} (wrong --model or model options?)")
        if state[key].shape != tensor.shape:
            raise CheckpointError(f"checkpoint {path}: {key!r} has shape {tuple(state[key].shape)}, "
                                  f"the model needs {tuple(tensor.shape)} (check the model options)")
    for key in state:
        if key not in expected:
            raise CheckpointError(f"checkpoint {path} has unexpected key {key!r} (wrong --model or model "
                                  "options?)")
    _check_shared(state, model, path)
    model.load_state_dict(state, strict=True)


def load_checkpoint(model: nn.Module, path: str, rules: KeyRules = ()) -> None:
    """Read ``path``, rename official keys with ``rules`` (ours pass unchanged) and load strictly."""
    load_state_dict(model, rename_keys(read_state_dict(path), rules), path)
