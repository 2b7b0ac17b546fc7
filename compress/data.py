"""Datasets as whole uint8 tensors, batched and augmented on the training device.

CIFAR-10 is small enough to live on the GPU (150 MB as uint8), so a per-image PIL pipeline
would only add a CPU bottleneck: we read the official python batches ourselves, keep them as
one tensor, and crop/flip/normalise whole batches with tensor ops.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from .console import notice
from .errors import CompressError
from .imagefiles import ImageFiles, batches_of

CIFAR10_DIR = "cifar-10-batches-py"
SAMPLE_ROOT = Path(__file__).parent / "assets" / "cifar10-sample"
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
# MD5 of the official files (the same table torchvision checks); a 10,000-image batch must match.
OFFICIAL_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}


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


def parse_val_split(text: str) -> float | None:
    """--val-split: 'auto' (None), 0 (off) or a fraction in (0, 0.5]."""
    if text.strip().lower() == "auto":
        return None
    try:
        v = float(text)
    except ValueError:
        raise CompressError(f"--val-split {text!r} is not a number", "pass auto, 0 (off) or a fraction such as 0.1") from None
    if not (v == 0 or 0 < v <= 0.5):
        raise CompressError(f"--val-split {text} is outside [0, 0.5]",
                            "pass a fraction of the training images such as 0.1, auto, or 0 to turn the split off")
    return v


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


# --------------------------------------------------------------------------- sources
def default_cache_dir() -> Path:
    """Where full CIFAR-10 is looked for and downloaded to (`COMPRESS_DATA` overrides)."""
    env = os.environ.get("COMPRESS_DATA")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "compress" / "cifar10"


def load_dataset(spec: str | None = None, *, quiet: bool = False, image_size: int | None = None,
                 stream: bool = False, workers: int | None = None) -> Dataset:
    """Resolve a `--data` value to a loaded dataset.

    `spec` is one of: a folder path; `sample` (the bundled 4068/1017-image CIFAR-10 sample);
    `cifar10` (the full set: cache, else download); `imagefolder:PATH`; or None/`auto`:
    the cache, else a download, else the bundled sample with a notice. `image_size` (px)
    resizes the images to a square side; None keeps CIFAR's 32 px and lets an image folder
    choose (its own size when all images share one, else 64). `stream`, `workers`: an image
    folder read from disk batch by batch by that many DataLoader processes (see `imagefiles`).
    """
    spec = (spec or "auto").strip()
    if spec.startswith("imagefolder:"):
        from .imagefolder import load_image_folder

        return load_image_folder(spec.split(":", 1)[1], image_size=image_size, quiet=quiet, stream=stream,
                                 workers=workers)
    if stream:
        raise CompressError("--stream reads image folders (--data imagefolder:PATH); CIFAR-10 is always held "
                            "in memory (150 MB decoded)", "drop --stream")
    if image_size is not None:
        from .imagefolder import resized_dataset

        return resized_dataset(load_dataset(spec, quiet=quiet), image_size)
    if spec == "sample":
        return _load_sample(quiet)
    if spec in ("auto", "cifar10"):
        cache = default_cache_dir()
        if _find_batches_dir(cache) is not None:
            return read_cifar10(cache)
        if os.environ.get("COMPRESS_OFFLINE") != "1" and _try_download(cache):
            return read_cifar10(cache)
        if spec == "cifar10":
            raise CompressError(
                f"full CIFAR-10 is not in {cache} and could not be downloaded",
                "put cifar-10-batches-py there (or pass --data PATH), or use --data sample",
            )
        return _load_sample(quiet)
    return read_cifar10(Path(spec).expanduser())


def _load_sample(quiet: bool) -> Dataset:
    ds = read_cifar10(SAMPLE_ROOT, name="cifar10-sample")
    if not quiet:
        notice(
            f"using the bundled CIFAR-10 sample ({ds.train_x.shape[0]} train / "
            f"{ds.test_x.shape[0]} test images); accuracies are not comparable with full CIFAR-10"
        )
    return ds


def _try_download(cache: Path) -> bool:
    """torchvision's download into the cache, when a network answers; False otherwise."""
    import torchvision

    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(15)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        torchvision.datasets.CIFAR10(str(cache), train=True, download=True)
        return _find_batches_dir(cache) is not None
    except Exception:  # no network, proxy, disk: fall back to the next source
        return False
    finally:
        socket.setdefaulttimeout(old)


def _find_batches_dir(path: Path) -> Path | None:
    """`path/cifar-10-batches-py` or `path` itself, whichever holds the batches."""
    for cand in (path / CIFAR10_DIR, path):
        if (cand / "test_batch").is_file() and (cand / "data_batch_1").is_file():
            return cand
    return None


# --------------------------------------------------------------------------- reading
def read_cifar10(path: Path, name: str | None = None) -> Dataset:
    """Read the official python batches from `path`, checking every file.

    Integrity: a file listed in an `MD5SUMS` beside the batches must match it; an official
    10,000-image batch must match the official MD5; every file must unpickle to the expected
    keys, dtypes and shapes. A truncated or corrupt file is an error, never silent garbage.
    """
    path = Path(path)
    if not path.exists():
        raise CompressError(f"data path {path} does not exist", "pass --data PATH to a CIFAR-10 folder, or --data sample")
    root = _find_batches_dir(path)
    if root is None:
        raise CompressError(
            f"no CIFAR-10 batches in {path}",
            f"expected {CIFAR10_DIR}/ with data_batch_1.. and test_batch (the official python version)",
        )
    listed = _read_md5sums(root)
    digests: dict[str, str] = {}
    train_files = sorted(p for p in root.glob("data_batch_*") if p.name[len("data_batch_"):].isdigit())
    xs, ys, unverified = [], [], []
    for f in train_files:
        x, y, ok = _read_batch(f, listed, digests)
        xs.append(x), ys.append(y)
        if not ok:
            unverified.append(f.name)
    test_x, test_y, ok = _read_batch(root / "test_batch", listed, digests)
    if not ok:
        unverified.append("test_batch")
    if unverified:
        notice(f"no checksum known for {', '.join(unverified)} in {root}: checked structure only")
    classes = _read_classes(root)
    fingerprint = hashlib.md5("".join(sorted(digests.values())).encode()).hexdigest()[:12]
    full = sum(x.shape[0] for x in xs) == 50000 and test_x.shape[0] == 10000
    sample = root.resolve() == SAMPLE_ROOT.resolve()  # the bundled sample, named by its path (a checkpoint's source)
    return Dataset(
        name=name or ("cifar10" if full else "cifar10-sample" if sample else "cifar10-subset"),
        source=str(root),
        classes=classes,
        train_x=torch.cat(xs),
        train_y=torch.cat(ys),
        test_x=test_x,
        test_y=test_y,
        fingerprint=fingerprint,
    )


def _read_md5sums(root: Path) -> dict[str, str]:
    """File name -> MD5 from an `MD5SUMS` file beside or above the batches (empty if none)."""
    listed: dict[str, str] = {}
    for cand in (root / "MD5SUMS", root.parent / "MD5SUMS"):
        if cand.is_file():
            for line in cand.read_text().splitlines():
                parts = line.split()
                if len(parts) == 2:
                    listed[Path(parts[1]).name] = parts[0]
            break
    return listed


def _read_batch(f: Path, listed: dict, digests: dict) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """One batch file as (uint8 N×3×32×32, int64 N); the bool says whether a checksum vouched for it."""
    raw = f.read_bytes()
    digest = hashlib.md5(raw).hexdigest()
    digests[f.name] = digest
    hint = "re-download or re-copy the dataset (the file is truncated or corrupt)"
    if f.name in listed and listed[f.name] != digest:
        raise CompressError(f"{f} does not match its MD5SUMS entry", hint)
    try:
        d = pickle.loads(raw, encoding="latin1")
        data, labels = d["data"], d["labels"]
    except Exception as e:
        raise CompressError(f"{f} is not a readable CIFAR-10 batch ({type(e).__name__})", hint) from None
    n = len(labels)
    if getattr(data, "shape", None) != (n, 3072) or str(getattr(data, "dtype", "")) != "uint8" or n == 0:
        raise CompressError(f"{f} has data of shape {getattr(data, 'shape', '?')}, expected ({n}, 3072) uint8", hint)
    if n == 10000 and f.name in OFFICIAL_MD5 and f.name not in listed and OFFICIAL_MD5[f.name] != digest:
        raise CompressError(f"{f} does not match the official CIFAR-10 MD5", hint)
    y = torch.tensor(labels, dtype=torch.int64)
    if y.min() < 0 or y.max() > 9:
        raise CompressError(f"{f} has labels outside 0..9", hint)
    x = torch.from_numpy(data.copy()).view(n, 3, 32, 32)
    verified = f.name in listed or (n == 10000 and f.name in OFFICIAL_MD5)
    return x, y, verified


def _read_classes(root: Path) -> list[str]:
    meta = root / "batches.meta"
    try:
        names = pickle.loads(meta.read_bytes(), encoding="latin1")["label_names"]
        if len(names) == 10:
            return [str(n) for n in names]
    except Exception:
        pass
    return ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# --------------------------------------------------------------------------- batches
class Loader:
    """Batches of normalised float images, made on `x`'s device from one uint8 tensor.

    With `augment`, each image gets a random translation of up to `pad` pixels (zero padding,
    as torchvision's RandomCrop(32, padding=4)) and a random horizontal flip, both done for the
    whole batch in one gather. Randomness comes from `generator` (CPU), so a seed replays a run.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        *,
        mean,
        std,
        shuffle: bool = False,
        augment: bool = False,
        pad: int = 4,
        drop_last: bool = False,
        generator: torch.Generator | None = None,
        channels_last: bool = False,
        shard: tuple[int, int] = (0, 1),
        device: torch.device | str | None = None,
    ):
        self.x, self.y, self.batch_size = x, y, batch_size
        self.shard = shard  # (rank, ranks): this rank's equal slice of every batch, the randomness drawn for all
        self.shuffle, self.augment, self.pad, self.drop_last = shuffle, augment, pad, drop_last
        self.generator = generator
        self.channels_last = channels_last
        self.device = dev = torch.device(device) if device is not None else x.device
        self.mean = torch.tensor(mean, device=dev).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std, device=dev).view(1, -1, 1, 1) * 255

    def __len__(self) -> int:
        n = self.x.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        n = self.x.shape[0]
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        rank, ranks = self.shard
        batches = [order[i * self.batch_size : (i + 1) * self.batch_size] for i in range(len(self))]
        parts = [slice(rank * b.numel() // ranks, (rank + 1) * b.numel() // ranks) for b in batches]
        if isinstance(self.x, ImageFiles):  # decoded by DataLoader workers, the same indices in the same order
            pieces = batches_of(self.x, self.y, [b[p].tolist() for b, p in zip(batches, parts)],
                                pin=self.device.type == "cuda")
        else:
            pieces = ((self.x[i], self.y[i]) for i in (b[p].to(self.x.device) for b, p in zip(batches, parts)))
        for b, part, (xb, yb) in zip(batches, parts, pieces):
            xb, yb = xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)
            # the random numbers are drawn for the whole batch, so every rank's generator stays in step
            if self.augment:
                shifts, flip = self._crop_flip_params(b.numel())
                xb = self._crop_flip(xb, shifts[:, part], flip[part])
            xb = (xb.float() - self.mean) / self.std
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, yb

    def _crop_flip_params(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        shifts = torch.randint(0, 2 * self.pad + 1, (2, b), generator=self.generator)
        flip = torch.rand(b, generator=self.generator) < 0.5
        return shifts, flip

    def _crop_flip(self, xb: torch.Tensor, shifts: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        b, c, h, w = xb.shape
        p = self.pad
        padded = F.pad(xb, (p, p, p, p))
        shifts, flip = shifts.to(xb.device), flip.to(xb.device)
        rows = shifts[0, :, None] + torch.arange(h, device=xb.device)
        cols = shifts[1, :, None] + torch.arange(w, device=xb.device)
        cols = torch.where(flip[:, None], cols.flip(1), cols)
        bi = torch.arange(b, device=xb.device)[:, None, None, None]
        ci = torch.arange(c, device=xb.device)[None, :, None, None]
        return padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


def eval_loader(ds: Dataset, batch_size: int = 500, split: str = "test", channels_last: bool = False) -> Loader:
    """Batches of a split ("train", "val" or "test") in order, without augmentation."""
    x, y = ds.split(split)
    return Loader(x, y, batch_size, mean=ds.mean, std=ds.std, channels_last=channels_last)


def calibration_batch(ds: Dataset, n: int = 64, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """The first `n` images of a split, normalised: real inputs for parity checks and tracing."""
    x, y = ds.split(split)
    xb, yb = next(iter(Loader(x[:n], y[:n], n, mean=ds.mean, std=ds.std)))
    return xb, yb
