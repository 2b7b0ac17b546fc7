"""Decoding image files, and the streamed path for folders too big to hold in memory.

An image folder that fits is decoded once into one uint8 tensor (`imagefolder`). One that does
not (or with `--stream`) becomes an `ImageFiles`: a lazy stand-in for that tensor which holds
file names only. Indexing it selects files; `data.Loader` decodes the selected batch in
torch DataLoader worker processes (decode + resize there) and crops, flips and normalises it
on the training device exactly as it does for a tensor. Every consumer of images goes through
`data.Loader`, so the rest of the toolchain does not know which path a dataset took.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from compress.errors import CompressError

STATS_IMAGES = 2000  # images (seeded sample) a streamed folder's channel mean/std are estimated on


class UnreadableImage(CompressError):
    """A file that does not decode; raised in a DataLoader worker, re-raised whole in the loader."""


def decode_image(raw: bytes, size: int, name: Path) -> tuple[torch.Tensor, str]:
    """Bytes of one image file as uint8 3 x size x size RGB (bilinear, antialiased when
    shrinking), and the file's own Pillow mode (counted in the dataset's description)."""
    try:
        with Image.open(io.BytesIO(raw)) as im:
            mode = im.mode
            if im.mode.startswith(("I", "F")):  # 16-bit / int / float grey: Pillow would clip at 255
                im = _to_8bit(im)
            im = im.convert("RGB")  # L, LA, P, RGBA, CMYK ... all become 3 channels
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)  # Pillow antialiases when shrinking
            arr = np.asarray(im, dtype=np.uint8)
    except Exception as e:
        raise unreadable(name, e) from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1), mode


def _to_8bit(im):
    """A 16-bit, 32-bit integer or float grey image as 8-bit grey, scaled rather than clipped:
    16-bit ranges (I;16, or I with values above 255) by 255/65535, floats in [0, 1] by 255."""
    a = np.asarray(im, dtype=np.float64)
    top = float(a.max()) if a.size else 0.0
    if im.mode.startswith("I;16") or (im.mode == "I" and 255 < top <= 65535):
        a = a * (255 / 65535)
    elif im.mode == "I" and top > 65535:
        a = a * (255 / top)
    elif im.mode == "F" and top <= 1.0:
        a = a * 255
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")


def unreadable(f: Path, e: Exception) -> UnreadableImage:
    reason = str(e).splitlines()[0][:100] if str(e) else type(e).__name__
    return UnreadableImage(f"cannot read image {f} ({reason})",
                           "the file is truncated or not an image: replace or remove it")


# --------------------------------------------------------------------------- the streamed path
class ImageFiles:
    """Image files standing in for a uint8 N x 3 x size x size tensor: `shape`, `len`, `.to()`
    and indexing (by slice, list or index tensor: a subset of the files, nothing decoded) behave
    as the tensor's would; `data.Loader` decodes batches of it with `workers` processes."""

    device = torch.device("cpu")
    dtype = torch.uint8

    def __init__(self, files: list[Path], size: int, workers: int):
        self.files, self.size, self.workers = list(files), int(size), int(workers)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.files), 3, self.size, self.size))

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index) -> "ImageFiles":
        if isinstance(index, slice):
            picked = self.files[index]
        else:
            picked = [self.files[i] for i in torch.as_tensor(index).flatten().tolist()]
        return ImageFiles(picked, self.size, self.workers)

    def to(self, *args, **kwargs) -> "ImageFiles":
        return self  # decoded batch by batch; `data.Loader` moves each batch to the device

    def cpu(self) -> "ImageFiles":
        return self

    def labelled(self, labels: torch.Tensor) -> "LabelledFiles":
        return LabelledFiles(self.files, labels.cpu(), self.size)


class LabelledFiles(torch.utils.data.Dataset):
    """(uint8 image, label) per index, decoded in whichever process asks (a DataLoader worker)."""

    def __init__(self, files: list[Path], labels: torch.Tensor, size: int):
        self.files, self.labels, self.size = files, labels, size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        f = self.files[i]
        try:
            raw = Path(f).read_bytes()
        except OSError as e:
            raise unreadable(f, e) from None
        return decode_image(raw, self.size, f)[0], self.labels[i]


def batches_of(files: ImageFiles, labels: torch.Tensor, index_batches: list[list[int]], pin: bool):
    """uint8 image batches and labels for each list of indices, decoded by `files.workers`
    DataLoader processes (none for a single batch: forking would cost more than it saves).
    A file that fails to decode stops the run with the worker's one-line error."""
    workers = min(files.workers, len(index_batches)) if len(index_batches) > 1 else 0
    loader = DataLoader(files.labelled(labels), batch_sampler=index_batches, num_workers=workers,
                        pin_memory=pin, prefetch_factor=4 if workers else None)
    batches = iter(loader)
    try:
        yield from batches
    except UnreadableImage as e:  # a worker's error arrives wrapped in its traceback: keep its last line
        if not workers:
            raise
        last = str(e).strip().splitlines()[-1]
        raise CompressError(last.partition("UnreadableImage: ")[2] or last) from None
    finally:  # stop the workers now, not when a traceback holding this frame is collected
        getattr(batches, "_shutdown_workers", lambda: None)()


def default_workers() -> int:
    """DataLoader processes per training process: the CPUs this process may use, shared with
    the other processes torchrun started on this node, at most 8 (decoding is rarely the limit
    beyond that at these image sizes), at least 1."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_node = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(8, cpus // per_node))


def memory_limit() -> tuple[int, str]:
    """Bytes of decoded images above which an image folder is streamed, and why that many: a
    quarter of this machine's RAM shared by the processes torchrun started on it, and a quarter of
    the GPU's memory when there is one (the images would move there). `COMPRESS_STREAM_ABOVE_MB`
    sets it."""
    env = os.environ.get("COMPRESS_STREAM_ABOVE_MB")
    if env:
        try:
            return int(float(env) * 2**20), "COMPRESS_STREAM_ABOVE_MB"
        except ValueError:
            raise CompressError(f"COMPRESS_STREAM_ABOVE_MB={env!r} is not a number", "e.g. 4096") from None
    per_node = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4 // per_node
    why = "a quarter of RAM" + (f" over {per_node} processes" if per_node > 1 else "")
    if torch.cuda.is_available():
        gpu = torch.cuda.get_device_properties(0).total_memory // 4
        if gpu < limit:
            limit, why = gpu, "a quarter of GPU memory"
    return limit, why


def sample_images(files: ImageFiles, n: int = STATS_IMAGES, seed: int = 0) -> torch.Tensor:
    """A seeded sample of up to `n` images, decoded (for channel statistics of a streamed folder)."""
    idx = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed))[:n].sort().values.tolist()
    chunks = [idx[i:i + 64] for i in range(0, len(idx), 64)]
    labels = torch.zeros(len(files), dtype=torch.int64)
    return torch.cat([xb for xb, _ in batches_of(files, labels, chunks, pin=False)])


def human_bytes(n: float) -> str:
    """Binary units, as every size the toolchain prints (KiB, MiB, GiB)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} TiB"
