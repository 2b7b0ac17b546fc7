"""Architectures by name (timm-style registry): `create_model("vgg13")`, `list_models()`."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch.nn as nn

from ..errors import CompressError, did_you_mean

_REGISTRY: dict[str, tuple[Callable[..., nn.Module], str]] = {}


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild an unpruned model: saved in every checkpoint."""

    name: str
    num_classes: int = 10
    width: float = 1.0
    image_size: int = 32
    in_channels: int = 3

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def build(self) -> nn.Module:
        return create_model(self.name, num_classes=self.num_classes, width=self.width,
                            image_size=self.image_size, in_channels=self.in_channels)


def register_model(name: str, description: str):
    """Decorator: make `fn(num_classes, width, image_size, in_channels)` creatable by name."""

    def wrap(fn):
        _REGISTRY[name] = (fn, description)
        return fn

    return wrap


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def describe_models() -> dict[str, str]:
    return {name: _REGISTRY[name][1] for name in list_models()}


def create_model(name: str, *, num_classes: int = 10, width: float = 1.0, image_size: int = 32,
                 in_channels: int = 3) -> nn.Module:
    """A freshly initialised model; unknown names list the closest registered ones."""
    if name not in _REGISTRY:
        raise CompressError(f"unknown model {name!r}", did_you_mean(name, list_models()))
    if not 0 < width <= 4:
        raise CompressError(f"width multiplier {width} is out of range", "use a value in (0, 4], e.g. 0.25 for a tiny model")
    fn, _ = _REGISTRY[name]
    return fn(num_classes=num_classes, width=width, image_size=image_size, in_channels=in_channels)


def scaled(channels: int, width: float) -> int:
    """Channel count under a width multiplier; never below 1."""
    return max(1, int(round(channels * width)))


# Register the architectures (import for side effects).
from . import alexnet, resnet_cifar, torchvision_models, vgg  # noqa: E402,F401
