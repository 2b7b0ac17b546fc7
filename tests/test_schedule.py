import json

import pytest
import torch

from compress.checkpoint import load_checkpoint, save_checkpoint
from compress.errors import CompressError
from compress.models import ModelSpec
from compress.prune.ratios import prunable
from compress.prune.schedule import PruneJob, epochs_per_round, prune, round_ratios, round_targets
from compress.train import TrainConfig


def test_geometric_schedule_reaches_the_target_in_k_rounds():
    job = PruneJob("unstructured", "imp", 0.8, {}, rounds=3)
    t = round_targets(job)
    assert len(t) == 3 and t[-1] == pytest.approx(0.8)
    assert t[0] == pytest.approx(1 - 0.2 ** (1 / 3))
    # each round removes the same share of what is left
    left = [1 - x for x in [0.0] + t]
    assert left[1] / left[0] == pytest.approx(left[2] / left[1]) == pytest.approx(left[3] / left[2])
    assert round_targets(PruneJob("filter", "imp", 0.4, {}, rounds=4, schedule="linear")) == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert round_targets(PruneJob("filter", "imp", 0.4, {}, rounds=2, schedule="0.3,0.4")) == [0.3, 0.4]
    with pytest.raises(CompressError):
        round_targets(PruneJob("filter", "imp", 0.4, {}, rounds=2, schedule="0.5,0.4"))


def test_round_ratios_follow_layer_paths():
    ratios = {"a": 0.9, "b": 0.5}
    assert round_ratios(ratios, 0.8, 0.8) == ratios
    mid = round_ratios(ratios, 0.8, 1 - 0.2 ** 0.5)
    assert mid["a"] == pytest.approx(1 - 0.1 ** 0.5) and mid["b"] == pytest.approx(1 - 0.5 ** 0.5)


def test_epoch_budget_is_split_across_rounds():
    assert epochs_per_round(10, 3) == [3, 3, 4]
    assert sum(epochs_per_round(7, 3)) == 7


@pytest.fixture
def dense(tmp_path):
    torch.manual_seed(0)
    spec = ModelSpec("vgg11", width=0.125)
    payload = {"kind": "dense", "model": spec.to_dict(), "state_dict": spec.build().state_dict(),
               "meta": {"accuracy": 10.0, "epochs": 0}}
    path = save_checkpoint(tmp_path / "dense.pt", payload)
    return load_checkpoint(path), path


def _job(kind, model_ckpt, rounds=3):
    model = ModelSpec.from_dict(model_ckpt["model"]).build()
    target = 0.8 if kind == "unstructured" else 0.4
    ratios = {n: target for n in prunable(model, kind)}
    cfg = TrainConfig(epochs=rounds, lr=0.05, batch_size=64, warmup_epochs=0.2, seed=3)
    return PruneJob(kind, "imp" if rounds > 1 else "omp", target, ratios, rounds=rounds, retrain=cfg)


@pytest.mark.parametrize("kind", ["unstructured", "filter"])
def test_imp_reaches_target_and_keeps_masks_growing(tmp_path, small, dense, kind):
    ckpt, path = dense
    m = prune(_job(kind, ckpt), ckpt, small, tmp_path / "run", device=torch.device("cpu"), show=False, dense_path=path)
    s = [r["sparsity"] for r in m["rounds"]]
    assert len(s) == 3 and s[0] < s[1] < s[2] and s[2] >= (0.8 if kind == "unstructured" else 0.4) - 1e-3
    result = load_checkpoint(tmp_path / "run" / m["result"]["path"], kinds=("pruned",))
    assert m["result"]["path"].startswith(f"Imp_{kind}_{0.8 if kind == 'unstructured' else 0.4:.2f}_acc_")
    prev = None
    for k in (1, 2, 3):
        masks = load_checkpoint(tmp_path / "run" / "rounds" / f"round_{k}.pt")["masks"]
        if prev is not None:
            assert all(not (masks[n] & ~prev[n]).any() for n in prev)  # nothing pruned comes back
        prev = masks
    params = result["state_dict"]
    assert all((params[n][~keep] == 0).all() for n, keep in result["masks"].items())
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["result"]["accuracy"] == m["result"]["accuracy"]
    assert json.loads((tmp_path / "run" / "sparsity.json").read_text())["overall"] == pytest.approx(s[-1])


def test_resume_after_interruption_gives_the_same_result(tmp_path, small, dense):
    ckpt, path = dense
    cpu = torch.device("cpu")
    full = prune(_job("unstructured", ckpt), ckpt, small, tmp_path / "a", device=cpu, show=False, dense_path=path)

    class Killed(Exception):
        pass

    def kill_after_round_1(k, record):
        if k == 1:
            raise Killed

    with pytest.raises(Killed):
        prune(_job("unstructured", ckpt), ckpt, small, tmp_path / "b", device=cpu, show=False, dense_path=path,
              on_round=kill_after_round_1)
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["status"] == "running"
    resumed = prune(_job("unstructured", ckpt), ckpt, small, tmp_path / "b", device=cpu, show=False,
                    dense_path=path, resume=True)
    assert [r["acc_after_retrain"] for r in resumed["rounds"]] == [r["acc_after_retrain"] for r in full["rounds"]]
    assert resumed["result"] == full["result"]
    a = load_checkpoint(tmp_path / "a" / full["result"]["path"])
    b = load_checkpoint(tmp_path / "b" / resumed["result"]["path"])
    assert all(torch.equal(a["masks"][n], b["masks"][n]) for n in a["masks"])
    assert all(torch.equal(a["state_dict"][n], b["state_dict"][n]) for n in a["state_dict"])


def test_resume_with_other_settings_is_refused(tmp_path, small, dense):
    ckpt, path = dense
    cpu = torch.device("cpu")
    prune(_job("filter", ckpt, rounds=1), ckpt, small, tmp_path / "a", device=cpu, show=False, dense_path=path)
    other = _job("filter", ckpt, rounds=1)
    other.retrain = TrainConfig(**{**other.retrain.to_dict(), "seed": 99})
    with pytest.raises(CompressError, match="other settings"):
        prune(other, ckpt, small, tmp_path / "a", device=cpu, show=False, dense_path=path, resume=True)
