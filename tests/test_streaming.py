"""Image folders streamed from disk through DataLoader workers: the same batches, the same training
as the in-memory path, under one process and two (Gloo); which path was taken is said."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from compress.checkpoint import load_checkpoint
from compress.cli import main
from compress.data import Loader, eval_loader, load_dataset, with_validation
from compress.data.imagefiles import ImageFiles
from compress.data.imagefolder import load_image_folder, write_image_folder
from compress.errors import CompressError

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["train", "--model", "vgg11", "--width", "0.125", "--epochs", "1", "--batch-size", "16"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folder(sample, tmp_path_factory):
    """4 classes x 30 PNGs of the sample: 96 train / 24 held-out images."""
    return write_image_folder(sample, tmp_path_factory.mktemp("stream") / "pngs", 4, 30)


def _batches(ds, shard):
    ld = Loader(ds.train_x, ds.train_y, 16, mean=ds.mean, std=ds.std, shuffle=True, augment=True, drop_last=True,
                generator=torch.Generator().manual_seed(5), shard=shard)
    return list(ld)


def test_streamed_batches_are_the_in_memory_batches(folder, capsys):
    mem = load_image_folder(folder)
    assert "held in memory as one uint8 tensor (360 KiB" in " ".join(capsys.readouterr().err.split())
    st = load_image_folder(folder, stream=True, workers=2)
    assert "streamed from disk through 2 DataLoader workers per process" in " ".join(capsys.readouterr().err.split())
    assert isinstance(st.train_x, ImageFiles) and st.train_x.shape == mem.train_x.shape
    assert st.describe()["path"].startswith("streamed (--stream)") and mem.describe()["path"] == "in memory"
    assert st.mean == mem.mean and st.std == mem.std  # fewer than 2000 images: the sample is all of them
    for shard in ((0, 1), (0, 2), (1, 2)):  # every rank's slice of every global batch, augmentation included
        for (a, ya), (b, yb) in zip(_batches(mem, shard), _batches(st, shard), strict=True):
            assert torch.equal(a, b) and torch.equal(ya, yb)
    mem, st = with_validation(mem, 0.2), with_validation(st, 0.2)
    for split in ("train", "val", "test"):
        for (a, ya), (b, yb) in zip(eval_loader(mem, 10, split), eval_loader(st, 10, split), strict=True):
            assert torch.equal(a, b) and torch.equal(ya, yb)


def test_the_path_follows_the_memory_limit(folder, monkeypatch, capsys):
    monkeypatch.setenv("COMPRESS_STREAM_ABOVE_MB", "0.1")
    ds = load_dataset(f"imagefolder:{folder}")
    assert isinstance(ds.train_x, ImageFiles)
    said = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "(decoded, the images would take 360 KiB; above 102 KiB, COMPRESS_STREAM_ABOVE_MB)" in said
    with pytest.raises(CompressError, match="--stream reads image folders"):
        load_dataset("sample", stream=True)


def test_streamed_training_is_the_in_memory_training(folder, tmp_path, capsys):
    """One process: the same checkpoint, weight for weight, from either path."""
    data = ["--data", f"imagefolder:{folder}"]
    assert main([*TRAIN, *data, "--out", str(tmp_path / "mem.pt")]) == 0
    assert main([*TRAIN, *data, "--stream", "--workers", "2", "--out", str(tmp_path / "st.pt")]) == 0
    mem, st = load_checkpoint(tmp_path / "mem.pt"), load_checkpoint(tmp_path / "st.pt")
    assert all(torch.equal(mem["state_dict"][k], st["state_dict"][k]) for k in mem["state_dict"])
    assert mem["meta"]["accuracy"] == st["meta"]["accuracy"]
    assert st["meta"]["dataset"]["path"].startswith("streamed") and mem["meta"]["dataset"]["path"] == "in memory"


def test_an_unreadable_file_stops_a_streamed_run_with_one_line(sample, tmp_path, capsys):
    root = write_image_folder(sample, tmp_path / "pngs", 2, 40)
    victim = sorted((root / sample.classes[1]).iterdir())[3]
    victim.write_bytes(victim.read_bytes()[:60])  # truncated: its header still reads, its pixels do not
    code = main([*TRAIN, "--data", f"imagefolder:{root}", "--stream", "--workers", "2", "--out", str(tmp_path / "m.pt")])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and lines[-1].startswith(f"error: cannot read image {victim}"), lines[-3:]
    assert not (tmp_path / "m.pt").exists()
    # mid-epoch, in a DataLoader worker: the same one line, not the worker's traceback
    files = sorted((root / sample.classes[1]).iterdir())
    ld = Loader(ImageFiles(files, 32, workers=2), torch.zeros(len(files), dtype=torch.int64), 4, mean=(0,) * 3,
                std=(1,) * 3)
    with pytest.raises(CompressError) as e:
        list(ld)
    assert str(e.value).startswith(f"cannot read image {victim} (") and "\n" not in str(e.value)


def _worker(rank, port, folder, out):
    """As rank `rank` of 2: the same training from the in-memory and the streamed folder."""
    sys.path.insert(0, str(ROOT))
    torch.set_num_threads(1)
    from compress.models import ModelSpec
    from compress.train import TrainConfig, train

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    dist.init_process_group("gloo", rank=rank, world_size=2)
    for stream in (False, True):
        data = load_image_folder(folder, quiet=True, stream=stream, workers=2)
        torch.manual_seed(0)
        model = ModelSpec("vgg11", num_classes=4, width=0.125).build()
        train(model, data, TrainConfig(epochs=1, batch_size=16, warmup_epochs=0, eval_every=0), show=False)
        torch.save(model.state_dict(), f"{out}.{rank}.{int(stream)}")
    dist.destroy_process_group()


def test_two_processes_stream_what_they_hold_in_memory(folder, tmp_path):
    """Two Gloo processes, each decoding its share of every global batch in its own DataLoader
    workers, train exactly the model two in-memory processes train."""
    mp.spawn(_worker, args=(29500 + os.getpid() % 2000 + 31, folder, tmp_path / "m"), nprocs=2)
    m = {(r, s): torch.load(f"{tmp_path / 'm'}.{r}.{s}", weights_only=True) for r in (0, 1) for s in (0, 1)}
    for k in m[0, 0]:
        assert torch.equal(m[0, 0][k], m[0, 1][k]) and torch.equal(m[1, 0][k], m[1, 1][k]), k


def test_torchrun_streams_a_folder(folder, tmp_path):
    """The CLI under torchrun with --stream: says so, writes one checkpoint, and with --sync-bn matches
    one in-memory process at the same global batch up to float reduction order."""
    data = ["--data", f"imagefolder:{folder}"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(29500 + os.getpid() % 2000 + 37), "-m", "compress", *TRAIN, *data, "--stream", "--sync-bn",
           "--out", str(tmp_path / "two.pt")]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    said = " ".join(r.stderr.split())
    assert said.count("streamed from disk through 1 DataLoader worker per process") == 1  # rank 0 speaks
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two.pt", "two.rewind.pt"]
    assert main([*TRAIN, *data, "--out", str(tmp_path / "one.pt")]) == 0
    one, two = (load_checkpoint(tmp_path / n)["state_dict"] for n in ("one.pt", "two.pt"))
    diff = max((one[k].float() - two[k].float()).abs().max().item() for k in one if "num_batches" not in k)
    assert diff < 1e-4
