"""Shared fixtures: the bundled sample (read once), tiny models, an isolated cache."""
from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest
import torch

os.environ.setdefault("COMPRESS_OFFLINE", "1")  # never try a download from the tests
# With pytest-xdist (-n 2) the cores are shared out among the workers, never
# oversubscribed, and subprocesses (torchrun, the GPU kit from a plain checkout) get the same share.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, min(2, os.cpu_count() or 1) // WORKERS)
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
os.environ["COLUMNS"] = "1000"  # rich wraps no table, notice or path that a test looks for
# training in fp32 on every CI CPU: bf16 autocast on CPUs with bf16 units (the product's default
# there) would make the suite's numbers depend on the machine; tests of bf16 ask for it
os.environ["COMPRESS_CPU_BF16"] = "0"
torch.set_num_threads(THREADS)

from compress.data import SAMPLE_ROOT, Dataset, load_dataset  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("COMPRESS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(autouse=True)
def _sigchld_restored():
    """The SIGCHLD handler as it was before each test. torch's DataLoader installs a Python SIGCHLD
    handler in the main process the first time it starts workers, and never removes it; in this
    suite that handler, called as a later test's mp.spawn children exited, crashed the pytest
    process (SIGSEGV in pymalloc: heap corruption, after the OpenVINO tests had run; no Python
    traceback; an xdist worker then died and xdist waited forever). One test's DataLoader workers
    should not be watched through the next test's processes; torch still notices a dead worker by
    polling (`_MultiProcessingDataLoaderIter._try_get_data`)."""
    before = signal.getsignal(signal.SIGCHLD)
    yield
    if signal.getsignal(signal.SIGCHLD) is not before:
        signal.signal(signal.SIGCHLD, before)


@pytest.fixture(autouse=True)
def _no_code_trust_between_tests():
    """What one test allowed to import (a --model it named, --trust-code) is forgotten after it."""
    from compress.models import sources

    yield
    sources.reset_code_trust()


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


@pytest.fixture
def one_thread():
    """Tiny models (and SynFlow's float64 convolutions) spend their time in many small ops; on the
    shared, oversubscribed 2-core test machine each 2-thread op waits for a second core, so one
    thread is several times faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_dense(small, tmp_path_factory):
    """A tiny VGG11 trained for one epoch of the small set (seconds to make): (checkpoint, path)."""
    from compress.checkpoint import load_checkpoint, save_checkpoint
    from compress.models import ModelSpec
    from compress.train import TrainConfig, evaluate, train

    torch.manual_seed(0)
    spec = ModelSpec("vgg11", width=0.125)
    model = spec.build()
    train(model, small, TrainConfig(epochs=1, lr=0.05, batch_size=64, warmup_epochs=0.2), show=False)
    path = tmp_path_factory.mktemp("dense") / "dense.pt"
    save_checkpoint(path, {"kind": "dense", "model": spec.to_dict(), "state_dict": model.state_dict(),
                           "meta": {"accuracy": evaluate(model, small)[0], "dataset": small.describe()}})
    return load_checkpoint(path), path


@pytest.fixture(scope="session")
def png_folder_and_dense(sample, tmp_path_factory):
    """A 3-class PNG folder from the sample and an (untrained) dense VGG11 checkpoint for it."""
    from compress.checkpoint import save_checkpoint
    from compress.data.imagefolder import write_image_folder
    from compress.models import ModelSpec

    root = tmp_path_factory.mktemp("pngrun")
    folder = write_image_folder(sample, root / "pngs", classes=3, per_class=20)
    spec = ModelSpec("vgg11", num_classes=3, width=0.125)
    torch.manual_seed(0)
    dense = save_checkpoint(root / "dense.pt", {"kind": "dense", "model": spec.to_dict(),
                                                "state_dict": spec.build().state_dict(), "meta": {}})
    return folder, dense
