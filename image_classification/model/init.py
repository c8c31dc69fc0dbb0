"""The two weight initialisations of the official classification models
(docs/official-code.md#initialisation).

Only ``nn.Conv2d``, ``nn.BatchNorm2d`` and ``nn.Linear`` modules are touched: shared ``Basis`` tensors and
basis-convolution biases keep the layer's own initialisation (Kaiming-uniform, zeros).
"""

from __future__ import annotations

import math

from torch import nn

from filter_basis import init_scale


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


def official_init(args) -> bool:
    """Whether ``--init official`` asks for the official code's initialisation of every layer; under
    ``scaled`` a compressed model is initialised as its dense baseline is (docs/initialisation.md)."""
    return init_scale.scheme(args) == "official"


def dense_variance(args) -> init_scale.VarianceRule:
    """The weight variance the dense baseline of ``--model`` gives a convolution: VGG (init_vgg) and the
    ImageNet ResNets (torchvision) fan-out Kaiming, DenseNet (init_kaiming) fan-in Kaiming, the CIFAR ResNet
    PyTorch's default."""
    from .options import is_imagenet

    family = args.model.split("_")[0]
    if family == "DenseNet":
        return init_scale.kaiming_fan_in
    if family == "VGG" or is_imagenet(args):
        return init_scale.kaiming_fan_out
    return init_scale.pytorch_default
