"""The two weight initialisations of the official classification models
(docs/official-code.md#initialisation).

Only ``nn.Conv2d``, ``nn.BatchNorm2d`` and ``nn.Linear`` modules are touched: shared ``Basis`` tensors and
basis-convolution biases keep the layer's own initialisation (Kaiming-uniform, zeros).
"""

from __future__ import annotations

import math

from torch import nn


def init_vgg(model: nn.Module) -> None:
    """Conv weights N(0, 2 / (k*k*C_out)) and zero biases; BN 1/0; Linear N(0, 0.01^2) and zero bias."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            nn.init.normal_(m.weight, std=math.sqrt(2 / (kh * kw * m.out_channels)))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)


def init_kaiming(model: nn.Module) -> None:
    """Conv weights N(0, 2 / fan_in), conv biases untouched; BN 1/0; Linear N(0, 1 / in) and zero bias."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            nn.init.normal_(m.weight, std=math.sqrt(2 / (kh * kw * m.weight.shape[1])))
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=math.sqrt(1 / m.in_features))
            nn.init.zeros_(m.bias)
