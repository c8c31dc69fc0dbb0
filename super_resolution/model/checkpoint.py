"""Strict loading of pretrained SR weights, in our key layout or the official one
(docs/official-code.md#checkpoint-loading).

The official loader was non-strict (docs/official-code.md#defects, D11): a wrong --n_basis or
--share_basis silently left layers at their initial values.  Here every key must map, every parameter
must be filled, shapes must agree, and keys that the model shares (SRResNet's one PReLU, an EDSR_Basis
--share_basis basis) must hold equal values in the file, which also tells a non-shared checkpoint from a
shared one.
"""

from __future__ import annotations

from typing import List, Mapping, Tuple

import torch
from torch import nn

from filter_basis.engine.checkpoint import load_state_dict_strict, read_state_dict

from .official_keys import official_key_map


def load_state(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load ``state`` (our keys, official keys, or a mix) into ``model`` strictly."""
    ours = model.state_dict()
    from_official = {official: key for key, official in official_key_map(model).items()}
    load_state_dict_strict(model, state, source,
                           lambda key: key if key in ours else from_official.get(key))


def load_pretrained(model: nn.Module, path, args=None) -> None:
    """``--pre_train PATH``: our plain state_dict or an official release file, loaded strictly."""
    load_state(model, read_state_dict(path), source=f"checkpoint {path}")


def upsampler_prefixes(model: nn.Module) -> Tuple[str, ...]:
    """Module paths (``"tail.0."``) of the model's upsamplers, the only tensors whose shapes depend on
    --scale."""
    from .common import Upsampler

    return tuple(f"{name}." for name, module in model.named_modules() if isinstance(module, Upsampler))


def load_except_upsampler(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> List[str]:
    """Start a model of one scale from a model of another (EDSR's x3/x4 from x2): every tensor but the
    upsampler is loaded, strictly; the upsampler keeps its initial values.  Returns the keys left alone.

    This is the one deliberate partial load; everything else goes through the strict :func:`load_state`.
    """
    prefixes = upsampler_prefixes(model)
    own = model.state_dict()
    kept = [key for key in own if key.startswith(prefixes)]
    mapped = {key: value for key, value in state.items() if not key.startswith(prefixes)}
    mapped.update({key: own[key] for key in kept})
    load_state(model, mapped, source=f"{source} (all but the upsampler)")
    return kept
