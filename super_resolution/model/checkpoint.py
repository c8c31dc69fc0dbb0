"""Strict loading of pretrained SR weights, in our key layout or the official one (architectures.md 5.9).

The official loader was non-strict (defect D11): a wrong --n_basis or --share_basis silently left
layers at their initial values.  Here every key must map, every parameter must be filled, shapes
must agree, and keys that the model shares (SRResNet's one PReLU, an EDSR_Basis --share_basis basis)
must hold equal values in the file, which also tells a non-shared checkpoint from a shared one.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from filter_basis.errors import CheckpointError

from .official_keys import official_key_map


def read_state_dict(path) -> Mapping[str, torch.Tensor]:
    """A plain ``{key: tensor}`` file, read with ``weights_only=True`` (nothing in it runs)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling refused or file damaged: one line for the user
        raise CheckpointError(f"checkpoint {path} cannot be read safely: {str(error).splitlines()[0]}") \
            from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {path} is not a plain state_dict (a mapping of names to tensors)")
    return state


def load_state(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load ``state`` (our keys, official keys, or a mix) into ``model`` strictly."""
    ours = model.state_dict(keep_vars=True)
    from_official = {official: key for key, official in official_key_map(model).items()}
    mapped = {}
    for key, value in state.items():
        target = key if key in ours else from_official.get(key)
        if target is None:
            raise CheckpointError(f"{source}: unexpected key {key!r} (the options do not build the model "
                                  "this checkpoint was saved from)")
        if tuple(value.shape) != tuple(ours[target].shape):
            raise CheckpointError(f"{source}: {key!r} has shape {tuple(value.shape)}, the model expects "
                                  f"{tuple(ours[target].shape)}")
        mapped[target] = value
    missing = [key for key in ours if key not in mapped]
    if missing:
        raise CheckpointError(f"{source}: missing key {missing[0]!r} ({len(missing)} missing in all)")
    aliases = defaultdict(list)
    for key, tensor in ours.items():
        aliases[id(tensor)].append(key)
    for keys in aliases.values():
        for other in keys[1:]:
            if not torch.equal(mapped[keys[0]], mapped[other]):
                raise CheckpointError(f"{source}: {keys[0]!r} and {other!r} differ, but the model shares one "
                                      "tensor there (check --share_basis / --bn_every)")
    model.load_state_dict(mapped, strict=True)


def load_pretrained(model: nn.Module, path, args=None) -> None:
    """``--pre_train PATH``: our plain state_dict or an official release file, loaded strictly."""
    load_state(model, read_state_dict(path), source=f"checkpoint {path}")
