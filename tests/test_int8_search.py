"""Accuracy-aware INT8 and quantization-aware training: the search's order and choice, a forced
gate through the CLI, QAT's exported file (INT8 nodes, zeros kept, close to its fake-quant model)."""
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from compress.cli import main
from compress.export import export_checkpoint, ort_session
from compress.export.int8_search import Attempt, search
from compress.export.quantize import quantize

pytestmark = pytest.mark.usefixtures("one_thread")


def _attempt(name, drop, speedup, method="minmax", excluded=()):
    return Attempt(name, Path(name), method, tuple(excluded), drop, 80.0, 80.0 - drop, speedup)


def _walk(drops: dict[str, float], speeds: dict[str, float] | None = None, max_drop=0.5, qat_drop=None):
    """search() over made-up attempts: which were tried, in order, and which was shipped."""
    speeds = speeds or {}

    def try_file(name, method, excluded):
        return _attempt(name, drops[name], speeds.get(name, 2.0), method, excluded)

    def qat(best):
        return None if qat_drop is None else _attempt("QAT 2 epochs", qat_drop, 2.5, best.method)

    first = _attempt("calibration minmax", drops["calibration minmax"], speeds.get("calibration minmax", 3.0))
    chosen, tried = search(first, try_file, lambda a: ["conv3", "conv1", "conv2"], max_drop,
                           methods=("minmax", "entropy", "percentile"), max_fp32_layers=2, qat=qat)
    return (chosen.name if chosen else None), [a.name for a in tried]


def test_within_the_gate_at_once_nothing_else_is_tried():
    assert _walk({"calibration minmax": 0.2}) == ("calibration minmax", ["calibration minmax"])


def test_the_fastest_calibration_within_the_gate_is_shipped():
    shipped, tried = _walk({"calibration minmax": 2.0, "calibration entropy": 0.3, "calibration percentile": 0.1},
                           speeds={"calibration entropy": 3.1, "calibration percentile": 2.9})
    assert tried == ["calibration minmax", "calibration entropy", "calibration percentile"]
    assert shipped == "calibration entropy"  # both within the gate: the faster one


def test_then_the_worst_layers_in_fp32_one_at_a_time_with_the_best_calibration():
    drops = {"calibration minmax": 2.0, "calibration entropy": 1.5, "calibration percentile": 1.8,
             "fp32 layers: conv3": 0.9, "fp32 layers: conv3, conv1": 0.4}
    shipped, tried = _walk(drops)
    assert tried[3:] == ["fp32 layers: conv3", "fp32 layers: conv3, conv1"]
    assert shipped == "fp32 layers: conv3, conv1"


def test_qat_comes_last_and_nothing_within_the_gate_ships_nothing():
    drops = {"calibration minmax": 2.0, "calibration entropy": 1.5, "calibration percentile": 1.8,
             "fp32 layers: conv3": 0.9, "fp32 layers: conv3, conv1": 0.8}
    assert _walk(drops, qat_drop=0.3) == ("QAT 2 epochs", [*drops, "QAT 2 epochs"])
    assert _walk(drops, qat_drop=0.9) == (None, [*drops, "QAT 2 epochs"])
    assert _walk(drops) == (None, list(drops))  # no QAT possible (an ONNX file only)


@pytest.fixture(scope="module")
def pruned(tiny_dense, small, tmp_path_factory):
    """A tiny VGG11 with 70% of its weights pruned (masks saved), as a checkpoint of ours."""
    from compress.checkpoint import save_checkpoint
    from compress.prune.masks import apply_masks, unstructured_masks
    from compress.prune.ratios import allocate
    from compress.prune.rebuild import model_from_checkpoint

    ckpt, _ = tiny_dense
    model = model_from_checkpoint(ckpt)
    masks = unstructured_masks(model, allocate(model, "unstructured", 0.7))
    apply_masks(model, masks)
    path = tmp_path_factory.mktemp("qat") / "pruned.pt"
    save_checkpoint(path, {**ckpt, "kind": "pruned", "state_dict": model.state_dict(), "masks": masks,
                           "meta": {**ckpt["meta"], "prune_kind": "unstructured"}})
    return path, masks


def test_a_forced_gate_walks_every_attempt_and_fails_naming_them(pruned, small, tmp_path, capsys):
    """--max-drop below any possible drop: calibrations, fp32 layers, then QAT are tried and
    recorded; nothing is written, and the error lists what was tried. --accept-drop then ships
    the attempt with the smallest drop, with every attempt in the report."""
    path, _ = pruned
    local = tmp_path / "pruned.pt"
    local.write_bytes(path.read_bytes())
    args = ["quantize", str(local), "--calibration", "64", "--data", "sample", "--max-drop", "-100"]
    assert main(args) == 2
    err = " ".join(capsys.readouterr().err.split())
    for name in ("calibration minmax", "calibration entropy", "calibration percentile", "fp32 layers: node_",
                 "QAT 2 epochs"):
        assert name in err, name
    assert not (tmp_path / "pruned.int8.onnx").exists()
    assert main([*args, "--accept-drop"]) == 0
    out = capsys.readouterr().out
    assert "INT8 attempts" in out
    assert (tmp_path / "pruned.int8.onnx").exists()


def test_qat_exports_an_int8_file_close_to_its_fake_quant_model(pruned, small, tmp_path):
    """A few QAT steps: the INT8 file passes the checker, holds QDQ nodes, keeps pruned weights at
    zero, and its ONNX Runtime outputs are close to the fake-quantized PyTorch model's."""
    from compress.checkpoint import load_checkpoint, save_checkpoint
    from compress.export.qat import QATConfig, qat_finetune
    from compress.prune.rebuild import model_from_checkpoint

    path, masks = pruned
    ckpt = load_checkpoint(path)
    fq, tuned, result = qat_finetune(model_from_checkpoint(ckpt), small, QATConfig(epochs=1), masks=masks, show=False)
    for name, mask in masks.items():
        assert (tuned.state_dict()[name][mask == 0] == 0).all(), name
    save_checkpoint(tmp_path / "qat.pt", {**ckpt, "state_dict": tuned.state_dict()})
    export_checkpoint(tmp_path / "qat.pt", tmp_path / "qat.onnx", data=small, compact=False)
    r = quantize(tmp_path / "qat.onnx", tmp_path / "qat.int8.onnx", small, calibration=256, max_drop=100,
                 search=False)
    onnx.checker.check_model(str(tmp_path / "qat.int8.onnx"), full_check=True)
    ops = {n.op_type for n in onnx.load(str(tmp_path / "qat.int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert r["int8_weight_zero_fraction"] >= 0.69
    from compress.data import Loader

    xb, _ = next(iter(Loader(small.test_x[:128], small.test_y[:128], 128, mean=small.mean, std=small.std)))
    with torch.no_grad():
        want = fq(xb).numpy()
    got = ort_session(tmp_path / "qat.int8.onnx").run(None, {"images": xb.numpy()})[0]
    # ONNX Runtime calibrates its own activation ranges and quantizes a few more tensors (pooling,
    # the classifier's output) than the fake-quant model does: close, not equal
    assert (want.argmax(1) == got.argmax(1)).mean() >= 0.9
    assert np.abs(want - got).mean() < 0.1 * np.abs(want).max()
    assert np.abs(want - got).max() < 0.4 * np.abs(want).max()


def test_qat_option_through_the_cli(pruned, tmp_path, capsys):
    path, _ = pruned
    local = tmp_path / "pruned.pt"
    local.write_bytes(path.read_bytes())
    assert main(["quantize", str(local), "--calibration", "64", "--data", "sample", "--qat", "1",
                 "--max-drop", "100"]) == 0
    assert "after 1 epochs of QAT" in " ".join(capsys.readouterr().out.split())
    assert (tmp_path / "pruned.int8.onnx").exists()
    # QAT that misses the gate: one error naming the layers that lose most, no INT8 file
    assert main(["quantize", str(local), "--calibration", "64", "--data", "sample", "--qat", "1", "--max-drop", "-100",
                 "--out", str(tmp_path / "missed.onnx")]) == 2
    assert "the layers that lose most" in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "missed.onnx").exists()
    onnx_only = tmp_path / "pruned.onnx"
    assert main(["quantize", str(onnx_only), "--qat", "1", "--out", str(tmp_path / "x.onnx")]) == 2
    assert "pass the checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_no_search_tries_nothing_else_and_never_runs_the_layer_debugger():
    def worst(attempt):
        raise AssertionError("the QDQ debugger ran although the search is off")

    first = _attempt("calibration minmax", 2.0, 3.0)
    assert search(first, None, worst, 0.5, methods=(), max_fp32_layers=0) == (None, [first])
