"""`compress quantize` and the quantize stage: INT8 ONNX from ONNX Runtime's tools, accuracy
re-measured on the whole test split, calibration on training images only, clear errors."""
import json

import numpy as np
import onnx
import pytest
import torch

from compress.cli import main
from compress.errors import CompressError
from compress.export import export_checkpoint, ort_session
from compress.export.onnx_export import export_onnx
from compress.export.quantize import CalibrationReader, quantize

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def fp32(tiny_dense, small, tmp_path_factory):
    """The tiny trained VGG11 exported by the toolchain (its input contract in the metadata)."""
    _, path = tiny_dense
    out = tmp_path_factory.mktemp("q") / "dense.onnx"
    export_checkpoint(path, out, data=small, compact=False)
    return out


def test_end_to_end(fp32, small, tmp_path):
    out = tmp_path / "dense.int8.onnx"
    r = quantize(fp32, out, small, calibration=128)
    onnx.checker.check_model(str(out), full_check=True)
    proto = onnx.load(str(out))
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["compress.precision"] == "int8" and json.loads(meta["compress.quantization"])["calibration_split"] == "train"
    assert "compress.input" in meta  # the contract travels with the INT8 file too
    x = np.zeros((3, 3, 32, 32), np.float32)
    assert ort_session(out).run(None, {"images": x})[0].shape == (3, 10)
    assert r["test_images"] == small.test_x.shape[0]  # the whole test split, not a sample of it
    assert 0.9 <= r["agreement"] <= 1.0 and r["int8_bytes"] < 0.4 * r["fp32_bytes"]
    assert abs(r["drop"] - (r["fp32_acc"] - r["int8_acc"])) < 0.011
    assert fp32.exists()


def test_calibration_reads_the_training_split_only(fp32, small, tmp_path, monkeypatch):
    seen = []
    original = CalibrationReader.__init__

    def spy(self, x, y, contract, batch=64):
        seen.append(x.clone())
        original(self, x, y, contract, batch)

    monkeypatch.setattr(CalibrationReader, "__init__", spy)
    quantize(fp32, tmp_path / "q.onnx", small, calibration=64)
    train = {bytes(img.numpy().tobytes()) for img in small.train_x}
    test = {bytes(img.numpy().tobytes()) for img in small.test_x}
    calibrated = [bytes(img.numpy().tobytes()) for img in seen[0]]
    assert len(calibrated) == 64 and all(c in train for c in calibrated)
    assert not any(c in test for c in calibrated)


def test_the_drop_gate_reads_validation_when_there_is_one(fp32, small, tmp_path):
    """The validation images are the test images here, with the test split blanked: the gate reads
    the real images (the numbers a plain run reports as test), the report keeps the blank test split."""
    import dataclasses


    data = dataclasses.replace(small, val_x=small.test_x, val_y=small.test_y, test_x=torch.zeros_like(small.test_x),
                               extra={"val_split": {"fraction": 0}})
    r = quantize(fp32, tmp_path / "q.onnx", data, calibration=64, max_drop=100)
    plain = quantize(fp32, tmp_path / "p.onnx", small, calibration=64, max_drop=100)
    assert r["gate"] == {"split": "val", "drop": r["val_drop"]} and plain["gate"]["split"] == "test"
    assert (r["val_fp32_acc"], r["val_int8_acc"]) == (plain["fp32_acc"], plain["int8_acc"])
    assert r["val_images"] == r["test_images"] == small.test_x.shape[0]


def test_drop_over_max_fails_and_keeps_fp32(fp32, tmp_path, capsys):
    out = tmp_path / "q.onnx"
    # a negative threshold fails any model: the path of a real accuracy drop, deterministically
    code = main(["quantize", str(fp32), "--out", str(out), "--max-drop", "-5", "--calibration", "64", "--no-search"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "over --max-drop -5" in err and "the layers that lose most" in err and "dB" in err
    assert "tried calibration minmax" in err
    assert not out.exists() and fp32.exists()
    assert main(["quantize", str(fp32), "--out", str(out), "--max-drop", "-5", "--calibration", "64",
                 "--accept-drop", "--no-search"]) == 0
    assert "accepted a drop" in " ".join(capsys.readouterr().err.split())
    assert out.exists()


def test_exclude_by_weight_name_keeps_that_layer_fp32(fp32, small, tmp_path):
    r = quantize(fp32, tmp_path / "q.onnx", small, calibration=64, exclude=("features.0.weight",))
    assert len(r["excluded"]) == 1 and r["excluded"][0].startswith("node_")
    with pytest.raises(CompressError, match="neither a node nor a layer weight"):
        quantize(fp32, tmp_path / "q2.onnx", small, calibration=64, exclude=("features.99.weight",))


def test_pt_input_is_exported_first(tiny_dense, tmp_path, capsys):
    _, path = tiny_dense
    local = tmp_path / "dense.pt"
    local.write_bytes(path.read_bytes())
    assert main(["quantize", str(local), "--calibration", "64", "--data", "sample"]) == 0
    assert (tmp_path / "dense.onnx").exists() and (tmp_path / "dense.int8.onnx").exists()
    assert "predictions agree" in capsys.readouterr().out


def test_bad_inputs_are_one_line(fp32, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not an onnx file")
    no_contract = export_onnx(_plain_model(), _spec(), tmp_path / "plain.onnx")  # no contract recorded
    for argv, message in (([str(corrupt)], "not a valid ONNX model"),
                          ([str(no_contract)], "no recorded input contract"),
                          ([str(fp32), "--calibration", "0"], "at least one image"),
                          ([str(tmp_path / "missing.onnx")], "does not exist")):
        assert main(["quantize", *argv, "--out", str(tmp_path / "x.onnx")]) == 2
        err = capsys.readouterr().err
        assert message in " ".join(err.split()) and "Traceback" not in err
    assert not (tmp_path / "x.onnx").exists()


def _spec():
    from compress.models import ModelSpec

    return ModelSpec("vgg11", width=0.125)


def _plain_model():
    return _spec().build().eval()


def test_pruned_zeros_stay_zero_in_int8(tiny_dense, small, tmp_path):
    """Symmetric weight scales map a pruned weight to exactly 0 in INT8."""
    from compress.prune.masks import apply_masks, unstructured_masks
    from compress.prune.ratios import allocate
    from compress.prune.rebuild import model_from_checkpoint

    ckpt, _ = tiny_dense
    model = model_from_checkpoint(ckpt)
    apply_masks(model, unstructured_masks(model, allocate(model, "unstructured", 0.7)))
    from compress.models import ModelSpec

    spec = ModelSpec.from_dict(ckpt["model"])
    fp32 = export_onnx(model, spec, tmp_path / "u.onnx", contract={"mean": list(small.mean), "std": list(small.std),
                                                                   "image_size": 32})
    r = quantize(fp32, tmp_path / "u.int8.onnx", small, calibration=64, max_drop=100)
    assert r["int8_weight_zero_fraction"] >= 0.7


def test_an_onnx_input_is_gated_on_the_validation_split_its_model_was_trained_beside(tiny_dense, tmp_path):
    """`quantize X.pt` gated on the checkpoint's validation split; `quantize X.onnx` read no split
    and gated on test. The export now records the split, and the ONNX path holds out the same images."""
    import argparse

    from compress.checkpoint import save_checkpoint
    from compress.cli.deploy import Quantize
    from compress.data import load_dataset
    from compress.data.dataset import with_validation
    from compress.export import export_checkpoint

    ckpt, _ = tiny_dense
    split = with_validation(load_dataset("sample", quiet=True), 0.2, seed=3)
    ckpt = {**ckpt, "meta": {**ckpt["meta"], "dataset": split.describe()}}
    pt = tmp_path / "dense.pt"
    save_checkpoint(pt, ckpt)
    onnx_path = tmp_path / "dense.onnx"
    export_checkpoint(pt, onnx_path, data="sample", compact=False)
    args = argparse.Namespace(model=onnx_path, data="auto", val_split=None, val_data=None, calibration=64)
    _, data = Quantize.inputs(args)
    assert data.has_val and torch.equal(data.val_y, split.val_y) and torch.equal(data.val_x, split.val_x)
