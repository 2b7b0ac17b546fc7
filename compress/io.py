"""Writing files whole or not at all, and failing before work starts when they cannot be written.

The bottom of the house: checkpoints, manifests, ratio files, figures, ONNX files and benchmark
tables all go through `atomic_write`, so an interrupted run never leaves a half-written file.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from compress.errors import CompressError


def check_writable(path: Path, force: bool = True, create: bool = False) -> Path:
    """Fail early (before hours of training) if `path` cannot be written, or exists without force.

    Nothing is created (`create`: the missing folders are, for a write that follows at once):
    a command that fails after this check leaves no empty folder behind."""
    path = Path(path)
    if path.exists() and not force:
        raise CompressError(f"{path} already exists", "pass --force to overwrite it, or choose another --out")
    parent = path.parent if str(path.parent) else Path(".")
    existing = parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise CompressError(f"cannot create folder {parent}: {existing} is a file", "choose another --out")
    if not os.access(existing, os.W_OK):
        raise CompressError(f"folder {existing} is not writable", "choose a writable --out")
    if create:
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CompressError(f"cannot create folder {parent} ({e.strerror})", "choose a writable --out") from None
    return path


def atomic_write(path: Path, write) -> Path:
    """Call `write(tmp_path)`, then rename onto `path`: readers never see a partial file."""
    path = Path(path)
    check_writable(path, create=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would surprise whoever shares the run folder
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
