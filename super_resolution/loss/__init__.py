"""SR loss types for ``--loss`` strings such as ``1*L1`` or ``1*L1+0.5*MSE``
(docs/official-code.md#sr-training).

Pixel losses are PyTorch means over all elements, in [0, rgb_range] units.  The official option also
named perceptual (VGG22, VGG54) and adversarial (GAN, WGAN, WGAN_GP) terms; the paper used none of
them and they are not implemented: asking for one is an OptionError rather than an unknown name.
"""

from __future__ import annotations

from torch import nn

from filter_basis.errors import OptionError
from filter_basis.registry import Registry

LOSS_TYPES: Registry = Registry("loss type", "--loss")
LOSS_TYPES.register("L1", lambda args: nn.L1Loss())
LOSS_TYPES.register("MSE", lambda args: nn.MSELoss())


def _not_supported(name: str):
    def factory(args):
        raise OptionError(f"--loss type {name} (perceptual/adversarial) is not supported here; use L1 or MSE")
    return factory


for _name in ("VGG22", "VGG54", "GAN", "WGAN", "WGAN_GP"):
    LOSS_TYPES.register(_name, _not_supported(_name))

__all__ = ["LOSS_TYPES"]
