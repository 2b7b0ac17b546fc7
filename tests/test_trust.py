"""Nothing the toolchain loads runs code, and nothing that failed looks like success.

Each test crafts what an attacker or an unlucky user would hand the tool: a checkpoint whose
model source is `os:system`, a CIFAR batch that unpickles into a shell command, a folder of
images with a link loop, weights full of NaN, and checks the command ends in one line, a
non-zero exit, and no files."""
from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from compress.checkpoint import FORMAT, save_checkpoint
from compress.cli import main
from compress.models import ModelSpec


def _one_line_error(capsys, code: int) -> str:
    captured = capsys.readouterr()
    assert code == 2, captured.out + captured.err
    lines = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return captured.err


# --------------------------------------------------------------------------- model sources
def _evil_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"format": FORMAT, "kind": "dense",
                "model": {"name": "os:system", "num_classes": 10, "width": 1.0, "image_size": 32, "in_channels": 3,
                          "args": {"command": f"touch {marker}"}},
                "state_dict": {}, "meta": {"accuracy": 50.0, "dataset": {"source": "sample"}}}, path)
    return path


@pytest.mark.parametrize("argv", [
    ["sparsity", "{ckpt}"],
    ["export", "{ckpt}", "--out", "{tmp}/x.onnx"],
    ["quantize", "{ckpt}", "--out", "{tmp}/q/x.int8.onnx"],
    ["bench", "{ckpt}", "--out", "{tmp}/bench"],
    ["compare", "{ckpt}", "{ckpt}"],
    ["layers", "--checkpoint", "{ckpt}"],
    ["filter", "--checkpoint", "{ckpt}", "--ratio", "0.4", "--data", "sample", "--out", "{tmp}/run"],
])
def test_a_checkpoint_naming_code_runs_none(argv, tmp_path, capsys):
    marker = tmp_path / "MARKER"
    ckpt = _evil_checkpoint(tmp_path / "evil.pt", marker)
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main([a.format(ckpt=ckpt, tmp=tmp_path) for a in argv])
    err = _one_line_error(capsys, code)
    assert not marker.exists()
    assert "os:system" in err and "--trust-code" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no run folder, no bench folder, no ONNX


def test_trust_code_is_what_the_gate_reads(tmp_path, capsys):
    """With --trust-code the same file's code does run: the refusal above is the gate, not an accident."""
    marker = tmp_path / "MARKER"
    ckpt = _evil_checkpoint(tmp_path / "evil.pt", marker)
    assert main(["sparsity", str(ckpt), "--trust-code"]) == 2  # os.system returns an int, not a model
    assert marker.exists()
    assert "not a torch.nn.Module" in capsys.readouterr().err


def test_a_users_file_model_loads_when_named_or_trusted(tmp_path, capsys):
    src = tmp_path / "net.py"
    src.write_text("import torch.nn as nn\n"
                   "def net(num_classes=10):\n"
                   "    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),\n"
                   "                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))\n")
    spec = ModelSpec(f"{src}:net")
    ckpt = save_checkpoint(tmp_path / "dense.pt", {"kind": "dense", "model": spec.to_dict(),
                                                   "state_dict": spec.build().state_dict(), "meta": {}})
    assert main(["sparsity", str(ckpt)]) == 2
    assert "--trust-code" in capsys.readouterr().err
    assert main(["sparsity", str(ckpt), "--trust-code"]) == 0
    assert main(["layers", "--model", f"{src}:net", "--checkpoint", str(ckpt)]) == 0  # named on the command line


# --------------------------------------------------------------------------- dataset files
class _Shell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("name", ["data_batch_1", "test_batch", "batches.meta"])
def test_a_crafted_cifar_file_runs_no_code(name, sample_copy, tmp_path, capsys):
    marker = tmp_path / "MARKER"
    batches = sample_copy / "cifar-10-batches-py"
    (sample_copy / "MD5SUMS").unlink(missing_ok=True)
    (batches / "MD5SUMS").unlink(missing_ok=True)
    payload = {"data": _Shell(marker), "labels": [0]} if name != "batches.meta" else {"label_names": _Shell(marker)}
    (batches / name).write_bytes(pickle.dumps(payload, protocol=2))
    code = main(["train", "--model", "vgg11", "--width", "0.125", "--epochs", "1", "--data", str(sample_copy),
                 "--out", str(tmp_path / "d.pt")])
    err = _one_line_error(capsys, code)
    assert not marker.exists()
    assert "posix.system" in err or "os.system" in err or "system" in err
    assert not (tmp_path / "d.pt").exists()


def test_the_real_batches_still_read_as_data_only(sample):
    assert sample.train_x.dtype == torch.uint8 and sample.classes[0] == "airplane"


# --------------------------------------------------------------------------- image folders
def test_an_image_folder_with_a_link_loop_and_a_link_outside(sample, tmp_path, capsys):
    from compress.data import load_dataset
    from compress.data.imagefolder import write_image_folder

    folder = write_image_folder(sample, tmp_path / "imgs", classes=2, per_class=6)
    elsewhere = write_image_folder(sample, tmp_path / "elsewhere", classes=2, per_class=3)
    cls = sorted(p for p in folder.iterdir() if p.is_dir())[0]
    os.symlink(cls, cls / "loop")  # a folder inside itself
    os.symlink(sorted(elsewhere.iterdir())[0], cls / "outside")  # a folder outside the dataset
    ds = load_dataset(f"imagefolder:{folder}", quiet=True)
    total = ds.train_x.shape[0] + ds.test_x.shape[0]
    assert total == 12  # each image once: the loop is walked once, the outside link not at all
    assert "not followed" in capsys.readouterr().err


# --------------------------------------------------------------------------- bad weights, before any folder
def _with_state(ckpt: dict, state: dict, path):
    """The checkpoint `ckpt` of ours, saved at `path` with other weights."""
    return save_checkpoint(path, {**{k: v for k, v in ckpt.items() if k != "format"}, "state_dict": state})


def test_weights_of_another_architecture_leave_no_run_folder(tiny_dense, tmp_path, capsys):
    ckpt, _ = tiny_dense
    other = ModelSpec("vgg13", width=0.125).build().state_dict()
    path = _with_state(ckpt, other, tmp_path / "mixed.pt")
    code = main(["filter", "--checkpoint", str(path), "--ratio", "0.3", "--omp", "--epochs", "1",
                 "--out", str(tmp_path / "run")])
    err = _one_line_error(capsys, code)
    assert "do not fit" in err and not (tmp_path / "run").exists()


def test_weights_holding_nan_are_refused_on_load(tiny_dense, tmp_path, capsys):
    ckpt, _ = tiny_dense
    state = {k: v.clone() for k, v in ckpt["state_dict"].items()}
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first].view(-1)[0] = float("nan")
    path = _with_state(ckpt, state, tmp_path / "nan.pt")
    code = main(["unstructured", "--checkpoint", str(path), "--ratio", "0.5", "--omp", "--epochs", "1",
                 "--out", str(tmp_path / "run")])
    err = _one_line_error(capsys, code)
    assert "NaN" in err and not (tmp_path / "run").exists()
    foreign = tmp_path / "nan_state.pt"
    torch.save(state, foreign)
    code = main(["import", "--model", "vgg11", "--width", "0.125", "--checkpoint", str(foreign), "--data", "sample",
                 "--out", str(tmp_path / "imported.pt")])
    assert "NaN" in _one_line_error(capsys, code) and not (tmp_path / "imported.pt").exists()


# --------------------------------------------------------------------------- files go where the user said
def test_quantize_a_checkpoint_writes_only_under_out(tiny_dense, tmp_path):
    _, dense_path = tiny_dense
    src = tmp_path / "in"
    src.mkdir()
    ckpt = src / "dense.pt"
    shutil.copy(dense_path, ckpt)
    out = tmp_path / "out" / "x.int8.onnx"
    assert main(["quantize", str(ckpt), "--out", str(out), "--calibration", "64", "--accept-drop"]) == 0
    assert sorted(p.name for p in src.iterdir()) == ["dense.pt"]
    assert out.exists() and (out.parent / "dense.onnx").exists() and (out.parent / "export.json").exists()


# --------------------------------------------------------------------------- the data a checkpoint was trained on
def test_prune_reads_the_checkpoints_dataset_and_measures_dense_on_it(png_folder_and_dense, tmp_path, capsys):
    folder, dense = png_folder_and_dense
    from compress.checkpoint import load_checkpoint
    from compress.data import load_dataset

    ckpt = load_checkpoint(dense)
    ds = load_dataset(f"imagefolder:{folder}", quiet=True)
    ckpt["meta"] = {"accuracy": 99.0, "dataset": {**ds.describe(), "fingerprint": "from-elsewhere"}}
    path = save_checkpoint(tmp_path / "dense.pt", {k: v for k, v in ckpt.items() if k != "format"})
    run = tmp_path / "run"
    code = main(["filter", "--checkpoint", str(path), "--ratio", "0.3", "--omp", "--epochs", "1", "--batch-size", "16",
                 "--out", str(run), "--no-export", "--no-bench", "--no-report", "--no-quantize"])
    assert code == 0, capsys.readouterr().err
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["dataset"]["num_classes"] == 3  # the folder it was trained on, not CIFAR-10
    assert manifest["dense"]["accuracy"] != 99.0  # measured here, not the stored number
    assert "measured on" in capsys.readouterr().err


# --------------------------------------------------------------------------- imported weights and validation
def test_imported_weights_say_validation_is_optimistic_unless_val_data(tmp_path, capsys, sample):
    from compress.data.imagefolder import write_image_folder

    spec = ModelSpec("vgg11", width=0.125)
    weights = tmp_path / "w.pt"
    torch.manual_seed(0)
    torch.save(spec.build().state_dict(), weights)
    base = ["import", "--model", "vgg11", "--width", "0.125", "--checkpoint", str(weights), "--data", "sample"]
    assert main([*base, "--out", str(tmp_path / "a.pt")]) == 0
    assert "optimistic" in capsys.readouterr().err
    held_out = write_image_folder(sample, tmp_path / "held", classes=10, per_class=4)
    assert main([*base, "--out", str(tmp_path / "b.pt"), "--val-data", f"imagefolder:{held_out}"]) == 0
    assert "optimistic" not in capsys.readouterr().err
    meta = torch.load(tmp_path / "b.pt", weights_only=True)["meta"]
    assert meta["dataset"]["val_split"]["separate"] and meta["dataset"]["val_images"] == 40
    assert meta["dataset"]["train_images"] == 4068  # nothing carved out of the training split


# --------------------------------------------------------------------------- a benchmark that measured nothing
BENCH_QUICK = ["--batch-sizes", "1", "--warmup", "0", "--repeats", "2", "--force"]


def test_bench_that_measures_nothing_fails(tiny_dense, tmp_path, capsys):
    _, path = tiny_dense
    code = main(["bench", str(path), "--runtimes", "ort-cuda", "--out", str(tmp_path / "b"), *BENCH_QUICK])
    captured = capsys.readouterr()
    assert code == 1 and "nothing was measured" in captured.err
    rows = json.loads((tmp_path / "b" / "bench.json").read_text())["results"]
    assert {r["status"] for r in rows} == {"skipped"}  # not applicable on a CPU: skipped, with why


def test_a_runtime_that_breaks_is_failed_not_skipped(tiny_dense, tmp_path, capsys, monkeypatch):
    from compress.timing import runtimes

    _, path = tiny_dense

    def broken(self, session, model, batch_size, ctx):
        raise RuntimeError("session crashed")

    monkeypatch.setattr(runtimes.OrtCPU, "call", broken)
    code = main(["bench", str(path), "--runtimes", "torch,ort-cpu", "--out", str(tmp_path / "b"), *BENCH_QUICK])
    captured = capsys.readouterr()
    assert code == 1 and "failed" in captured.err
    rows = json.loads((tmp_path / "b" / "bench.json").read_text())["results"]
    status = {r["runtime"]: r["status"] for r in rows}
    assert status == {"torch": "ok", "ort-cpu": "failed"}
    assert "session crashed" in next(r["reason"] for r in rows if r["runtime"] == "ort-cpu")
