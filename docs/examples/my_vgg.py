"""A CIFAR-10 VGG13 as a user writes it, not as this toolchain does: convs with bias, a
three-layer classifier with dropout, its own layer names. `compress` imports it with
`--model docs/examples/my_vgg.py:vgg13`."""
import torch.nn as nn

CFG = [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]


class VGG(nn.Module):
    def __init__(self, cfg, num_classes=10):
        super().__init__()
        layers, c = [], 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                c = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(512, 512), nn.ReLU(True),
            nn.Dropout(0.5), nn.Linear(512, 512), nn.ReLU(True),
            nn.Linear(512, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def vgg13(num_classes=10):
    return VGG(CFG, num_classes)
