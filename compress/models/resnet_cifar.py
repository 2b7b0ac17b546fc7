"""CIFAR ResNet-20/56 (He et al. 2016, 3 stages of 16/32/64 channels).

Stage transitions use a 1x1 conv + BN shortcut ("option B") rather than zero-padding, so the
residual adds are plain tensor adds that Torch-Pruning can trace and couple: every conv whose
output reaches the same add must keep the same channels.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from compress.models import register_model, scaled


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int = 10, width: float = 1.0, in_channels: int = 3):
        super().__init__()
        assert (depth - 2) % 6 == 0, "depth must be 6n+2"
        n = (depth - 2) // 6
        widths = [scaled(c, width) for c in (16, 32, 64)]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        c = widths[0]
        stages = []
        for i, w in enumerate(widths):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(c, w, 2 if (i > 0 and j == 0) else 1))
                c = w
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.adaptive_avg_pool2d(x, 1)
        return self.fc(torch.flatten(x, 1))


@register_model("resnet20", "CIFAR ResNet-20 (3x3 basic blocks, 16/32/64 channels)")
def resnet20(num_classes=10, width=1.0, image_size=32, in_channels=3):
    return CifarResNet(20, num_classes, width, in_channels)


@register_model("resnet56", "CIFAR ResNet-56 (3x9 basic blocks, 16/32/64 channels)")
def resnet56(num_classes=10, width=1.0, image_size=32, in_channels=3):
    return CifarResNet(56, num_classes, width, in_channels)
