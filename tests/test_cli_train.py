"""`compress train` end to end, and every bad input of the foundation issue: exit 2, one line, nothing written."""
import subprocess
import sys

import pytest
import torch

from compress.cli import main
from compress.errors import CompressError


def run(argv, capsys):
    code = main(argv)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_train_one_epoch_writes_a_safe_checkpoint(tmp_path, capsys):
    out = tmp_path / "d.pt"
    code, stdout, _ = run(["train", "--model", "vgg11", "--width", "0.125", "--epochs", "1", "--data", "sample",
                           "--batch-size", "256", "--out", str(out)], capsys)
    assert code == 0 and out.exists()
    ckpt = torch.load(out, weights_only=True)
    meta = ckpt["meta"]
    assert ckpt["kind"] == "dense" and meta["complete"] and meta["epochs"] == 1
    assert meta["dataset"]["train_images"] == 3254 and meta["dataset"]["val_images"] == 814  # auto: a fifth held out
    assert meta["dataset"]["name"] == "cifar10-sample" and meta["val_accuracy"] is not None
    assert 0 <= meta["accuracy"] <= 100 and meta["versions"]["torch"]
    assert ckpt["model"] == {"name": "vgg11", "num_classes": 10, "width": 0.125, "image_size": 32, "in_channels": 3}
    assert "validation" in stdout and "Wilson" in stdout
    # refuses to overwrite without --force, before any training
    code, _, err = run(["train", "--model", "vgg11", "--epochs", "1", "--data", "sample", "--out", str(out)], capsys)
    assert code == 2 and "already exists" in err and "--force" in err


def _cpuinfo_with(flag):
    import io

    return lambda *a, **k: io.StringIO(f"processor : 0\nflags : fpu sse2 {flag}\n")


def test_bf16_training_on_the_cpu_when_asked(small, one_thread, monkeypatch):
    """auto: bf16 autocast + channels_last on CUDA and on CPUs with bf16 units, fp32 on others;
    --precision bf16|fp32 forces it. A bf16 run on the CPU learns (fp32 weights, finite loss)."""
    from compress.models import ModelSpec
    from compress.train import TrainConfig, autocast, train, uses_bf16

    assert not uses_bf16(torch.device("cpu")) and uses_bf16(torch.device("cpu"), "bf16")  # the suite pins fp32
    monkeypatch.setenv("COMPRESS_CPU_BF16", "1")
    monkeypatch.setattr("builtins.open", _cpuinfo_with("avx512_bf16"), raising=True)
    assert uses_bf16(torch.device("cpu"))  # auto: a CPU with bf16 units trains in bf16
    with autocast(torch.device("cpu")):  # ... and evaluates in fp32: accuracies stay comparable
        assert not torch.is_autocast_enabled("cpu")
    monkeypatch.setattr("builtins.open", _cpuinfo_with("avx512_vnni"), raising=True)
    assert not uses_bf16(torch.device("cpu")) and not uses_bf16(torch.device("cpu"), "fp32")
    monkeypatch.undo()
    assert uses_bf16(torch.device("cuda")) and not uses_bf16(torch.device("cuda"), "fp32")
    with pytest.raises(CompressError, match="unknown precision"):
        uses_bf16(torch.device("cpu"), "fp8")
    torch.manual_seed(0)
    model = ModelSpec("vgg11", width=0.125).build()
    before = model.features[0].weight.detach().clone()
    result = train(model, small, TrainConfig(epochs=1, batch_size=128, warmup_epochs=0, precision="bf16"), show=False)
    assert model.features[0].weight.dtype == torch.float32 and not torch.equal(before, model.features[0].weight)
    assert result.history[0]["train_loss"] < 10


def one_line_error(code, err, match):
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and match in lines[0], err


@pytest.mark.parametrize("argv, match", [
    (["train", "--model", "vgg31"], "'vgg13'"),
    (["train", "--epochs", "0"], "positive integer"),
    (["train", "--epochs", "-3"], "positive integer"),
    (["train", "--data", "/nonexistent/cifar"], "does not exist"),
    (["train", "--model", "vgg11", "--device", "cuda"], "no CUDA GPU"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, match):
    if "cuda" in argv and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code, _, err = run(argv + ["--out", str(tmp_path / "x.pt")], capsys)
    one_line_error(code, err, match)
    assert not list(tmp_path.iterdir())


def test_corrupt_batch_is_one_line_and_exit_2(sample_copy, tmp_path, capsys):
    f = sample_copy / "cifar-10-batches-py" / "data_batch_3"
    f.write_bytes(f.read_bytes()[:-1000])
    code, _, err = run(["train", "--data", str(sample_copy), "--out", str(tmp_path / "x.pt")], capsys)
    one_line_error(code, err, "data_batch_3")
    assert not (tmp_path / "x.pt").exists()


def test_unwritable_output_folder(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, _, err = run(["train", "--model", "vgg11", "--data", "sample", "--out", str(blocker / "d.pt")], capsys)
    one_line_error(code, err, "cannot create folder")


def test_help_and_module_entry_point():
    r = subprocess.run([sys.executable, "-m", "compress", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for cmd in ("train", "unstructured", "filter", "models"):
        assert cmd in r.stdout
    r = subprocess.run([sys.executable, "-m", "compress", "train", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--epochs" in r.stdout


def test_baseline_weights_depend_on_the_seed_alone(small, tmp_path):
    """What a command drew from the global generator before training must not change the baseline."""
    from compress.baseline import train_baseline
    from compress.checkpoint import load_checkpoint
    from compress.models import ModelSpec
    from compress.train import TrainConfig

    cfg = TrainConfig(epochs=1, batch_size=128, seed=3)
    spec = ModelSpec("vgg11", width=0.125)
    states = []
    for i, draws in enumerate((0, 17)):
        torch.rand(draws)  # e.g. a check that built a throwaway model first
        train_baseline(spec, small, cfg, tmp_path / f"d{i}.pt", device=torch.device("cpu"), show=False)
        states.append(load_checkpoint(tmp_path / f"d{i}.pt")["state_dict"])
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_an_interrupted_baseline_resumes_where_it_stopped(small, tmp_path, monkeypatch, capsys):
    """Stopped after its second epoch's checkpoint, the baseline continues from it (optimiser,
    schedule and random state included) to exactly the weights of a run that never stopped."""
    import compress.baseline as baseline
    from compress.checkpoint import load_checkpoint
    from compress.models import ModelSpec
    from compress.train import TrainConfig

    cfg = TrainConfig(epochs=3, batch_size=128, warmup_epochs=0.5, seed=2)
    spec, cpu = ModelSpec("vgg11", width=0.125), torch.device("cpu")
    whole = baseline.train_baseline(spec, small, cfg, tmp_path / "whole.pt", device=cpu, show=False)
    real_save = baseline.save_checkpoint

    def crash_after_epoch_2(path, payload):
        real_save(path, payload)
        if payload["kind"] == "dense" and payload["meta"]["epochs_completed"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(baseline, "save_checkpoint", crash_after_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        baseline.train_baseline(spec, small, cfg, tmp_path / "cut.pt", device=cpu, show=False)
    monkeypatch.setattr(baseline, "save_checkpoint", real_save)
    cut = load_checkpoint(tmp_path / "cut.pt")
    assert not cut["meta"]["complete"] and cut["meta"]["train_state"]["epoch"] == 2
    with pytest.raises(CompressError, match="an unfinished run with another recipe"):
        baseline.train_baseline(spec, small, TrainConfig(epochs=3, batch_size=128, lr=0.05, seed=2),
                                tmp_path / "cut.pt", device=cpu, show=False, resume=True)
    resumed = baseline.train_baseline(spec, small, cfg, tmp_path / "cut.pt", device=cpu, show=True, resume=True)
    assert "resuming the dense baseline" in capsys.readouterr().err
    assert all(torch.equal(whole["state_dict"][k], resumed["state_dict"][k]) for k in whole["state_dict"])
    assert [h["epoch"] for h in resumed["meta"]["history"]] == [1, 2, 3] and resumed["meta"]["complete"]
    assert "train_state" not in load_checkpoint(tmp_path / "cut.pt")["meta"]  # a finished file stays small
    # the CLI: a finished checkpoint has nothing to resume
    argv = ["train", "--model", "vgg11", "--width", "0.125", "--data", "sample", "--out", str(tmp_path / "cut.pt")]
    assert main([*argv, "--epochs", "3", "--resume"]) == 2
    assert "is a finished run; there is nothing to resume" in capsys.readouterr().err
