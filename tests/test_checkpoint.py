import pytest
import torch

from compress.checkpoint import load_checkpoint, save_checkpoint
from compress.errors import CompressError
from compress.models import ModelSpec
from compress.prune.rebuild import model_from_checkpoint


def _ckpt(spec):
    m = spec.build()
    return {"kind": "dense", "model": spec.to_dict(), "state_dict": m.state_dict(), "meta": {"accuracy": 12.5}}, m


def test_round_trip_with_weights_only(tmp_path):
    spec = ModelSpec("vgg11", width=0.125)
    payload, m = _ckpt(spec)
    path = save_checkpoint(tmp_path / "a.pt", payload)
    raw = torch.load(path, weights_only=True)
    assert raw["format"].startswith("compress-checkpoint")
    m2 = model_from_checkpoint(load_checkpoint(path))
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(m.eval()(x), m2(x))
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


def test_refuses_pickled_objects(tmp_path):
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "pickled.pt")
    with pytest.raises(CompressError, match="not a compress checkpoint"):
        load_checkpoint(tmp_path / "pickled.pt")


def test_corrupt_and_missing_files(tmp_path):
    spec = ModelSpec("resnet20", width=0.25)
    path = save_checkpoint(tmp_path / "a.pt", _ckpt(spec)[0])
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CompressError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "cut.pt")
    with pytest.raises(CompressError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CompressError, match="not a compress checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_other_architecture_is_a_clear_error(tmp_path):
    payload, _ = _ckpt(ModelSpec("vgg11", width=0.125))
    payload["model"]["name"] = "vgg13"
    path = save_checkpoint(tmp_path / "a.pt", payload)
    with pytest.raises(CompressError, match="do not fit a vgg13"):
        model_from_checkpoint(load_checkpoint(path))


def test_failed_write_keeps_the_old_file(tmp_path):
    spec = ModelSpec("resnet20", width=0.25)
    path = save_checkpoint(tmp_path / "a.pt", _ckpt(spec)[0])
    before = path.read_bytes()
    with pytest.raises(Exception):
        save_checkpoint(path, {"kind": "dense", "bad": torch.nn.Linear(1, 1)})  # not weights_only-safe
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(".*tmp"))
