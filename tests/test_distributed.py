"""Data-parallel training on CPU (Gloo, 2 processes, tiny width): shards, DDP, SyncBatchNorm, torchrun."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from compress.cli import main
from compress.data import Loader
from compress.distributed import World, shard_size
from compress.errors import CompressError

ROOT = Path(__file__).resolve().parents[1]


def test_shards_of_a_batch_are_the_batch(sample):
    """Each rank's slice, with the augmentation drawn for the whole batch: put together, the ranks
    see exactly the batches one process sees."""
    x, y = sample.train_x[:96], sample.train_y[:96]

    def batches(shard):
        ld = Loader(x, y, 32, mean=(0, 0, 0), std=(1, 1, 1), shuffle=True, augment=True, drop_last=True,
                    generator=torch.Generator().manual_seed(3), shard=shard)
        return list(ld)

    whole = batches((0, 1))
    parts = [batches((r, 2)) for r in range(2)]
    assert len(whole) == 3
    for i, (xb, yb) in enumerate(whole):
        assert torch.equal(torch.cat([parts[0][i][0], parts[1][i][0]]), xb)
        assert torch.equal(torch.cat([parts[0][i][1], parts[1][i][1]]), yb)
    assert shard_size(128, World(0, 2)) == 64
    with pytest.raises(CompressError, match="does not split evenly"):
        shard_size(100, World(0, 3))


def _worker(rank, size, port, images, out, sync):
    """Two steps of training on `images` sample images, as rank `rank` of `size` (1: no group)."""
    sys.path.insert(0, str(ROOT))
    torch.set_num_threads(1)
    from compress.data import load_dataset
    from compress.models import ModelSpec
    from compress.train import TrainConfig, train

    if size > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(size))
        dist.init_process_group("gloo", rank=rank, world_size=size)
    data = load_dataset("sample", quiet=True)
    data.train_x, data.train_y = data.train_x[:images], data.train_y[:images]
    torch.manual_seed(0)
    model = ModelSpec("vgg11", width=0.125).build()
    train(model, data, TrainConfig(epochs=1, batch_size=128, warmup_epochs=0, eval_every=0), show=False, sync_bn=sync)
    torch.save(model.state_dict(), f"{out}.{rank}")
    if size > 1:
        dist.destroy_process_group()


@pytest.mark.parametrize("sync", [True, False])
def test_two_processes_match_one_at_the_same_global_batch(tmp_path, sync):
    """Parameters identical on both ranks; with --sync-bn equal to one process at the same global
    batch up to float reduction order (1e-4 after two steps; training is chaotic, so over whole
    epochs the difference grows like any two runs' float noise). Without it each rank normalises
    over its own 64 images, and the result differs measurably."""
    _worker(0, 1, 0, 256, tmp_path / "one", False)
    port = 29500 + (os.getpid() % 2000) + (7 if sync else 0)
    mp.spawn(_worker, args=(2, port, 256, tmp_path / "two", sync), nprocs=2)
    one, r0, r1 = (torch.load(f"{tmp_path / n}", weights_only=True) for n in ("one.0", "two.0", "two.1"))
    assert all(torch.equal(r0[k], r1[k]) for k in r0 if "running" not in k and "tracked" not in k)
    diff = max((one[k].float() - r0[k].float()).abs().max().item() for k in one if "num_batches" not in k)
    if sync:
        assert diff < 1e-4
    else:
        assert diff > 1e-3


def test_torchrun_train_writes_one_checkpoint_from_rank_zero(tmp_path):
    out = tmp_path / "d.pt"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(29500 + os.getpid() % 2000 + 13), "-m", "compress", "train", "--model", "vgg11", "--width", "0.125",
           "--epochs", "1", "--data", "sample", "--batch-size", "128", "--sync-bn", "--out", str(out)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "data-parallel: 2 processes (Gloo), global batch 128 = 64 per process" in r.stdout
    assert r.stdout.count("saved to") == 1  # rank 0 speaks for all
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.pt", "d.rewind.pt"]  # as one process writes
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["meta"]["complete"] and ckpt["meta"]["dataset"]["val_images"] == 814
    assert ckpt["meta"]["history"][0]["images_per_s"] > 0


def test_commands_that_do_not_run_data_parallel_yet_say_so(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["slim", str(tmp_path / "m.pt"), "--out", str(tmp_path / "x.pt")]) == 2
    assert "does not run under torchrun yet" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()


def _torchrun(args, tmp_path, port_offset):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), COMPRESS_CACHE=str(tmp_path / "cache"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(29500 + os.getpid() % 2000 + port_offset), "-m", "compress", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _files(folder: Path) -> list[str]:
    import re

    return sorted(re.sub(r"acc_\d+\.\d+", "acc_X", str(p.relative_to(folder))) for p in folder.rglob("*") if p.is_file())


def test_omp_filter_under_torchrun_writes_the_files_one_process_writes(tmp_path, monkeypatch):
    """Masks are computed on every rank and checked equal (else the run stops); one run folder, rank
    0's, with the same files a single process writes; pruned filters exactly zero; no scratch left."""
    args = ["filter", "--model", "vgg11", "--width", "0.125", "--ratio", "0.25", "--omp", "--epochs", "1",
            "--dense-epochs", "1", "--batch-size", "128", "--data", "sample", "--no-bench", "--no-quantize"]
    r = _torchrun(args + ["--out", str(tmp_path / "two")], tmp_path, 21)
    assert r.returncode == 0, r.stderr[-3000:]
    monkeypatch.setenv("COMPRESS_CACHE", str(tmp_path / "cache1"))
    assert main(args + ["--out", str(tmp_path / "one")]) == 0
    assert _files(tmp_path / "two") == _files(tmp_path / "one")
    import json

    two = json.loads((tmp_path / "two" / "manifest.json").read_text())
    sparsity = json.loads((tmp_path / "two" / "sparsity.json").read_text())
    assert sparsity["overall"] >= 0.25 and two["result"]["sparsity"] == sparsity["overall"]
    ckpt = torch.load(tmp_path / "two" / two["result"]["path"], weights_only=True)
    for name, keep in ckpt["masks"].items():
        assert torch.all(ckpt["state_dict"][name][~keep] == 0)
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob(".compress-rank1-*"))


def test_a_sweep_split_over_two_ranks_gives_the_same_table(tiny_dense, tmp_path, monkeypatch):
    import csv

    _, dense = tiny_dense
    args = ["sweep", str(dense), "--data", "sample", "--first", "0.3", "--stop", "0.9", "--step", "0.1",
            "--criterion", "magnitude,taylor"]
    r = _torchrun(args + ["--out", str(tmp_path / "two")], tmp_path, 33)
    assert r.returncode == 0, r.stderr[-3000:]
    assert main(args + ["--out", str(tmp_path / "one")]) == 0

    def table(folder):
        with (folder / "sweep.csv").open() as f:
            return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]

    assert table(tmp_path / "two") == table(tmp_path / "one") and len(table(tmp_path / "one")) == 14
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


def test_resume_under_torchrun_continues_from_rank_zero_folder(tmp_path):
    """An IMP run stopped after its first round (its second round's checkpoint removed, as a kill
    would leave it) continues under torchrun: every rank resumes from rank 0's folder."""
    import json

    args = ["unstructured", "--model", "vgg11", "--width", "0.125", "--ratio", "0.5", "--imp", "2", "--epochs", "2",
            "--dense-epochs", "1", "--batch-size", "128", "--data", "sample", "--no-export", "--no-quantize",
            "--no-bench", "--no-report", "--out", str(tmp_path / "run")]
    assert _torchrun(args, tmp_path, 41).returncode == 0
    run = tmp_path / "run"
    done = json.loads((run / "manifest.json").read_text())
    (run / "rounds" / "round_2.pt").unlink()
    r = _torchrun(args + ["--resume"], tmp_path, 43)
    assert r.returncode == 0, r.stderr[-3000:]
    again = json.loads((run / "manifest.json").read_text())
    assert [k["round"] for k in again["rounds"]] == [1, 2] and (run / "rounds" / "round_2.pt").exists()
    assert again["rounds"][0] == done["rounds"][0]  # round 1 was not redone
    assert again["result"]["accuracy"] == done["result"]["accuracy"]  # seeded per round: the same result


def test_a_failing_rank_stops_the_others_without_a_hang(tmp_path):
    """Rank 0 cannot write its --out (the others write to scratch and go on into training): it
    exits with the one-line error, the others fail at their first collective instead of hanging,
    and nothing is written."""
    import time

    (tmp_path / "file").write_text("not a folder")
    args = ["train", "--model", "vgg11", "--width", "0.125", "--epochs", "1", "--data", "sample", "--batch-size", "128",
            "--out", str(tmp_path / "file" / "d.pt")]
    t0 = time.perf_counter()
    r = _torchrun(args, tmp_path, 51)
    assert r.returncode != 0 and time.perf_counter() - t0 < 120
    assert "error: cannot create folder" in " ".join(r.stderr.split())
    assert not list(tmp_path.rglob("*.pt"))
