"""A small AlexNet-style CNN for image-folder datasets (the pruning lab's suggested network).

Five convs in AlexNet's pattern (wide early kernels, three 3x3 convs, max-pool stages) with
BatchNorm so it trains quickly from scratch, and a two-layer classifier. An adaptive pool
before the classifier makes it work for any input size from 32 px up.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from compress.models import register_model, scaled


class AlexNetSmall(nn.Module):
    def __init__(self, num_classes: int = 10, width: float = 1.0, in_channels: int = 3):
        super().__init__()
        c = [scaled(v, width) for v in (64, 192, 384, 256, 256)]
        hidden = scaled(512, width)

        def block(cin, cout, k, pad):
            return [nn.Conv2d(cin, cout, k, padding=pad, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(in_channels, c[0], 5, 2), nn.MaxPool2d(2),
            *block(c[0], c[1], 5, 2), nn.MaxPool2d(2),
            *block(c[1], c[2], 3, 1),
            *block(c[2], c[3], 3, 1),
            *block(c[3], c[4], 3, 1), nn.MaxPool2d(2),
        )
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.classifier = nn.Sequential(
            nn.Dropout(0.3), nn.Linear(c[4] * 4, hidden), nn.ReLU(inplace=True),
            nn.Dropout(0.3), nn.Linear(hidden, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


@register_model("alexnet_small", "AlexNet-style 5-conv CNN with BatchNorm, for image folders (any size >= 32 px)")
def alexnet_small(num_classes=10, width=1.0, image_size=32, in_channels=3):
    return AlexNetSmall(num_classes, width, in_channels)
