"""Architectures by name (timm-style registry): `create_model("vgg13")`, `list_models()`."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
import torch.nn as nn

from compress.errors import CompressError, did_you_mean
from compress.models.structure import mark_fixed_filters

_REGISTRY: dict[str, tuple[Callable[..., nn.Module], str]] = {}


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild an unpruned model: saved in every checkpoint.

    `name` is a model source (see `sources.py`): a registry name, `torchvision:NAME`,
    `file.py:CALLABLE` or `package.module:CALLABLE`; `args` are the builder's keyword arguments.
    """

    name: str
    num_classes: int = 10
    width: float = 1.0
    image_size: int = 32
    in_channels: int = 3
    args: dict = field(default_factory=dict, hash=False, compare=True)
    # False for a spec read from a file (`from_dict`): a code source it names runs only when the
    # user allowed it (sources.check_allowed); specs made in code are the caller's own choice
    user_named: bool = field(default=True, compare=False, repr=False)

    def example_input(self, batch: int = 1) -> torch.Tensor:
        """Zeros of the input shape: what tracing (Torch-Pruning's graph, op counts, ONNX) needs."""
        return torch.zeros(batch, self.in_channels, self.image_size, self.image_size)

    def to_dict(self) -> dict:
        d = asdict(self)
        del d["user_named"]
        if not d["args"]:
            del d["args"]  # registry specs keep their old form (and baseline cache keys)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d and k != "user_named"}, user_named=False)

    @property
    def label(self) -> str:
        """Short name for folders and titles ('vgg13', 'resnet50', 'my_vgg13')."""
        return sources.label(self.name)

    @property
    def source_kind(self) -> str:
        return sources.kind_of(self.name)

    @property
    def cifar_variant(self) -> str | None:
        """The registered CIFAR-stem model built for `torchvision:NAME` on small images, unless
        `--model-arg cifar_stem=false` asks for torchvision's own stem."""
        variant = sources.cifar_stem_variant(self.name, self.image_size)
        return variant if variant and self.args.get("cifar_stem", True) else None

    def build(self) -> nn.Module:
        """A freshly initialised module; its filter-prunable layers are marked (see `structure`)."""
        variant = self.cifar_variant
        if variant:
            model = create_model(variant, num_classes=self.num_classes, width=self.width,
                                 image_size=self.image_size, in_channels=self.in_channels)
        elif self.source_kind == "registry":
            if self.args:
                raise CompressError(f"registered models take no --model-arg (got {sorted(self.args)})",
                                    "use --width for a registered model, or drop --model-arg")
            model = create_model(self.name, num_classes=self.num_classes, width=self.width,
                                 image_size=self.image_size, in_channels=self.in_channels)
        else:
            if not self.user_named:
                sources.check_allowed(self.name)
            args = {k: v for k, v in self.args.items() if k != "cifar_stem"}
            model = sources.build_from_source(self.name, args, num_classes=self.num_classes,
                                              image_size=self.image_size, in_channels=self.in_channels,
                                              width=self.width)
        if self.source_kind != "registry" and not variant:
            self._probe(model)
        mark_fixed_filters(model, self.example_input())
        return model

    def _probe(self, model: nn.Module) -> None:
        """A model that does not run at this input size (ViT, Swin and MaxViT take a fixed size;
        Inception v3 needs at least 75 px) is one clear error here, not a traceback in tracing."""
        was_training = model.training
        try:
            with torch.no_grad():
                model.eval()(self.example_input())
        except Exception as e:  # noqa: BLE001 - the user's or torchvision's code: say what it said
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise CompressError(f"{self.name} does not run on {self.image_size}x{self.image_size} px inputs "
                                f"({type(e).__name__}: {first})",
                                "pass --image-size N with the size it takes (e.g. 224; CIFAR and image folders "
                                "are resized to it), or a builder argument that sets it (torchvision ViT: "
                                "--model-arg image_size=N; timm: --model-arg img_size=N)") from None
        finally:
            model.train(was_training)

    def describe(self) -> str:
        """What was built, in words ('torchvision:resnet18 (CIFAR-stem variant: ...)')."""
        if self.cifar_variant:
            return (f"{self.name}, built as the CIFAR-stem variant (3x3 stride-1 first conv, no max-pool) for "
                    f"{self.image_size} px images; --model-arg cifar_stem=false for torchvision's ImageNet stem")
        return self.name


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
from compress.models import alexnet, resnet_cifar, sources, torchvision_models, vgg  # noqa: E402,F401
