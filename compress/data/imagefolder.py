"""Folders of class sub-folders with PNG/JPEG images, read once into uint8 tensors like CIFAR.

Layout (torchvision's ImageFolder conventions): `ROOT/CLASS/*.png` (sub-folders of a class
are searched too, hidden files and folders are skipped, classes are sorted folder names).
If ROOT has `train/` and `val/` (or `test/`) folders, those are the splits; otherwise a
stratified split is drawn with a fixed seed. Every image is decoded once with Pillow,
converted to RGB and resized to one square size, so training batches come from one tensor on
the device with the same crop/flip augmentation as CIFAR (`compress.data.Loader`). A folder
too big for that (or with `--stream`) is read from disk each epoch instead (`imagefiles`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from compress.console import notice, progress
from compress.data.dataset import Dataset
from compress.data.imagefiles import (
    STATS_IMAGES,
    ImageFiles,
    decode_image,
    default_workers,
    human_bytes,
    memory_limit,
    sample_images,
    unreadable,
)
from compress.errors import CompressError

# torchvision.datasets.folder.IMG_EXTENSIONS, matched case-insensitively as torchvision does
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
DEFAULT_SIZE = 64  # px; when the images do not all share one square size
MIN_SIZE = 8  # px; below this the CNNs of the registry have nothing left to pool
SPLIT_NAMES = ("val", "test")  # checked in this order beside train/


def load_image_folder(path: str | Path, image_size: int | None = None, val_fraction: float = 0.2,
                      seed: int = 0, quiet: bool = False, stream: bool = False, workers: int | None = None):
    """Read an image folder into a `compress.data.Dataset` (uint8 NCHW, RGB, square).

    image_size: side in px every image is resized to (bilinear, antialiased, aspect ratio not
    kept, like MATLAB's augmentedImageDatastore and `transforms.Resize((s, s))`); None: the
    images' own size when they all share one square size, else 64.
    val_fraction, seed: the held-out share of each class when the folder has no val/ or test/.
    stream: read the images from disk batch by batch (`imagefiles.ImageFiles`) rather than hold
    them in memory; automatic above `imagefiles.memory_limit()`. workers: DataLoader processes.
    """
    root = _check_root(path, image_size, val_fraction)
    classes, train_files, val_files, layout = _files_and_splits(root, val_fraction, seed)
    size, why = _choose_size([f for f, _ in train_files + val_files], image_size)
    if not quiet:
        notice(f"image folder {root}: {len(classes)} classes, {len(train_files)} train / {len(val_files)} "
               f"validation images ({layout}); {why}")
    # in memory (decoded once, the bytes fingerprinted) or streamed from disk
    decoded = (len(train_files) + len(val_files)) * 3 * size * size
    limit = memory_limit()
    if stream or decoded > limit[0]:
        return _streamed(root, classes, train_files, val_files, size, layout, why, stream, decoded, limit,
                         workers or default_workers(), quiet)
    return _in_memory(root, classes, train_files, val_files, size, layout, why, decoded, limit,
                      f"{size}|{val_fraction}|{seed}|{layout}", quiet)


def _check_root(path, image_size: int | None, val_fraction: float) -> Path:
    """The folder, or one clear error for an empty, missing or non-folder path and bad options."""
    if not str(path).strip():
        raise CompressError("imagefolder: needs a folder", "e.g. --data imagefolder:data/pngs")
    root = Path(path).expanduser()
    if not root.exists():
        raise CompressError(f"image folder {root} does not exist",
                            "pass --data imagefolder:PATH to a folder with one sub-folder of images per class")
    if not root.is_dir():
        raise CompressError(f"{root} is not a folder", "imagefolder:PATH needs a folder of class sub-folders")
    if image_size is not None and image_size < MIN_SIZE:
        raise CompressError(f"image size {image_size} px is too small", f"use --image-size {MIN_SIZE} or more, e.g. 32")
    if not 0 < val_fraction < 1:
        raise CompressError(f"validation fraction {val_fraction} is outside (0, 1)", "e.g. 0.2")
    return root


def _files_and_splits(root: Path, val_fraction: float, seed: int):
    """(classes, train files, held-out files, a sentence on the layout): the folder's own
    train/ and val/ (or test/) when it has them, else a seeded stratified split."""
    train_dir, val_dir = _split_dirs(root)
    classes = find_classes(train_dir)
    train_files = list_images(train_dir, classes, root)
    if val_dir is not None:
        val_classes = find_classes(val_dir)
        if val_classes != classes:
            missing = sorted(set(classes) - set(val_classes))
            extra = sorted(set(val_classes) - set(classes))
            what = f"lacks {missing[:3]}" if missing else f"has classes {extra[:3]} that {train_dir.name}/ lacks"
            raise CompressError(f"{val_dir} does not have the same class folders as {train_dir} ({what})",
                                "give both splits one folder per class, with the same names")
        return classes, train_files, list_images(val_dir, classes, root), f"{train_dir.name}/ and {val_dir.name}/ folders"
    train_files, val_files = stratified_split(train_files, len(classes), val_fraction, seed)
    if not val_files:
        raise CompressError(f"{root} has too few images for a validation split",
                            "add images (at least 2 per class), or add a val/ folder")
    return classes, train_files, val_files, f"stratified split, {val_fraction:g} held out per class, seed {seed}"


def _in_memory(root: Path, classes, train_files, val_files, size: int, layout: str, why: str, decoded: int,
               limit: tuple[int, str], key: str, quiet: bool) -> Dataset:
    """Every image decoded once into one uint8 tensor per split; the fingerprint hashes the bytes."""
    digest = hashlib.sha1(key.encode())
    modes: Counter = Counter()
    with _progress(len(train_files) + len(val_files), quiet) as advance:
        train_x = _read_images(train_files, size, digest, modes, root, advance)
        test_x = _read_images(val_files, size, digest, modes, root, advance)
    converted = {m: n for m, n in modes.items() if m != "RGB"}
    if converted and not quiet:
        notice("converted to RGB: " + ", ".join(f"{n} {m} image{'s' * (n > 1)}" for m, n in sorted(converted.items())))
    if not quiet:
        notice(f"held in memory as one uint8 tensor ({human_bytes(decoded)}; folders above "
               f"{human_bytes(limit[0])}, {limit[1]}, or with --stream are read from disk each epoch)")
    return _dataset(root, classes, train_files, val_files, train_x, test_x, channel_stats(train_x), digest,
                    {"layout": layout, "resize": why, "modes": dict(sorted(modes.items())), "path": "in memory"})


def _streamed(root: Path, classes, train_files, val_files, size: int, layout: str, why: str, forced: bool,
              decoded: int, limit: tuple[int, str], workers: int, quiet: bool):
    """The dataset with `ImageFiles` for images: decoded batch by batch in DataLoader workers.
    Its fingerprint reads file names, sizes and modification times (reading every byte of a folder
    too big for memory would cost an epoch), and its channel statistics a seeded sample."""
    digest = hashlib.sha1(f"{size}|{layout}|streamed".encode())
    for f, label in train_files + val_files:
        st = f.stat()
        digest.update(f"{f.relative_to(root).as_posix()}|{label}|{st.st_size}|{st.st_mtime_ns}|".encode())
    train_x, test_x = ImageFiles([f for f, _ in train_files], size, workers), ImageFiles([f for f, _ in val_files], size, workers)
    reason = "--stream" if forced else f"above {human_bytes(limit[0])}, {limit[1]}"
    if not quiet:
        notice(f"streamed from disk through {workers} DataLoader worker{'s' * (workers > 1)} per process "
               f"(decoded, the images would take {human_bytes(decoded)}; {reason})")
    return _dataset(root, classes, train_files, val_files, train_x, test_x, channel_stats(sample_images(train_x)),
                    digest, {"layout": layout, "resize": why, "path": f"streamed ({reason}), {workers} workers",
                             "channel_stats": f"{min(STATS_IMAGES, len(train_x))} training images (seeded sample)"})


def _dataset(root: Path, classes, train_files, val_files, train_x, test_x, stats, digest, extra: dict) -> Dataset:
    """The folder as a `Dataset`, whichever path holds its images."""
    return Dataset(
        name=f"imagefolder-{root.name}",
        source=f"imagefolder:{root.resolve()}",  # load_dataset(source) reads it again
        classes=classes,
        train_x=train_x,
        train_y=torch.tensor([y for _, y in train_files], dtype=torch.int64),
        test_x=test_x,
        test_y=torch.tensor([y for _, y in val_files], dtype=torch.int64),
        mean=stats[0],
        std=stats[1],
        fingerprint=digest.hexdigest()[:12],
        extra=extra,
    )


# --------------------------------------------------------------------------- finding files
def _split_dirs(root: Path) -> tuple[Path, Path | None]:
    """(train folder, validation folder or None): ROOT/train + ROOT/val|test, else ROOT itself."""
    train = root / "train"
    if train.is_dir() and _subdirs(train):
        for name in SPLIT_NAMES:
            if (root / name).is_dir():
                return train, root / name
        return train, None
    return root, None


def _subdirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def find_classes(folder: Path) -> list[str]:
    """Sorted class folder names (index = label), as torchvision's `find_classes`."""
    classes = _subdirs(folder)
    if not classes:
        loose = [p.name for p in folder.iterdir() if _is_image(p.name)]
        hint = (f"{len(loose)} images lie directly in it; move them into one sub-folder per class" if loose
                else "expected PATH/CLASS/image.png, one sub-folder per class (torchvision ImageFolder layout)")
        raise CompressError(f"no class folders in {folder}", hint)
    if len(classes) < 2:
        raise CompressError(f"{folder} has only one class folder ({classes[0]!r})",
                            "a classifier needs at least two classes; add a folder per class")
    return classes


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS) and not name.startswith(".")


def list_images(folder: Path, classes: list[str], root: Path | None = None) -> list[tuple[Path, int]]:
    """(file, label) for every image under each class folder, in sorted order.

    Symbolic links are followed only while they stay inside `root` (the dataset's folder,
    default `folder`): a link that leaves it is not read (said once), and a folder reached
    twice (a link loop) is walked once, so the scan always ends."""
    inside = Path(os.path.realpath(root or folder))
    files, outside, seen = [], [], set()

    def within(path: str) -> bool:
        real = Path(os.path.realpath(path))
        return real == inside or inside in real.parents

    for label, cls in enumerate(classes):
        found = []
        start = folder / cls
        if not within(start):
            outside.append(str(start))
            continue
        for dirpath, dirnames, names in os.walk(start, followlinks=True):
            real = os.path.realpath(dirpath)
            if real in seen:  # a loop, or a second link to a folder already read
                dirnames[:] = []
                continue
            seen.add(real)
            keep = []
            for d in sorted(d for d in dirnames if not d.startswith(".")):
                if within(os.path.join(dirpath, d)):
                    keep.append(d)
                else:
                    outside.append(os.path.join(dirpath, d))
            dirnames[:] = keep
            for n in sorted(n for n in names if _is_image(n)):
                path = os.path.join(dirpath, n)
                if within(path):
                    found.append(Path(path))
                else:
                    outside.append(path)
        if not found:
            why = " (its links lead outside the dataset folder, which are not followed)" if outside else ""
            raise CompressError(f"class folder {folder / cls} has no images{why}",
                                f"add images ({', '.join(IMG_EXTENSIONS)}) or remove the folder")
        files += [(f, label) for f in found]
    if outside:
        notice(f"{len(outside)} symbolic link(s) in {folder} lead outside {inside} and were not followed "
               f"(first: {outside[0]}); copy those images in, or point --data at a folder that holds them")
    return files


def stratified_split(files: list[tuple[Path, int]], num_classes: int, val_fraction: float,
                     seed: int) -> tuple[list, list]:
    """Hold out round(val_fraction * n) images of each class (at least one when it has two or
    more, never all), chosen by a seeded permutation; both lists keep the original order."""
    g = torch.Generator().manual_seed(seed)
    val_idx: set[int] = set()
    for c in range(num_classes):
        idx = [i for i, (_, y) in enumerate(files) if y == c]
        n_val = min(len(idx) - 1, max(1, round(val_fraction * len(idx))))
        perm = torch.randperm(len(idx), generator=g)[:n_val].tolist()
        val_idx.update(idx[j] for j in perm)
    train = [f for i, f in enumerate(files) if i not in val_idx]
    val = [f for i, f in enumerate(files) if i in val_idx]
    return train, val


# --------------------------------------------------------------------------- reading
def _choose_size(files: list[Path], image_size: int | None) -> tuple[int, str]:
    """The square side to resize to, and a sentence saying why."""
    if image_size is not None:
        return image_size, f"resized to {image_size}x{image_size} px (--image-size)"

    sizes: Counter = Counter()
    for f in files:
        try:
            with Image.open(f) as im:  # reads the header only
                sizes[im.size] += 1
        except Exception as e:
            raise unreadable(f, e) from None
    if len(sizes) == 1:
        (w, h), = sizes
        if w == h:
            return w, f"kept at their own size, {w}x{h} px"
        return DEFAULT_SIZE, (f"all {w}x{h} px, not square: resized to {DEFAULT_SIZE}x{DEFAULT_SIZE} px "
                              "(set --image-size to choose)")
    (w0, h0), (w1, h1) = min(sizes), max(sizes)
    return DEFAULT_SIZE, (f"{len(sizes)} different sizes ({w0}x{h0} to {w1}x{h1} px): resized to "
                          f"{DEFAULT_SIZE}x{DEFAULT_SIZE} px (set --image-size to choose)")


@contextlib.contextmanager
def _progress(total: int, quiet: bool):
    """A transient progress bar for folders big enough to take a while; yields `advance()`."""
    if quiet or total < 2000:
        yield lambda: None
        return
    with progress(transient=True) as bar:
        task = bar.add_task("reading images", total=total, status="")
        yield lambda: bar.advance(task)


def _read_images(files: list[tuple[Path, int]], size: int, digest, modes: Counter, root: Path,
                 advance=lambda: None) -> torch.Tensor:
    """Decode, convert to RGB and resize every file into one uint8 N x 3 x size x size tensor."""
    out = torch.empty(len(files), 3, size, size, dtype=torch.uint8)
    for i, (f, label) in enumerate(files):
        raw = f.read_bytes()
        digest.update(f"{f.relative_to(root).as_posix()}|{label}|".encode())
        digest.update(hashlib.sha1(raw).digest())
        out[i], mode = decode_image(raw, size, f)
        modes[mode] += 1
        advance()
    return out


def channel_stats(x: torch.Tensor, chunk: int = 1024) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units (float64 sums, in chunks)."""
    s = torch.zeros(x.shape[1], dtype=torch.float64)
    ss = torch.zeros_like(s)
    for part in x.split(chunk):
        p = part.double()
        s += p.sum((0, 2, 3))
        ss += p.square().sum((0, 2, 3))
    n = x.shape[0] * x.shape[2] * x.shape[3]
    mean = s / n
    std = (ss / n - mean.square()).clamp_min(1e-12).sqrt().clamp_min(1.0)  # >= 1/255: a flat channel stays finite
    return tuple(round(v / 255, 6) for v in mean.tolist()), tuple(round(v / 255, 6) for v in std.tolist())


def resize_images(x: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 NCHW images resized to size x size (bilinear, antialiased), in chunks."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    parts = [F.interpolate(p.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
             .round_().clamp_(0, 255).to(torch.uint8) for p in x.split(1024)]
    return torch.cat(parts)


def resized_dataset(ds, size: int):
    """A copy of a dataset with both splits resized (e.g. CIFAR-10 at 64 px for ResNet-18)."""
    if size < MIN_SIZE:
        raise CompressError(f"image size {size} px is too small", f"use --image-size {MIN_SIZE} or more, e.g. 32")
    if size == ds.image_size:
        return ds
    notice(f"resizing {ds.name} from {ds.image_size} to {size} px")
    return dataclasses.replace(ds, name=f"{ds.name}-{size}px", train_x=resize_images(ds.train_x, size),
                               test_x=resize_images(ds.test_x, size),
                               val_x=None if ds.val_x is None else resize_images(ds.val_x, size), fingerprint=f"{ds.fingerprint}-{size}px",
                               extra={**ds.extra, "resized_from": ds.image_size})


def write_image_folder(ds, root: str | Path, classes: int | None = None, per_class: int | None = None,
                       split: str = "train") -> Path:
    """Write a dataset's images as `root/CLASS/NNNN.png` (lossless): an image folder made from
    the bundled CIFAR-10 sample, to try `--data imagefolder:PATH` without downloading one."""
    root = Path(root)
    x, y = ds.split(split)
    for c in range(classes or ds.num_classes):
        folder = root / ds.classes[c]
        folder.mkdir(parents=True, exist_ok=True)
        for j, i in enumerate((y == c).nonzero().flatten()[:per_class].tolist()):
            Image.fromarray(x[i].permute(1, 2, 0).cpu().numpy()).save(folder / f"{j:04d}.png")
    return root
