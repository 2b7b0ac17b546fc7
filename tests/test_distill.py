"""Knowledge distillation in retraining: the loss, the loop's hook, the teacher left untouched,
masks kept, two Gloo processes equal to one, and the CLI's options and refusals."""
import copy
import json
import os
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F

from compress.cli import main
from compress.models import ModelSpec
from compress.train import Teacher, TrainConfig, distillation_loss, train

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--model", "vgg11", "--width", "0.125", "--data", "sample", "--batch-size", "256", "--epochs", "1"]
QUICK = TrainConfig(epochs=1, batch_size=64, warmup_epochs=0, eval_every=0)


def _tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return ModelSpec("vgg11", width=0.125).build()


def test_the_loss_mixes_cross_entropy_and_the_softened_kl():
    torch.manual_seed(0)
    s, t, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
    T = 3.0
    p_t = F.softmax(t / T, 1)
    kl = (p_t * (p_t.log() - F.log_softmax(s / T, 1))).sum(1).mean()  # KL(teacher ‖ student), by hand
    ce = F.cross_entropy(s, y, label_smoothing=0.1)
    assert torch.allclose(distillation_loss(s, t, y, 1.0, T, 0.1), T * T * kl, atol=1e-6)
    assert torch.equal(distillation_loss(s, t, y, 0.0, T, 0.1), ce)
    assert torch.allclose(distillation_loss(s, t, y, 0.25, T, 0.1), 0.75 * ce + 0.25 * T * T * kl, atol=1e-6)
    assert distillation_loss(t, t, y, 1.0, T).abs() < 1e-6  # a student equal to its teacher has nothing to learn


def test_alpha_zero_is_a_plain_run_weight_for_weight(small, one_thread):
    plain, distilled = _tiny(), _tiny()
    train(plain, small, QUICK, show=False)
    result = train(distilled, small, QUICK, show=False, teacher=Teacher(_tiny(seed=5), alpha=0.0, temperature=4.0))
    for k, v in plain.state_dict().items():
        assert torch.equal(v, distilled.state_dict()[k]), k
    assert result.history[0]["teacher_seconds"] > 0 and result.history[0]["teacher_mib"] > 0  # its cost, recorded


def test_alpha_one_learns_only_from_the_teacher(small, one_thread):
    """A teacher equal to the student's start, alpha = 1: the loss is the KL term alone, zero at the
    start and with (near) zero gradient, so the student stays where it began, while the same
    run on the labels moves it. The teacher itself gets no gradient and is not changed."""
    torch.manual_seed(0)
    start = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                          nn.Linear(128, 10))  # no BatchNorm or dropout: the same function in train and eval mode
    student, teacher_model, labels_only = copy.deepcopy(start), copy.deepcopy(start), copy.deepcopy(start)
    cfg = TrainConfig(epochs=1, batch_size=64, warmup_epochs=0, eval_every=0, weight_decay=0.0, label_smoothing=0.0)
    train(student, small, cfg, show=False, teacher=Teacher(teacher_model, alpha=1.0, temperature=4.0))
    train(labels_only, small, cfg, show=False)
    moved = lambda m: max((p - q).abs().max().item() for p, q in zip(m.parameters(), start.parameters()))  # noqa: E731
    assert moved(student) < 1e-5 < 1e-2 < moved(labels_only)
    assert moved(teacher_model) == 0
    assert all(p.grad is None and not p.requires_grad for p in teacher_model.parameters())


def _worker(rank, size, port, out):
    """One epoch of distilled training on 256 images as rank `rank` of `size` (1: no group)."""
    sys.path.insert(0, str(ROOT))
    torch.set_num_threads(1)
    from compress.data import load_dataset

    if size > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(size))
        dist.init_process_group("gloo", rank=rank, world_size=size)
    data = load_dataset("sample", quiet=True)
    data.train_x, data.train_y = data.train_x[:256], data.train_y[:256]
    model, teacher = _tiny(), _tiny(seed=7)
    train(model, data, TrainConfig(epochs=1, batch_size=128, warmup_epochs=0, eval_every=0), show=False,
          sync_bn=True, teacher=Teacher(teacher, alpha=0.7, temperature=2.0))
    torch.save(model.state_dict(), f"{out}.{rank}")
    if size > 1:
        dist.destroy_process_group()


def test_two_processes_distil_as_one(tmp_path):
    """Each rank runs the teacher on its own slice of the global batch: with --sync-bn the result
    equals one process up to float reduction order (as for plain training)."""
    _worker(0, 1, 0, tmp_path / "one")
    mp.spawn(_worker, args=(2, 29500 + (os.getpid() % 2000) + 11, tmp_path / "two"), nprocs=2)
    one, r0, r1 = (torch.load(f"{tmp_path / n}", weights_only=True) for n in ("one.0", "two.0", "two.1"))
    assert all(torch.equal(r0[k], r1[k]) for k in r0 if "running" not in k and "tracked" not in k)
    assert max((one[k].float() - r0[k].float()).abs().max().item() for k in one if "num_batches" not in k) < 1e-4


def test_filter_run_with_a_teacher_keeps_masks_and_records_its_cost(tmp_path, capsys, tiny_dense):
    """--teacher (another checkpoint of ours) through `compress filter`: recorded in the manifest
    with its validation accuracy, its time per epoch in the history, pruned filters still zero."""
    _, dense_path = tiny_dense
    run = tmp_path / "run"
    code = main(["filter", "--ratio", "0.5", "--checkpoint", str(dense_path), "--teacher", str(dense_path),
                 "--distill-alpha", "0.6", "--out", str(run), "--no-slim", "--no-export", "--no-quantize",
                 "--no-bench", "--no-report", *TINY[4:]])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    manifest = json.loads((run / "manifest.json").read_text())
    d = manifest["distill"]
    assert (d["alpha"], d["temperature"], d["teacher"]) == (0.6, 4.0, str(dense_path))
    assert any(k.startswith("teacher_") and k.endswith("_accuracy") for k in d) and d["teacher_mib"] > 0
    assert manifest["job"]["distill"]["alpha"] == 0.6
    assert manifest["rounds"][0]["history"][0]["teacher_seconds"] > 0
    assert "distillation" in captured.out and "distilled (alpha 0.6" in captured.out
    ckpt = torch.load(run / manifest["result"]["path"], weights_only=True)
    for name, mask in ckpt["masks"].items():
        assert (ckpt["state_dict"][name][mask == 0] == 0).all()


@pytest.mark.parametrize("extra, match", [
    (["--no-distill", "--teacher", "x.pt"], "contradicts"),
    (["--distill-alpha", "1.5"], "--distill-alpha must be in"),
    (["--distill-temperature", "0"], "--distill-temperature must be positive"),
    (["--teacher", "missing.pt"], "does not exist"),
])
def test_bad_distillation_options_fail_before_anything(tmp_path, capsys, extra, match):
    assert main(["filter", "--ratio", "0.5", "--out", str(tmp_path / "run"), *TINY, *extra]) == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_teacher_for_other_data_is_refused_before_training(tmp_path, capsys, tiny_dense, png_folder_and_dense):
    """A teacher that predicts 3 classes cannot teach a 10-class student: one line, no run folder."""
    _, dense_path = tiny_dense
    _, three_class = png_folder_and_dense
    code = main(["filter", "--ratio", "0.5", "--checkpoint", str(dense_path), "--teacher", str(three_class),
                 "--out", str(tmp_path / "run"), *TINY[4:]])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "the teacher" in err and "predicts 3 classes" in err
    assert not (tmp_path / "run").exists()


def test_imp_rounds_distil_and_resume(tmp_path, capsys, tiny_dense, monkeypatch):
    """Two IMP rounds, each retrained with the teacher; an interrupted run resumes after its last
    round with the same distillation (another alpha is another job: refused)."""
    from compress.prune import schedule

    _, dense_path = tiny_dense
    run = tmp_path / "run"
    args = ["unstructured", "--ratio", "0.6", "--imp", "2", "--epochs", "2", "--checkpoint", str(dense_path),
            "--distill", "--out", str(run), "--no-slim", "--no-export", "--no-quantize", "--no-bench", "--no-report",
            *TINY[4:8]]
    calls = []
    original = schedule.train

    def interrupted(*a, **k):
        calls.append(k.get("teacher"))
        if len(calls) == 2:
            raise KeyboardInterrupt  # the machine went away during round 2
        return original(*a, **k)

    monkeypatch.setattr(schedule, "train", interrupted)
    assert main(args) != 0  # the CLI turns the interruption into an exit code
    capsys.readouterr()
    assert all(t is not None and t.alpha == 0.5 for t in calls)
    monkeypatch.setattr(schedule, "train", original)
    assert main([*args, "--distill-alpha", "0.9", "--resume"]) == 2
    assert "other settings" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0
    manifest = json.loads((run / "manifest.json").read_text())
    assert [r["round"] for r in manifest["rounds"]] == [1, 2] and manifest["status"] == "complete"
    assert all("teacher_seconds" in h for r in manifest["rounds"] for h in r["history"])
