"""The GPU evidence kit's --tiny mode: same files and table shape as on a GPU, GPU rows skipped
with their reason, so the kit cannot rot between the rare GPU sessions."""
import json

import pytest

from bench import gpu_kit, gpu_kit_report


@pytest.mark.usefixtures("one_thread")
def test_tiny_kit_writes_the_evidence(tmp_path, capsys):
    out = tmp_path / "kit"
    assert gpu_kit.main(["--tiny", "--out", str(out), "--device", "cpu"]) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(gpu_kit.FILES) and len(files) <= 8 and all((out / f).is_file() for f in files)
    report = json.loads((out / "kit.json").read_text())
    assert [t["target"] for t in report["targets"]] == list(gpu_kit_report.TARGETS)
    assert all(t["verdict"] in ("skipped", "not a GPU run") for t in report["targets"])
    rows = report["latency"]
    runtimes = {r["runtime"] for r in rows}
    assert {"torch", "torch-bf16", "cuda-graphs", "torch-compile", "ort-cuda"} <= runtimes
    assert {r["model"] for r in rows} == {"dense", "filter-slim", "unstructured-80"}
    for r in rows:
        if r["runtime"] == "torch":
            assert r["status"] == "ok" and r["median_ms"] > 0 and r["speedup_vs_dense"] > 0
        else:  # GPU-only on a CPU machine: present, skipped, and says why
            assert r["status"] == "skipped" and r["reason"]
    assert report["prune"]["filter"]["slim_check"]["acc_masked"] == report["prune"]["filter"]["slim_check"]["acc_slim"]
    assert report["prune"]["unstructured"]["onnx_parity"]["argmax_agreement"] == 1.0
    assert report["training"]["batch_512"]["images_per_s"] > 0
    assert report["sparse24"]["skipped"] and 0.5 < report["sparse24"]["storage"]["ratio"] < 0.6
    summary = (out / "summary.md").read_text()
    assert "| target |" in summary and "## Latency" in summary and "## 2:4" in summary
    printed = capsys.readouterr().out
    assert printed.rstrip().endswith("┘")  # the summary table is printed last
