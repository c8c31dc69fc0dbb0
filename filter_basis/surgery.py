"""Module-tree surgery shared by the model-level tools (conversion, deployment)."""

from torch import nn


def replace_module(model: nn.Module, old: nn.Module, new: nn.Module) -> nn.Module:
    """Swap every reference to ``old`` inside ``model`` for ``new`` and return the model.

    A module may be registered under several parents (or twice under one); all of them are swapped.
    If ``old`` is ``model`` itself, ``new`` is returned.
    """
    if model is old:
        return new
    for parent in model.modules():
        for key, child in list(parent._modules.items()):
            if child is old:
                setattr(parent, key, new)
    return model
