"""Activation and normalisation factories for the ``mid``/``post`` slots of the compressed layers.

The official models put BatchNorm and an activation between a layer's two convolutions and after them.
Some activations are single shared parameters (SRResNet's one PReLU used everywhere), so an activation
is given either as a class (a new module per use) or as a module instance (shared as it is).
"""

from __future__ import annotations

from typing import Callable, Optional, Union

from torch import nn

Activation = Optional[Union[Callable[[], nn.Module], nn.Module]]
ModuleFactory = Callable[[int], nn.Module]


def check_activation(act: Activation) -> None:
    """Reject an ``act`` that is neither ``None``, a module nor a factory, before any layer uses it."""
    if not (act is None or isinstance(act, nn.Module) or callable(act)):
        raise ValueError(f"activation must be an nn.Module, a zero-argument factory or None, got {act!r}")


def make_activation(act: Activation) -> Optional[nn.Module]:
    """A module for ``act``: the instance itself (shared), a new one from a factory, or ``None``."""
    check_activation(act)
    return act if act is None or isinstance(act, nn.Module) else act()


def build_slot(factory: Optional[ModuleFactory], num_channels: int, label: str,
               slot: str) -> Optional[nn.Module]:
    """The module a ``mid``/``post`` factory makes for ``num_channels`` (``None`` stays ``None``).

    A module instance is refused: called with a channel count it would fail far from the mistake.
    """
    if factory is None:
        return None
    if isinstance(factory, nn.Module) or not callable(factory):
        raise ValueError(f"{label}: {slot} must be a factory f(num_channels) -> nn.Module (e.g. norm_act()), "
                         f"got {factory!r}")
    return factory(num_channels)


def norm_act(act: Activation = nn.ReLU,
             norm: Optional[Callable[[int], nn.Module]] = nn.BatchNorm2d) -> ModuleFactory:
    """A factory ``f(num_channels) -> nn.Sequential(norm(num_channels), act)`` for ``mid``/``post``.

    Either part may be ``None`` (not both).  An activation instance is shared by every module the
    factory makes, which is how one PReLU serves a whole SRResNet.
    """
    if act is None and norm is None:
        raise ValueError("norm_act: norm and act are both None; pass None as mid/post instead")
    check_activation(act)

    def factory(num_channels: int) -> nn.Module:
        parts = [] if norm is None else [norm(num_channels)]
        activation = make_activation(act)
        return nn.Sequential(*parts, *([] if activation is None else [activation]))

    return factory
