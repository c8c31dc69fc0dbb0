"""The ImageNet ResNets (depth 18, 34, 50, 101, 152): torchvision's architectures layer for layer.

Module names are torchvision's (``conv1``, ``bn1``, ``layer1..4``, ``downsample``, ``fc``), so a
torchvision ``resnet<depth>`` state_dict loads as it is.  As in the CIFAR ResNet (``resnet.py``), the
3x3 convolutions of the residual blocks come from a conv factory ``conv(in, out, stride, stage)``: dense
for ``ResNet``, basis, SIC chain or grouped + 1x1 for the compressed models.  The 7x7 stem, the 1x1
convolutions of the bottlenecks, the projection shortcuts and the classifier stay dense.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

import torch
from torch import nn

ConvFactory = Callable[[int, int, int, int], nn.Module]  # (in, out, stride, stage) -> module
WIDTHS = (64, 128, 256, 512)  # "planes" of the four stages
# depth -> (bottleneck blocks?, blocks per stage), as torchvision's resnet18 ... resnet152
LAYOUTS = {18: (False, (2, 2, 2, 2)), 34: (False, (3, 4, 6, 3)), 50: (True, (3, 4, 6, 3)),
           101: (True, (3, 4, 23, 3)), 152: (True, (3, 8, 36, 3))}


def _shortcut(in_channels: int, out_channels: int, stride: int) -> Optional[nn.Module]:
    """Projection shortcut (1x1 conv with the block's stride, then BN) where the shape changes."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                         nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    """3x3 (stride) -> BN -> ReLU -> 3x3 -> BN, plus the shortcut, then ReLU (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int, stage: int, conv: ConvFactory):
        super().__init__()
        self.conv1 = conv(in_channels, planes, stride, stage)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv(planes, planes, 1, stage)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _shortcut(in_channels, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    """1x1 -> BN -> ReLU -> 3x3 (stride) -> BN -> ReLU -> 1x1 (4x wider) -> BN, plus the shortcut, then
    ReLU (ResNet-50/101/152; the stride sits on the 3x3 convolution, as in torchvision)."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int, stage: int, conv: ConvFactory):
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv(planes, planes, stride, stage)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class ImageNetResNet(nn.Module):
    """7x7/2 stem conv -> BN -> ReLU -> 3x3/2 max-pool, four stages (the first block of stages 2-4 has
    stride 2), global average pooling, linear classifier.

    ``shared`` modules (e.g. the stage bases) are registered at the top level under their names.
    """

    def __init__(self, depth: int, num_classes: int, conv: ConvFactory,
                 shared: Optional[Dict[str, nn.Module]] = None):
        super().__init__()
        bottleneck, blocks = LAYOUTS[depth]
        block = Bottleneck if bottleneck else BasicBlock
        for name, module in (shared or {}).items():
            self.add_module(name, module)
        self.conv1 = nn.Conv2d(3, WIDTHS[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(WIDTHS[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        width = WIDTHS[0]
        for stage, (planes, n) in enumerate(zip(WIDTHS, blocks), start=1):
            layers = []
            for b in range(n):
                layers.append(block(width, planes, 2 if stage > 1 and b == 0 else 1, stage, conv))
                width = planes * block.expansion
            self.add_module(f"layer{stage}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def init_torchvision(model: nn.Module) -> None:
    """torchvision's ResNet initialisation: conv weights Kaiming-normal (fan-out, ReLU gain), BN 1/0;
    the classifier and every basis tensor keep their own default initialisation."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
