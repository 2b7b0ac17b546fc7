"""Train, validation and test images as uint8 tensors, and the seeded validation split.

CIFAR-10 is small enough to live on the GPU (176 MiB as uint8, all 60,000 images), so a per-image PIL pipeline
would only add a CPU bottleneck: a `Dataset` holds each split as one tensor (or, for an image
folder too big for memory, as `imagefiles.ImageFiles` standing in for one).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

import torch

from compress.errors import CompressError

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


@dataclass
class Dataset:
    """Train and test images as uint8 NCHW tensors with int64 labels, plus what they are."""

    name: str
    source: str
    classes: list[str]
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: tuple[float, ...] = CIFAR10_MEAN
    std: tuple[float, ...] = CIFAR10_STD
    fingerprint: str = ""
    extra: dict = field(default_factory=dict)
    val_x: torch.Tensor | None = None  # held out of the training images by `with_validation`
    val_y: torch.Tensor | None = None

    @property
    def has_val(self) -> bool:
        return self.val_x is not None and self.val_x.shape[0] > 0

    @property
    def choice_split(self) -> str:
        """The split every choice reads: validation when there is one, else (said in every output) test."""
        return "val" if self.has_val else "test"

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) of "train", "val" or "test"."""
        if name == "val" and not self.has_val:
            raise CompressError("this dataset has no validation split", "pass --val-split auto (or a fraction)")
        pairs = {"train": (self.train_x, self.train_y), "val": (self.val_x, self.val_y), "test": (self.test_x, self.test_y)}
        if name not in pairs:
            raise ValueError(f"unknown split {name!r}")
        return pairs[name]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])

    def to(self, device) -> "Dataset":
        """Move the image tensors to `device` once, so batches never cross the bus."""
        for k in ("train_x", "train_y", "test_x", "test_y", "val_x", "val_y"):
            if getattr(self, k) is not None:
                setattr(self, k, getattr(self, k).to(device))
        return self

    def normalised(self, mean=None, std=None) -> "Dataset":
        """The same images with another input normalisation (a user model's --mean/--std); the
        fingerprint changes with it, since a model trained on one does not fit the other."""
        mean = tuple(float(v) for v in (mean or self.mean))
        std = tuple(float(v) for v in (std or self.std))
        for what, values in (("--mean", mean), ("--std", std)):
            if len(values) != self.train_x.shape[1]:
                raise CompressError(f"{what} has {len(values)} values but the images have {self.train_x.shape[1]} channels",
                                    f"give one value per channel, e.g. {what} 0.5,0.5,0.5")
        if any(v <= 0 for v in std):
            raise CompressError(f"--std {','.join(map(str, std))} has a value <= 0", "standard deviations are positive")
        if (mean, std) == (tuple(self.mean), tuple(self.std)):
            return self
        tag = hashlib.sha1(repr((mean, std)).encode()).hexdigest()[:6]
        return replace(self, mean=mean, std=std, fingerprint=f"{self.fingerprint}-n{tag}")

    def describe(self) -> dict:
        """Plain metadata for checkpoints and manifests."""
        return {
            "name": self.name,
            "source": self.source,
            "train_images": int(self.train_x.shape[0]),
            "val_images": int(self.val_x.shape[0]) if self.has_val else 0,
            "test_images": int(self.test_x.shape[0]),
            "choices_on": "validation" if self.has_val else "test (no validation split: --val-split 0)",
            "num_classes": self.num_classes,
            "classes": list(self.classes),
            "image_size": self.image_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "fingerprint": self.fingerprint,
            **self.extra,
        }


# --------------------------------------------------------------------------- validation split
VAL_SEED = 0  # the split is part of the data, not of a run: every seed and recipe sees the same one


def auto_val_fraction(n_train: int) -> float:
    """The default `--val-split auto`: 10% of the training images, but at least 1000 (at most a
    fifth of them) so that small sets get a usable validation split (one standard error ~1.4
    points at 1000 images), and at most 5000 on large ones."""
    n = max(0.1 * n_train, min(1000, 0.2 * n_train))
    return min(n, 5000) / n_train


def with_validation(ds: Dataset, fraction: float | None = None, seed: int = VAL_SEED) -> Dataset:
    """`ds` with a seeded, class-stratified validation split carved out of its training images
    (`fraction` None: `auto_val_fraction`; 0: none). The test split is untouched; the fingerprint
    records the split, so baselines trained on the rest are cached apart."""
    if "val_split" in ds.extra:
        raise CompressError("this dataset's validation split is already decided", "split once")
    n = int(ds.train_x.shape[0])
    fraction = auto_val_fraction(n) if fraction is None else float(fraction)
    if fraction <= 0:
        return replace(ds, extra={**ds.extra, "val_split": None})
    g = torch.Generator().manual_seed(seed)
    labels = ds.train_y.cpu()
    val_idx, train_idx = [], []
    for c in labels.unique(sorted=True).tolist():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(idx.numel(), generator=g)]
        k = min(int(round(fraction * idx.numel())), idx.numel() - 1)  # every class keeps a training image
        val_idx.append(idx[:k]), train_idx.append(idx[k:])
    val_idx, train_idx = torch.cat(val_idx).sort().values, torch.cat(train_idx).sort().values
    if val_idx.numel() == 0:
        raise CompressError(f"--val-split {fraction:g} of {n} training images leaves no validation image",
                            "pass a larger fraction, or 0 to turn the split off")
    dev = ds.train_x.device
    val_idx, train_idx = val_idx.to(dev), train_idx.to(dev)
    split = {"fraction": fraction, "seed": seed, "stratified": True, "images": int(val_idx.numel())}
    return replace(ds, train_x=ds.train_x[train_idx], train_y=ds.train_y[train_idx],
                   val_x=ds.train_x[val_idx], val_y=ds.train_y[val_idx],
                   fingerprint=f"{ds.fingerprint}-val{val_idx.numel()}s{seed}", extra={**ds.extra, "val_split": split})


def with_validation_data(ds: Dataset, held_out: Dataset, source: str) -> Dataset:
    """`ds` with every image of `held_out` (a separate folder, `--val-data`) as its validation
    split, and all of its own training images kept for training: for weights trained elsewhere,
    whose training may have seen any image of `ds`'s training split."""
    if "val_split" in ds.extra:
        raise CompressError("this dataset's validation split is already decided", "split once")
    if list(held_out.classes) != list(ds.classes):
        raise CompressError(f"--val-data {source} has the classes {list(held_out.classes)[:4]}..., not the training "
                            f"data's {list(ds.classes)[:4]}...", "give it one folder per class, with the same names")
    if tuple(held_out.train_x.shape[1:]) != tuple(ds.train_x.shape[1:]):
        raise CompressError(f"--val-data {source} has images of shape {tuple(held_out.train_x.shape[1:])}, the "
                            f"training data {tuple(ds.train_x.shape[1:])}", "pass --image-size for both")
    parts = [(held_out.train_x, held_out.train_y), (held_out.test_x, held_out.test_y)]
    if held_out.has_val:
        parts.append((held_out.val_x, held_out.val_y))
    dev = ds.train_x.device
    val_x = torch.cat([x.to(dev) for x, _ in parts])
    val_y = torch.cat([y.to(dev) for _, y in parts])
    split = {"source": source, "separate": True, "images": int(val_x.shape[0]), "fingerprint": held_out.fingerprint}
    return replace(ds, val_x=val_x, val_y=val_y, fingerprint=f"{ds.fingerprint}-valdata{held_out.fingerprint}",
                   extra={**ds.extra, "val_split": split})
