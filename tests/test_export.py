"""ONNX export: parity with PyTorch, dynamic batch, compact files for sparse models, export.json, bad input."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import compress.export as export
from compress.checkpoint import load_checkpoint, save_checkpoint
from compress.cli import main
from compress.errors import CompressError
from compress.export import available_ort_devices, check_parity, export_checkpoint, export_onnx, ort_session
from compress.export.compact import rebuild_left_at_runtime, to_compact, to_sparse_initializers
from compress.models import ModelSpec
from compress.prune.masks import apply_masks, filter_masks, unstructured_masks
from compress.prune.ratios import prunable
from compress.prune.slim import slim_checkpoint

SCHEMA_MODEL_KEYS = {"name", "source", "onnx", "bytes", "format", "parity", "note"}
PARITY_KEYS = {"max_abs_diff", "max_rel_diff", "tolerance", "images", "provider", "argmax_agreement"}


def trained_looking(spec: ModelSpec, seed: int = 0) -> torch.nn.Module:
    """A fresh model with BatchNorm statistics and biases like a trained one (folded biases matter)."""
    torch.manual_seed(seed)
    m = spec.build().eval()
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
            mod.bias.data.uniform_(-0.2, 0.2)
    return m


def save_pruned(path, spec, kind, ratio):
    m = trained_looking(spec)
    ratios = {n: ratio for n in prunable(m, kind)}
    masks = (filter_masks(m, ratios, spec.example_input()) if kind == "filter" else unstructured_masks(m, ratios))
    apply_masks(m, masks)
    return save_checkpoint(path, {"kind": "pruned", "model": spec.to_dict(), "state_dict": m.state_dict(),
                                  "masks": masks, "meta": {"prune_kind": kind, "accuracy": 10.0}})


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """Tiny checkpoints of every kind: dense, filter-masked, slim (VGG11 and ResNet-20), unstructured."""
    d = tmp_path_factory.mktemp("ckpts")
    vgg, res = ModelSpec("vgg11", width=0.125), ModelSpec("resnet20", width=0.25)
    out = {"dense": save_checkpoint(d / "dense.pt", {"kind": "dense", "model": vgg.to_dict(),
                                                      "state_dict": trained_looking(vgg).state_dict(), "meta": {}})}
    for name, spec in (("vgg", vgg), ("resnet", res)):
        out[f"{name}_masked"] = save_pruned(d / f"{name}_masked.pt", spec, "filter", 0.4)
        payload, _ = slim_checkpoint(load_checkpoint(out[f"{name}_masked"]), None)
        out[f"{name}_slim"] = save_checkpoint(d / f"{name}_slim.pt", payload)
    out["unstructured"] = save_pruned(d / "unstructured.pt", ModelSpec("vgg11", width=0.25), "unstructured", 0.8)
    return out


def check_schema(index: dict) -> None:
    assert set(index) >= {"models", "dense_onnx_bytes", "opset"}
    assert isinstance(index["dense_onnx_bytes"], int) and index["dense_onnx_bytes"] > 0
    for m in index["models"]:
        assert set(m) >= SCHEMA_MODEL_KEYS
        assert m["format"] in ("onnx", "onnx-fp16", "sparse-onnx", "compact")
        assert set(m["parity"]) == PARITY_KEYS
        assert m["parity"]["max_rel_diff"] <= m["parity"]["tolerance"]
        assert isinstance(m["bytes"], int) and m["bytes"] > 0 and m["note"]


# --------------------------------------------------------------------------- export_onnx itself
@pytest.mark.parametrize("name,width", [("vgg11", 0.125), ("resnet20", 0.25)])
def test_export_onnx_single_file_named_io_dynamic_batch(tmp_path, small, name, width):
    spec = ModelSpec(name, width=width)
    model = trained_looking(spec)
    path = export_onnx(model, spec, tmp_path / "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no external data, no temp file left
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["images"] and [o.name for o in proto.graph.output] == ["logits"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch
    sess = ort_session(path)
    for batch in (1, 7):
        x = torch.randn(batch, 3, 32, 32)
        (y,) = sess.run(None, {"images": x.numpy()})
        with torch.no_grad():
            ref = model(x).numpy()
        assert y.shape == (batch, 10)
        assert np.abs(y - ref).max() <= 1e-4 * np.abs(ref).max()
    r = check_parity(path, model, small, n=16)
    assert set(r) == PARITY_KEYS and r["images"] == 16 and r["provider"] == "CPUExecutionProvider"
    assert r["max_rel_diff"] <= r["tolerance"] == export.FP32_TOLERANCE


# --------------------------------------------------------------------------- checkpoints of every kind
def test_dense_via_cli(tmp_path, ckpts, capsys):
    out = tmp_path / "dense.onnx"
    assert main(["export", str(ckpts["dense"]), "--out", str(out), "--data", "sample"]) == 0
    text = capsys.readouterr().out
    assert "dense.onnx" in text and "rel. diff" in text and "dense model" in text
    index = json.loads((tmp_path / "export.json").read_text())
    check_schema(index)
    (m,) = index["models"]
    assert m["format"] == "onnx" and m["bytes"] == out.stat().st_size == index["dense_onnx_bytes"]
    assert index["opset"] == 18 and m["source"] == str(ckpts["dense"])


@pytest.mark.parametrize("name", ["vgg", "resnet"])
def test_masked_and_slim_share_one_index(tmp_path, ckpts, small, name):
    onnx_dir = tmp_path / "onnx"
    masked = export_checkpoint(ckpts[f"{name}_masked"], onnx_dir / "masked.onnx", data=small)
    slim = export_checkpoint(ckpts[f"{name}_slim"], onnx_dir / "slim.onnx", data=small)
    (mm,), (sm,) = masked["models"], slim["models"]
    assert mm["format"] == sm["format"] == "onnx"  # filter pruning: no compact files by default
    assert masked["dense_onnx_bytes"] == mm["bytes"]  # a masked file stores its zeros
    # the slim reference is a fresh dense export of the same spec: the same size to within the folded biases
    assert abs(slim["dense_onnx_bytes"] - mm["bytes"]) <= 0.01 * mm["bytes"]
    assert sm["bytes"] < 0.8 * mm["bytes"] and sm["saves"] == "storage and compute"
    assert "zero" in mm["note"] and "compress slim" in mm["note"]
    index = json.loads((onnx_dir / "export.json").read_text())
    check_schema(index)
    assert sorted(m["name"] for m in index["models"]) == ["masked", "slim"]
    with pytest.raises(CompressError, match="already exists"):  # refuse to overwrite, before any work
        export_checkpoint(ckpts[f"{name}_slim"], onnx_dir / "slim.onnx", data=small)


def test_unstructured_gets_sparse_and_compact_files(tmp_path, ckpts, small):
    r = export_checkpoint(ckpts["unstructured"], tmp_path / "u.onnx", data=small)
    by = {m["format"]: m for m in r["models"]}
    assert set(by) == {"onnx", "sparse-onnx", "compact"}
    dense = r["dense_onnx_bytes"]
    assert by["onnx"]["bytes"] == dense
    assert by["sparse-onnx"]["bytes"] <= 0.70 * dense  # fp32 values + int64 indices: ~0.6x at 80%
    assert by["compact"]["bytes"] <= 0.30 * dense      # fp32 values + 1-bit mask: ~0.23x at 80%
    for fmt in ("sparse-onnx", "compact"):
        assert "not compute" in by[fmt]["note"] and by[fmt]["saves"] == "storage"
    sparse = onnx.load(str(tmp_path / "u.sparse.onnx"))
    assert len(sparse.graph.sparse_initializer) > 0
    # ONNX Runtime loads all three and they agree bit for bit (the compact file is exact fp32)
    x = torch.randn(5, 3, 32, 32).numpy()
    outs = [ort_session(tmp_path / f).run(None, {"images": x})[0] for f in ("u.onnx", "u.sparse.onnx", "u.compact.onnx")]
    np.testing.assert_array_equal(outs[0], outs[2])
    np.testing.assert_allclose(outs[0], outs[1], rtol=0, atol=1e-6)
    assert rebuild_left_at_runtime(tmp_path / "u.compact.onnx") == 0  # folded at load: no per-inference cost
    check_schema(json.loads((tmp_path / "export.json").read_text()))


def test_fp16_export_with_compact(tmp_path, ckpts, small):
    r = export_checkpoint(ckpts["unstructured"], tmp_path / "h.onnx", data=small, fp16=True)
    by = {m["format"]: m for m in r["models"]}
    assert set(by) == {"onnx-fp16", "sparse-onnx", "compact"}
    assert by["onnx-fp16"]["parity"]["tolerance"] == export.FP16_TOLERANCE
    assert by["onnx-fp16"]["bytes"] < 0.6 * r["dense_onnx_bytes"]  # the reference stays the fp32 file
    assert by["compact"]["bytes"] < by["onnx-fp16"]["bytes"] / 2
    sess = ort_session(tmp_path / "h.compact.onnx")
    assert sess.get_inputs()[0].type == "tensor(float)"  # fp32 interface around fp16 weights
    assert rebuild_left_at_runtime(tmp_path / "h.compact.onnx") == 0


# --------------------------------------------------------------------------- the compact rewrite on its own
def test_compact_rewrite_is_exact_for_odd_shapes():
    """All-zero, fully dense, and odd-sized (not a multiple of 8) weights, in fp32."""
    rng = np.random.default_rng(0)
    weights = {
        "w_sparse": rng.standard_normal((61, 37)).astype(np.float32) * (rng.random((61, 37)) < 0.15),
        "w_zero": np.zeros((37, 37), np.float32),
        "w_dense": rng.standard_normal((37, 29)).astype(np.float32),
    }
    nodes = [helper.make_node("MatMul", ["x", "w_sparse"], ["h1"]), helper.make_node("MatMul", ["h1", "w_zero"], ["h2"]),
             helper.make_node("Add", ["h1", "h2"], ["h3"]), helper.make_node("MatMul", ["h3", "w_dense"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 61])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 29])],
                              [numpy_helper.from_array(w, k) for k, w in weights.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    x = rng.standard_normal((3, 61)).astype(np.float32)

    def run(p, tmp):
        onnx.save_model(p, str(tmp))
        onnx.checker.check_model(str(tmp))
        return ort_session(tmp).run(None, {"x": x})[0]

    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        ref = run(proto, Path(d) / "plain.onnx")
        compact = to_compact(proto)
        kept = {t.name for t in compact.graph.initializer}
        assert "w_dense" in kept and "w_sparse" not in kept and "w_zero" not in kept  # dense saves nothing
        np.testing.assert_array_equal(run(compact, Path(d) / "compact.onnx"), ref)
        assert rebuild_left_at_runtime(Path(d) / "compact.onnx") == 0
        np.testing.assert_allclose(run(to_sparse_initializers(proto), Path(d) / "sparse.onnx"), ref, atol=1e-6)


# --------------------------------------------------------------------------- bad input
def test_parity_failure_leaves_nothing(tmp_path, ckpts, small, monkeypatch):
    import compress.export.parity as parity

    real = parity._ort_logits

    def perturbed(path, x):
        logits, provider = real(path, x)
        return logits + 0.05 * np.abs(logits).max(), provider

    monkeypatch.setattr(parity, "_ort_logits", perturbed)
    folder = tmp_path / "onnx"
    folder.mkdir()
    with pytest.raises(CompressError, match="disagrees with PyTorch.*tolerance"):
        export_checkpoint(ckpts["unstructured"], folder / "u.onnx", data=small)
    assert list(folder.iterdir()) == []  # no ONNX, no staging folder, no export.json


def test_existing_sibling_is_refused_before_work(tmp_path, ckpts, small):
    (tmp_path / "u.compact.onnx").write_bytes(b"keep")
    with pytest.raises(CompressError, match="already exists"):
        export_checkpoint(ckpts["unstructured"], tmp_path / "u.onnx", data=small)
    assert (tmp_path / "u.compact.onnx").read_bytes() == b"keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u.compact.onnx"]


def test_cli_errors_exit_2_with_one_line(tmp_path, ckpts, capsys):
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(ckpts["dense"].read_bytes()[:200])
    exists = tmp_path / "exists.onnx"
    exists.write_bytes(b"keep")
    cases = [
        ([str(foreign)], "not a compress checkpoint"),
        ([str(corrupt)], "not a readable checkpoint"),
        ([str(tmp_path / "missing.pt")], "does not exist"),
        ([str(ckpts["dense"]), "--out", str(exists)], "already exists"),
        ([str(ckpts["dense"]), "--out", str(tmp_path / "x.txt")], "does not end in .onnx"),
        ([str(ckpts["dense"]), "--out", str(tmp_path / "y.onnx"), "--opset", "11"], "opset 11"),
    ]
    for argv, message in cases:
        assert main(["export", *argv, "--data", "sample"]) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("error:") == 1, (argv, err)
    assert exists.read_bytes() == b"keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.pt", "exists.onnx", "foreign.pt"]


def test_ort_session_errors(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf")
    with pytest.raises(CompressError, match="cannot load"):
        ort_session(bad)
    with pytest.raises(CompressError, match="unknown ONNX Runtime device"):
        ort_session(bad, "tpu")
    with pytest.raises(CompressError, match="does not exist"):
        ort_session(tmp_path / "missing.onnx")
    assert available_ort_devices()[0] == "cpu"
    if "cuda" not in available_ort_devices():  # never a silent CPU fallback
        graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
        ok = tmp_path / "ok.onnx"
        onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), str(ok))
        with pytest.raises(CompressError, match="CUDA"):
            ort_session(ok, "cuda")
