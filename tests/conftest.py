"""Shared fixtures: the bundled sample (read once), tiny models, an isolated cache."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

os.environ.setdefault("COMPRESS_OFFLINE", "1")  # never try a download from the tests
torch.set_num_threads(min(2, os.cpu_count() or 1))

from compress.data import SAMPLE_ROOT, Dataset, load_dataset  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("COMPRESS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def sample() -> Dataset:
    return load_dataset("sample", quiet=True)


@pytest.fixture(scope="session")
def small(sample) -> Dataset:
    """512 train / 256 test images of the sample: enough to learn something in seconds."""
    return Dataset(name="cifar10-small", source=sample.source, classes=sample.classes,
                   train_x=sample.train_x[:512], train_y=sample.train_y[:512],
                   test_x=sample.test_x[:256], test_y=sample.test_y[:256], fingerprint="small")


@pytest.fixture
def sample_copy(tmp_path) -> Path:
    """A writable copy of the bundled sample, to corrupt."""
    dst = tmp_path / "cifar10"
    shutil.copytree(SAMPLE_ROOT, dst)
    for p in dst.rglob("*"):
        p.chmod(0o644 if p.is_file() else 0o755)
    return dst
