"""A run folder read back: its manifest and the files each stage wrote, as `RunData`; a suite is
four of them."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from compress.checkpoint import load_checkpoint
from compress.errors import CompressError
from compress.plots import model_style

SUITE_ORDER = ("omp_unstructured", "imp_unstructured", "omp_filter", "imp_filter")


@dataclass
class RunData:
    """What one run folder holds, read defensively (None = that file is absent)."""

    name: str  # omp_unstructured, ...
    path: Path
    rel: str  # path relative to the report's folder ("" for a single run)
    manifest: dict
    sparsity: dict | None = None
    slim: dict | None = None
    export: dict | None = None
    bench: dict | None = None
    result: dict | None = None  # the result checkpoint (state_dict, masks)
    problems: list[str] = field(default_factory=list)

    @property
    def job(self) -> dict:
        return self.manifest.get("job", {})

    @property
    def kind(self) -> str:
        return self.job.get("kind", "?")

    @property
    def method(self) -> str:
        return self.job.get("method", "?")

    @property
    def label(self) -> str:
        return model_style(self.kind, self.method).label

    @property
    def failed(self) -> dict[str, str]:
        return failed_stages(self.manifest)

    @property
    def complete(self) -> bool:
        return self.manifest.get("status") == "complete" and bool(self.manifest.get("result"))


def failed_stages(manifest: dict) -> dict[str, str]:
    """{stage: error} for the stages of a run or suite manifest that were tried and failed."""
    return {name: s.get("error", "?") for name, s in (manifest.get("stages") or {}).items()
            if isinstance(s, dict) and s.get("status") == "failed"}


def read_json(path: Path, problems: list[str] | None = None) -> dict | None:
    """A JSON file's content; None if absent; None plus a noted problem if unreadable."""
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        return doc
    except (OSError, ValueError) as e:
        if problems is not None:
            problems.append(f"`{path.name}` could not be read ({type(e).__name__}); its section is left out")
        return None


def load_run(path: Path, name: str | None = None, rel: str = "") -> RunData:
    manifest = read_json(path / "manifest.json")
    if manifest is None:
        raise CompressError(f"{path} has no readable manifest.json", "pass a run folder made by `compress unstructured|filter`")
    job = manifest.get("job", {})
    run = RunData(name or f"{job.get('method', 'run')}_{job.get('kind', '')}", path, rel, manifest)
    run.sparsity = read_json(path / "sparsity.json", run.problems)
    run.slim = read_json(path / "slim" / "slim.json", run.problems)
    run.export = read_json(path / "onnx" / "export.json", run.problems)
    run.bench = read_json(path / "bench" / "bench.json", run.problems)
    result = manifest.get("result") or {}
    rounds = manifest.get("rounds") or []
    ckpt_name = result.get("path") or (f"rounds/round_{rounds[-1]['round']}.pt" if rounds else None)
    if ckpt_name:
        try:
            run.result = load_checkpoint(path / ckpt_name)
            if not result.get("path"):
                run.problems.append(f"the run is unfinished; its mask figure shows the last round (`{ckpt_name}`)")
        except Exception as e:  # a missing or damaged result only costs its figures
            run.problems.append(f"`{ckpt_name}` could not be loaded ({type(e).__name__}: {e}); no mask figure")
    return run


def load_runs(folder: Path) -> tuple[dict, list[RunData]]:
    """(top manifest, runs) for a run folder or a suite folder."""
    top = read_json(folder / "manifest.json")
    if top is None:
        if not folder.is_dir():
            raise CompressError(f"{folder} does not exist", "pass a run folder (e.g. runs/vgg13_filter_0.40_imp3)")
        raise CompressError(f"{folder} has no readable manifest.json",
                            "pass a run folder made by `compress unstructured|filter` or a suite from `compress all`")
    fmt = top.get("format", "")
    if fmt.startswith("compress-suite"):
        runs = []
        entries = top.get("runs") or {}
        if not entries:
            raise CompressError(f"the suite {folder} lists no runs", "its manifest.json needs a 'runs' mapping")
        order = sorted(entries, key=lambda n: (SUITE_ORDER.index(n) if n in SUITE_ORDER else 99, n))
        for name in order:
            sub = Path(entries[name])
            sub = sub if sub.is_absolute() else folder / sub
            try:
                runs.append(load_run(sub, name, rel=relative(sub, folder)))
            except CompressError as e:
                top.setdefault("_problems", []).append(f"run `{name}`: {e.message}")
        if not runs:
            raise CompressError(f"none of the suite's runs in {folder} could be read")
        return top, runs
    if fmt.startswith("compress-run"):
        return top, [load_run(folder)]
    raise CompressError(f"{folder}/manifest.json is not a run or suite manifest (format {fmt!r})",
                        "pass a folder made by `compress unstructured|filter|all`")


def relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path.resolve())
