"""Where datasets come from: CIFAR-10's official python batches (cache, download or the bundled
sample), image folders, and `load_dataset` to resolve a `--data` value to one of them."""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import socket
from pathlib import Path

import torch
import torchvision

from compress.console import notice
from compress.data.dataset import Dataset
from compress.data.imagefolder import load_image_folder, resized_dataset
from compress.errors import CompressError

CIFAR10_DIR = "cifar-10-batches-py"
SAMPLE_ROOT = Path(__file__).resolve().parents[1] / "assets" / "cifar10-sample"
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
# sizes of the official batch files: a file of that size is checked against the MD5 before it is read
OFFICIAL_BYTES = {"test_batch": 31035526, **{f"data_batch_{i}": 31035704 for i in range(1, 6)}}
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")




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
        return load_image_folder(spec.split(":", 1)[1], image_size=image_size, quiet=quiet, stream=stream,
                                 workers=workers)
    if stream:
        raise CompressError("--stream reads image folders (--data imagefolder:PATH); CIFAR-10 is always held "
                            "in memory (176 MiB decoded)", "drop --stream")
    if image_size is not None:
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


# What the official batches (and the bundled sample) pickle, and nothing else: a numpy array is
# rebuilt from these; any other global a file asks for could run code, so it is refused.
SAFE_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}


class _DataOnly(pickle.Unpickler):
    """An unpickler that rebuilds dicts, lists, strings, numbers and numpy arrays only."""

    def find_class(self, module: str, name: str):
        if (module, name) in SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"the file asks for {module}.{name}, which a dataset file never holds")


def load_data_pickle(raw: bytes, f: Path):
    """A CIFAR-10 python file unpickled without running code from it (see SAFE_GLOBALS)."""
    try:
        return _DataOnly(io.BytesIO(raw), encoding="latin1").load()
    except pickle.UnpicklingError as e:
        if "asks for" in str(e):
            raise CompressError(f"{f} is not a CIFAR-10 file: {e} (not loaded, nothing from it was run)",
                                "use the official python batches from the CIFAR-10 site") from None
        raise


def _read_batch(f: Path, listed: dict, digests: dict) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """One batch file as (uint8 N×3×32×32, int64 N); the bool says whether a checksum vouched for it.
    Checksums are compared before the file is unpickled, and it is unpickled as data only."""
    raw = f.read_bytes()
    digest = hashlib.md5(raw).hexdigest()
    digests[f.name] = digest
    hint = "re-download or re-copy the dataset (the file is truncated or corrupt)"
    if f.name in listed and listed[f.name] != digest:
        raise CompressError(f"{f} does not match its MD5SUMS entry", hint)
    if f.name not in listed and len(raw) == OFFICIAL_BYTES.get(f.name) and OFFICIAL_MD5[f.name] != digest:
        raise CompressError(f"{f} does not match the official CIFAR-10 MD5", hint)
    try:
        d = load_data_pickle(raw, f)
        data, labels = d["data"], d["labels"]
    except CompressError:
        raise
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
    if not meta.is_file():
        return list(CIFAR10_CLASSES)
    try:
        names = load_data_pickle(meta.read_bytes(), meta)["label_names"]
        if len(names) == 10:
            return [str(n) for n in names]
    except CompressError:
        raise
    except Exception:
        pass
    return list(CIFAR10_CLASSES)
