"""The deployment stages after pruning: slim, export, quantize, bench, report. Each is recorded in
the run's manifest (done, skipped with why, or failed with the error) and never undoes the run.

export and bench are imported inside the stages that use them: `compress --help` stays fast."""
from __future__ import annotations

import shutil
from pathlib import Path

import torch

from compress.console import notice, out
from compress.data import Dataset
from compress.errors import CompressError
from compress.kinds import Kind
from compress.prune.schedule import Run


# --------------------------------------------------------------------------- deployment stages
def run_stages(run_dir: Path, data: Dataset, device: torch.device, stages: tuple[str, ...],
               bench_settings: dict | None = None, max_drop: float = 1.0) -> dict:
    """Slim (filter runs), export, quick benchmark and report, each recorded in the manifest.

    A stage that fails for a reason outside the user's control (say, an exporter bug for an
    exotic model) is recorded as failed with its message and the later stages still run;
    user errors stop the command as usual.
    """
    run = Run(run_dir)
    manifest = run.read()
    artifacts = manifest.setdefault("artifacts", {})
    result = run_dir / manifest["result"]["path"]
    deployable = result
    if "slim" in stages and manifest["job"]["kind"] == Kind.FILTER:
        deployable = record_stage(manifest, "slim", lambda: slim_stage(result, run_dir / "slim", data, device))
        deployable = Path(deployable) if deployable else result
        artifacts["slim"] = str(deployable.relative_to(run_dir)) if deployable != result else None
    if "export" in stages:
        exported = record_stage(manifest, "export", lambda: export_stage(
            {"dense": run_dir / "dense.pt", deployable.stem: deployable}, run_dir / "onnx", data))
        artifacts["onnx"] = exported
        if "quantize" in stages and exported:
            artifacts["int8"] = record_stage(manifest, "quantize", lambda: quantize_stage(run_dir / "onnx", data, max_drop))
    if "bench" in stages:
        artifacts["bench"] = record_stage(manifest, "bench", lambda: bench_stage(run_dir, device, bench_settings))
    run.write(manifest)
    if "report" in stages:
        artifacts["report"] = record_stage(manifest, "report", lambda: report_stage(run_dir))
    run.write(manifest)
    return manifest


class StageFailed(Exception):
    """A stage that wrote its files but did not succeed (a benchmark whose rows failed): recorded
    as failed, and its files are kept."""

    def __init__(self, message: str, value):
        super().__init__(message)
        self.value = value


def record_stage(manifest: dict, name: str, fn):
    stages = manifest.setdefault("stages", {})
    try:
        value = fn()
    except CompressError:
        raise
    except StageFailed as e:
        notice(f"stage {name} failed: {e}")
        stages[name] = {"status": "failed", "error": str(e)}
        return e.value
    except Exception as e:  # noqa: BLE001 - recorded, shown, and the other stages go on
        notice(f"stage {name} failed: {type(e).__name__}: {e}")
        stages[name] = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
        return None
    stages[name] = {"status": "ok"}
    return str(value) if isinstance(value, Path) else value


def slim_stage(result: Path, out_dir: Path, data: Dataset, device: torch.device) -> Path:
    """Remove the pruned channels; write the slim model and slim.json (the numbers)."""
    import json

    from compress.checkpoint import load_checkpoint, save_checkpoint
    from compress.io import atomic_write
    from compress.prune.slim import slim_checkpoint
    from compress.report.tables import slim_summary

    payload, res = slim_checkpoint(load_checkpoint(result, kinds=("pruned",)), data, device=device)
    path = save_checkpoint(out_dir / f"{result.stem}_slim.pt", payload)
    stats = dict(res.stats, path=path.name)
    atomic_write(out_dir / "slim.json", lambda tmp: tmp.write_text(json.dumps(stats, indent=2)))
    out.print(slim_summary(res.stats, path))
    return path


def export_stage(models: dict[str, Path], out_dir: Path, data: Dataset) -> str:
    """ONNX for the dense model and the deployable result, with parity checks; one export.json
    (each export adds its files to the folder's index)."""
    import importlib.util
    import json

    from compress.export import export_checkpoint
    from compress.export.tables import export_table

    index = None
    for name, path in models.items():
        index = export_checkpoint(path, out_dir / f"{name}.onnx", data=data, force=True)["export_json"]
    out.print(export_table({**json.loads(Path(index).read_text()), "export_json": index}))
    if importlib.util.find_spec("openvino") is not None:  # OpenVINO IR too, where OpenVINO is installed
        from compress.export.openvino_ir import export_openvino
        from compress.io import atomic_write

        irs = [export_openvino(path, out_dir / f"{name}.xml", data=data, force=True) for name, path in models.items()]
        atomic_write(out_dir / "openvino.json", lambda tmp: tmp.write_text(json.dumps({"models": irs}, indent=2)))
        out.print("OpenVINO IR: " + ", ".join(f"{Path(r['xml']).name} (vs PyTorch: max rel. diff "
                                              f"{r['parity']['max_rel_diff']:.1e})" for r in irs), soft_wrap=True)
    return str(Path(index).relative_to(out_dir.parent))


class QuantizationDrop(Exception):
    """An INT8 model lost more accuracy than --max-drop: the stage fails, the run's other files stand."""


def quantize_stage(onnx_dir: Path, data: Dataset, max_drop: float) -> str:
    """INT8 beside each plain fp32 ONNX file of the folder; quantize.json holds every report."""
    import json

    from compress.export.qat import qat_exporter
    from compress.export.quantize import AccuracyDrop, quantize
    from compress.io import atomic_write
    from compress.report.tables import quantize_table

    index = json.loads((onnx_dir / "export.json").read_text())
    reports, failed = [], []
    for entry in index["models"]:
        if entry["format"] != "onnx":
            continue
        try:
            source = Path(entry["source"])
            qat = qat_exporter(source, data, device=data.train_x.device, show=False) if source.is_file() else None
            reports.append(quantize(Path(entry["onnx"]), None, data, max_drop=max_drop, force=True, qat=qat))
        except AccuracyDrop as e:
            failed.append(f"{Path(entry['onnx']).name}: {e.message}")
            notice(f"[bold red]{e.message}[/bold red]")
    atomic_write(onnx_dir / "quantize.json", lambda tmp: tmp.write_text(json.dumps(
        {"models": reports, "failed": failed, "max_drop": max_drop}, indent=2)))
    if reports:
        out.print(quantize_table(reports))
        from compress.export.tables import attempts_table

        for r in reports:
            if len(r.get("attempts", [])) > 1:
                out.print(attempts_table(r))
    if failed:
        raise QuantizationDrop("; ".join(failed))
    return str((onnx_dir / "quantize.json").relative_to(onnx_dir.parent))


def bench_stage(run_dir: Path, device: torch.device, settings: dict | None) -> str:
    """A short latency/size benchmark of dense vs the result (slim for filter runs)."""
    from compress.timing import Settings, run_benchmark
    from compress.timing.output import bench_verdict, fastest_lines

    report = run_benchmark(run=run_dir, out=run_dir / "bench",
                           settings=Settings.quick(device=str(device), **(settings or {})), force=True)
    for line in fastest_lines(report):  # is it faster? the answer on screen, not only in bench.json
        out.print(f"[bold]{line}[/bold]", soft_wrap=True)
    verdict = bench_verdict(report)
    if verdict:
        raise StageFailed(verdict, "bench/bench.json")
    return "bench/bench.json"


def report_stage(run_dir: Path) -> str:
    from compress.report.writer import write_report

    return str(write_report(run_dir).relative_to(run_dir))


def link_or_copy(src: Path, dst: Path) -> None:
    try:
        dst.hardlink_to(src)
    except OSError:
        shutil.copy2(src, dst)
