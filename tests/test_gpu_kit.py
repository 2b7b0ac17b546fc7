"""The GPU evidence kit, made to survive its first GPU: --tiny has the same files and table shape
as a GPU run (GPU rows skipped with their reason) and runs from a plain checkout; a failing
section is recorded and the rest goes on; the files are written as it goes; a short --budget-s
skips compile and the planner; devices without an index and every CPU runtime of the bench work."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
import torch

from compress.bench import gpu_kit, gpu_kit_report

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("training", "prune", "latency", "sparse24", "planner")
pytestmark = pytest.mark.usefixtures("one_thread")


def _plain_checkout(tmp: Path) -> tuple[Path, dict] | None:
    """A copy of the tracked files (what `git archive` gives; the GPU machine gets the same) and an
    environment whose PYTHONPATH names only that copy and the dependencies, for `python -S`: no
    install, no editable finder, no site hooks. None outside a git checkout."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        return None
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    copy = tmp / "checkout"
    for name in filter(None, tracked.decode().split("\0")):
        if (ROOT / name).is_symlink():  # compress/export, compress/bench: links, as git archive keeps them
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.readlink(ROOT / name), copy / name)
        elif (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    deps = sysconfig.get_paths()["purelib"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": f"{copy}{os.pathsep}{deps}",
           "COMPRESS_CACHE": str(tmp / "cache"), "HOME": str(tmp), "OMP_NUM_THREADS": "1"}
    return copy, env


@pytest.fixture(scope="module")
def tiny_kit(tmp_path_factory):
    """The --tiny kit, run once from a plain checkout as the GPU machine runs it (in this process
    when the tests do not run from a git checkout): (folder, what it printed)."""
    tmp = tmp_path_factory.mktemp("kit")
    out = tmp / "kit"
    plain = _plain_checkout(tmp)
    if plain is None:
        import contextlib
        import io

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert gpu_kit.main(["--tiny", "--out", str(out), "--device", "cpu"]) == 0
        return out, buf.getvalue()
    copy, env = plain
    probe = subprocess.run([sys.executable, "-S", "-c", "import compress, bench; print(compress.__file__)"],
                           cwd=tmp, env=env, capture_output=True, text=True)
    assert probe.returncode == 0 and Path(probe.stdout.strip()).is_relative_to(copy), probe.stderr[-1500:]
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-S", "-m", "compress.bench.gpu_kit", "--tiny", "--device", "cpu", "--out", str(out)],
                         cwd=copy, env={**env, "COLUMNS": "200"}, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    print(f"plain-checkout tiny kit: {time.perf_counter() - t0:.0f} s")
    return out, run.stdout


def test_tiny_kit_from_a_plain_checkout_writes_the_evidence(tiny_kit):
    out, printed = tiny_kit
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(gpu_kit.FILES) and all((out / f).is_file() for f in files)
    report = json.loads((out / "kit.json").read_text())
    assert report["finished"] and [t["target"] for t in report["targets"]] == list(gpu_kit_report.TARGETS)
    assert all(t["verdict"] in ("skipped", "not a GPU run") for t in report["targets"])
    assert not [k for k in SECTIONS if isinstance(report[k], dict) and "error" in report[k]]
    rows = report["latency"]
    runtimes = {r["runtime"] for r in rows}
    assert {"torch", "torch-bf16", "cuda-graphs", "torch-compile", "ort-cuda"} <= runtimes
    assert {r["model"] for r in rows} == {"dense", "filter-slim", "unstructured-80"}
    for r in rows:
        if r["runtime"] == "torch":
            assert r["status"] == "ok" and r["median_ms"] > 0 and r["speedup_vs_dense"] > 0
        else:  # GPU-only on a CPU machine: present, skipped, and says why
            assert r["status"] == "skipped" and r["reason"]
    check = report["prune"]["filter"]["slim_check"]
    assert check["acc_masked"] == check["acc_slim"] and check["max_rel_diff"] <= 1e-4
    assert report["prune"]["unstructured"]["onnx_parity"]["argmax_agreement"] == 1.0
    assert report["training"]["batch_512"]["images_per_s"] > 0
    assert report["sparse24"]["skipped"] and 0.5 < report["sparse24"]["storage"]["ratio"] < 0.6
    assert "measured" in report["planner"]
    summary = (out / "summary.md").read_text()
    assert "| target |" in summary and "## Latency" in summary and "## 2:4" in summary
    assert "cuDNN autotuning" in summary
    assert printed.rstrip().endswith("┘")  # the target table is printed last


# --------------------------------------------------------------------------- failures and the budget
def _fail(*args, **kwargs):
    raise RuntimeError("injected failure")


_REAL_LATENCY, _REAL_PLAN = gpu_kit.latency_section, gpu_kit.plan


@pytest.fixture
def stub_sections(monkeypatch):
    """These tests check the kit's bookkeeping (guards, files, budget), not its numbers: each
    section's work is replaced by a fast stand-in of the same shape (the real sections run once,
    in the plain-checkout run above)."""
    def training(spec, data, device, p):
        rate = {"images_per_s": 1.0, "epochs": 1, "per_epoch": [1.0], "test_acc": 10.0}
        return ({"device": "cpu", "dtype": "fp32", "images_per_epoch": 8, "batch_512": rate, "batch_64": rate,
                 "loop_ratio": {"toolchain_over_plain": 1.0, "runs": {}}}, spec.build())

    def prune_one(kind, spec, dense, data, device, work):
        return {"ratio_file": f"{kind}.yaml", "acc_retrained": 10.0, "retrain_s": 0.0}, dense

    def latency(models, device, p, work, compile_skip=None):
        rows = [{"model": m.name, "runtime": "torch", "batch_size": 1, "status": "ok", "median_ms": 1.0,
                 "speedup_vs_dense": 1.0, "reason": None} for m in models]
        return rows + [{"model": m.name, "runtime": "torch-compile", "batch_size": p["compile_batch"],
                        "status": "skipped", "reason": compile_skip or "opt-in on CPU"} for m in models]

    def planner(spec, dense, data, device, p):
        return {"runtime": "torch", "batch": 8, "target": 2.0, "predicted": 2.0, "measured": 2.0, "met": True,
                "attempts": 1, "fit_rms_ms": 0.0, "ratios": {}}

    for name, fake in (("training_section", training), ("prune_one", prune_one), ("latency_section", latency),
                       ("planner_section", planner)):
        monkeypatch.setattr(gpu_kit, name, fake)


def _run_kit(out: Path, *extra: str) -> dict:
    assert gpu_kit.main(["--tiny", "--out", str(out), "--device", "cpu", *extra]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(gpu_kit.FILES)
    return json.loads((out / "kit.json").read_text())


@pytest.mark.parametrize("section, target, patch", [
    ("training", "train_images_per_s_b512", "training_section"),
    ("prune", None, "prune_section"),
    ("latency", "slim_bf16_b256_speedup", "latency_section"),
    ("sparse24", "sparse24_gemm_ratio", "sparse24_section"),
    ("planner", "plan_bf16_b256_2x", "planner_section"),
])
def test_a_failing_section_is_recorded_and_the_rest_runs(section, target, patch, tmp_path, monkeypatch,
                                                         stub_sections):
    monkeypatch.setattr(gpu_kit, patch, _fail)
    report = _run_kit(tmp_path / "kit")
    assert report["finished"] and report[section] == {"error": "RuntimeError: injected failure"}
    assert "injected failure" in (tmp_path / "kit" / "summary.md").read_text()
    others = [s for s in SECTIONS if s != section]
    assert all(s in report and not (isinstance(report[s], dict) and "error" in report[s]) for s in others)
    if target:
        row = next(t for t in report["targets"] if t["target"] == target)
        assert row["verdict"] == "failed: RuntimeError: injected failure"
    if section == "prune":  # the latency section still gets the dense model
        assert {r["model"] for r in report["latency"]} == {"dense"}
    assert (tmp_path / "kit" / "kit.png").stat().st_size > 0


def test_one_prune_kind_failing_keeps_the_other(tmp_path, monkeypatch, stub_sections):
    real = gpu_kit.prune_one
    monkeypatch.setattr(gpu_kit, "prune_one", lambda kind, *a: _fail() if kind == "filter" else real(kind, *a))
    report = _run_kit(tmp_path / "kit")
    assert report["prune"]["filter"] == {"error": "RuntimeError: injected failure"}
    assert {r["model"] for r in report["latency"]} == {"dense", "unstructured-80"}
    assert "OMP filter: RuntimeError: injected failure" in (tmp_path / "kit" / "summary.md").read_text()


def test_files_are_written_after_each_section(tmp_path, monkeypatch, stub_sections):
    """Stopped during the planner (the device call's timeout), the evidence so far is on disk."""
    out = tmp_path / "kit"
    seen = {}

    def planner_sees_files(*args, **kwargs):
        seen.update(json.loads((out / "kit.json").read_text()))
        raise KeyboardInterrupt  # what a timeout looks like from inside

    monkeypatch.setattr(gpu_kit, "planner_section", planner_sees_files)
    with pytest.raises(KeyboardInterrupt):
        gpu_kit.main(["--tiny", "--out", str(out), "--device", "cpu"])
    assert not seen["finished"] and {"training", "prune", "latency", "sparse24"} <= set(seen)
    assert sorted(p.name for p in out.iterdir()) == sorted(gpu_kit.FILES)
    assert "unfinished" in (out / "summary.md").read_text()


def test_a_short_budget_skips_compile_and_the_planner(tmp_path, stub_sections, monkeypatch):
    monkeypatch.setattr(gpu_kit, "latency_section", _REAL_LATENCY)
    monkeypatch.setattr(gpu_kit, "plan", lambda tiny, cuda: {**_REAL_PLAN(tiny, cuda), "batch_sizes": (1,)})
    report = _run_kit(tmp_path / "kit", "--budget-s", "0")
    assert report["planner"]["skipped"].startswith("skipped: time budget")
    compiled = [r for r in report["latency"] if r["runtime"] == "torch-compile"]
    assert compiled and all(r["status"] == "skipped" and "time budget" in r["reason"] for r in compiled)
    assert any(r["runtime"] == "torch" and r["status"] == "ok" for r in report["latency"])
    assert "time budget" in (tmp_path / "kit" / "summary.md").read_text()


# --------------------------------------------------------------------------- devices and runtimes
def test_a_cuda_device_without_an_index_reaches_set_device_as_an_index(monkeypatch):
    from compress.timing.benchmark import timing_session
    from compress.timing.latency import Settings

    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(d))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr("compress.timing.benchmark.resolve_device", lambda name: torch.device("cuda"))
    with timing_session(Settings(runtimes=("torch",), device="cuda")):
        pass
    assert calls == [0] and all(isinstance(c, int) for c in calls)


def test_torch_compile_runs_on_cpu(tmp_path):
    from compress.models import ModelSpec
    from compress.timing.benchmark import run_benchmark
    from compress.timing.latency import Settings
    from compress.timing.models import BenchModel

    if shutil.which(os.environ.get("CXX", "c++")) is None and shutil.which("g++") is None:
        pytest.skip("no C++ compiler: Inductor cannot build CPU kernels here")
    spec = ModelSpec("vgg11", width=0.125, image_size=32)
    model = BenchModel("dense", "dense", spec.build().eval(), spec)
    report = run_benchmark(out=tmp_path / "b", settings=Settings(batch_sizes=(2,), runtimes=("torch-compile",),
                                                                  repeats=3, warmup=1, device="cpu"),
                           bench_models=[model], show=False)
    row = report["results"][0]
    assert row["status"] == "ok", row["reason"]
    assert row["median_ms"] > 0


def test_every_cpu_runtime_runs_once(tmp_path):
    from compress.models import ModelSpec
    from compress.timing.benchmark import run_benchmark
    from compress.timing.latency import Settings
    from compress.timing.models import BenchModel
    from compress.timing.registry import RUNTIMES

    spec = ModelSpec("vgg11", width=0.125)
    model = BenchModel("dense", "dense", spec.build().eval(), spec)
    cpu = [name for name, r in RUNTIMES.items() if r.placement != "cuda" and name != "torch-compile"]
    report = run_benchmark(out=tmp_path / "b", settings=Settings(batch_sizes=(2,), runtimes=tuple(cpu), repeats=2,
                                                                  warmup=1, device="cpu"),
                           bench_models=[model], show=False)
    status = {r["runtime"]: r["status"] for r in report["results"]}
    assert status == {name: "ok" for name in cpu}, report["results"]
