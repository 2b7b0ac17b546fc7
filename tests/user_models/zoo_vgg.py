"""A CIFAR VGG13 the way public model zoos write it (not registered with the toolchain):
convs with bias, a three-layer classifier with dropout, its own layer names."""
import torch.nn as nn

CFG = [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]


class ZooVGG(nn.Module):
    def __init__(self, num_classes=10, width=1.0, hidden=512):
        super().__init__()
        layers, c = [], 3
        for v in CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                w = max(1, int(v * width))
                layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
                c = w
        self.body = nn.Sequential(*layers)
        h = max(1, int(hidden * width))
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Linear(c, h), nn.ReLU(True),
                                  nn.Dropout(0.5), nn.Linear(h, h), nn.ReLU(True), nn.Linear(h, num_classes))

    def forward(self, x):
        return self.head(self.body(x).flatten(1))


def vgg13(num_classes=10, width=1.0):
    return ZooVGG(num_classes, width)


def not_a_model(**kwargs):
    return 42
