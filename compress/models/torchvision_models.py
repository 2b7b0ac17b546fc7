"""torchvision's ResNet-18 and MobileNetV2, sized for the data (classes, small inputs, width).

For inputs of 64 px or less the ImageNet stem would shrink a 32x32 image to 1x1 before the
last stage; as is usual for CIFAR, the stem keeps full resolution (stride-1 first conv, no
max-pool). Parameter names stay torchvision's, so its documentation applies.
"""
from __future__ import annotations

import torch.nn as nn
import torchvision
from torchvision.models.resnet import BasicBlock, ResNet

from compress.models import register_model


@register_model("resnet18", "torchvision ResNet-18 (CIFAR stem for inputs <= 64 px)")
def resnet18(num_classes=10, width=1.0, image_size=32, in_channels=3):
    m = _scaled_resnet18(max(1, int(round(64 * width))), num_classes)
    if image_size <= 64:
        m.conv1 = _kaiming(nn.Conv2d(in_channels, m.conv1.out_channels, 3, 1, 1, bias=False))
        m.maxpool = nn.Identity()
    elif in_channels != 3:
        m.conv1 = _kaiming(nn.Conv2d(in_channels, m.conv1.out_channels, 7, 2, 3, bias=False))
    return m


def _kaiming(conv: nn.Conv2d) -> nn.Conv2d:
    """A replaced stem conv gets torchvision's own conv init (kaiming normal, fan_out)."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


def _scaled_resnet18(base: int, num_classes: int) -> nn.Module:
    """torchvision's ResNet-18 with every stage's width multiplied (torchvision has no such knob;
    its `_make_layer` sizes blocks from `inplanes`, so setting the base width is enough)."""
    class ScaledResNet(ResNet):
        def __init__(self):
            nn.Module.__init__(self)
            self._norm_layer = nn.BatchNorm2d
            self.inplanes, self.dilation, self.groups, self.base_width = base, 1, 1, 64
            self.conv1 = nn.Conv2d(3, base, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(base)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            self.layer1 = self._make_layer(BasicBlock, base, 2)
            self.layer2 = self._make_layer(BasicBlock, base * 2, 2, stride=2)
            self.layer3 = self._make_layer(BasicBlock, base * 4, 2, stride=2)
            self.layer4 = self._make_layer(BasicBlock, base * 8, 2, stride=2)
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(base * 8, num_classes)
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    return ScaledResNet()


@register_model("mobilenet_v2", "torchvision MobileNetV2 (stride-1 stem for inputs <= 64 px)")
def mobilenet_v2(num_classes=10, width=1.0, image_size=32, in_channels=3):
    m = torchvision.models.mobilenet_v2(num_classes=num_classes, width_mult=width)
    first = m.features[0][0]
    if image_size <= 64 or in_channels != 3:
        m.features[0][0] = _kaiming(nn.Conv2d(in_channels, first.out_channels, 3, 1 if image_size <= 64 else 2, 1,
                                              bias=False))
    return m
