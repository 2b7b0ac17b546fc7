"""How a network's latency changes with the width of each channel group, measured on a runtime.

For every prunable channel group (Torch-Pruning's coupled groups, `compress.prune.masks.filter_groups`)
the whole network is measured with that one group narrowed to 1/8, 1/4, 1/2 and 3/4 of its
filters (kept widths rounded to `round_to`), every other group dense, all variants and the
dense model timed side by side in one interleaved run (`compress.timing.latency.measure`).

Predicting a mix of widths from these single cuts: simply adding the savings counts twice every
layer that sits between two cut groups (its MACs shrink with the product of both widths). So
the table is turned into a per-layer model (`LayerModel`): each conv/linear layer's cost at full
width, fitted to the measurements, shrinking with its kept MAC fraction. Measured on VGG13
(ort-cpu, batch 64, 2 threads, 8 random width mixes, `python -m compress.bench.speedup_planner --predictor-only`):
the layer model's speed-up is within -0.8..+3.2% of the measured one, the additive sum 10-62% too
optimistic. Whole-network measurements (rather than timing each layer as a block) keep what a
block cannot see (the runtime's fusions, memory traffic between layers, per-call overhead) and
need nothing but the model and the runtime, so they work for any model the user brings.

A table is cached as JSON under the cache folder, keyed by architecture, runtime, batch
size, thread count, CPU/GPU, library versions and widths; it is rebuilt when any changes.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn as nn

from compress.console import out
from compress.env import cpu_name, versions
from compress.errors import CompressError
from compress.io import atomic_write
from compress.models import ModelSpec
from compress.models.structure import layer_rows
from compress.prune.channels import conv_widths, remove_channels
from compress.prune.masks import FilterGroup, apply_masks, filter_groups, filter_masks
from compress.timing.benchmark import timing_session
from compress.timing.latency import Settings, measure
from compress.timing.models import BenchModel

FRACTIONS = (0.125, 0.25, 0.5, 0.75)  # of a group's filters kept, in the table's measurements
FORMAT = "compress-latency-table/1"
REGULARISE = 0.2  # weight of the MAC-proportional prior rows in `LayerModel.fit` (data rows weigh ~0.5)


def cache_folder() -> Path:
    env = os.environ.get("COMPRESS_CACHE")
    if env:
        return Path(env).expanduser() / "latency"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "compress" / "latency"


def step_of(group: FilterGroup, round_to: int) -> int:
    """Kept widths are multiples of this: `round_to`, and of the block count of a grouped conv."""
    step = max(1, round_to)
    return step * group.channel_groups // math.gcd(step, group.channel_groups)


def candidate_widths(group: FilterGroup, round_to: int, fractions=FRACTIONS) -> list[int]:
    """Widths the planner may choose: multiples of the step from the narrowest measured
    fraction up to full width (full width last). [] when the group is too narrow to cut."""
    step = step_of(group, round_to)
    c = group.channels
    if c < 2 * step:
        return [c] if c else []
    lowest = max(step, math.ceil(min(fractions) * c / step) * step)
    return [w for w in range(lowest, c, step)] + [c]


def measured_widths(group: FilterGroup, round_to: int, fractions=FRACTIONS) -> list[int]:
    step = step_of(group, round_to)
    widths = {min(group.channels - step, max(step, int(round(f * group.channels / step)) * step)) for f in fractions}
    return sorted(w for w in widths if 0 < w < group.channels)


@dataclass
class LatencyTable:
    """Measured latency (ms, median) of the network with one group narrowed at a time."""

    key: dict
    dense_ms: float
    groups: dict  # root name -> {"convs", "channels", "widths", "ms", "iqr_ms"}
    seconds: float = 0.0
    format: str = FORMAT

    def saving_ms(self, root: str, width: int) -> float:
        """Predicted latency saved by narrowing `root`'s group to `width` (others dense)."""
        g = self.groups[root]
        if width >= g["channels"]:
            return 0.0
        ws = g["widths"] + [g["channels"]]
        ms = monotone(g["ms"] + [self.dense_ms])
        if width <= ws[0]:  # below the narrowest measurement: extend its last segment
            slope = (ms[1] - ms[0]) / (ws[1] - ws[0])
            at = ms[0] - slope * (ws[0] - width)
        else:
            i = next(k for k in range(1, len(ws)) if width <= ws[k])
            at = ms[i - 1] + (ms[i] - ms[i - 1]) * (width - ws[i - 1]) / (ws[i] - ws[i - 1])
        return max(0.0, self.dense_ms - at)

    def predict_ms(self, widths: dict[str, int]) -> float:
        """Dense latency minus the groups' single-cut savings, as if they added up (they do not:
        a layer between two cut groups is counted twice; `LayerModel` does not)."""
        return self.dense_ms - sum(self.saving_ms(r, w) for r, w in widths.items() if r in self.groups)

    def fit(self, links: dict[str, dict]) -> "LayerModel":
        """The per-layer model that best explains this table's measurements (see `LayerModel`)."""
        return LayerModel.fit(self, links)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LatencyTable":
        if d.get("format") != FORMAT:
            raise ValueError(f"not a latency table ({d.get('format')!r})")
        return cls(key=d["key"], dense_ms=d["dense_ms"], groups=d["groups"], seconds=d.get("seconds", 0.0))


@dataclass
class LayerModel:
    """Latency as a sum over layers: each conv/linear layer costs `ms[layer]` at full width and
    shrinks with the fraction of its MACs left, (kept in / all in) x (kept out / all out), so a
    layer between two cut groups shrinks with both (no double count). The per-layer costs are
    fitted (least squares, non-negative) to the table's whole-network measurements, so layer
    costs that MACs alone would not predict (memory-bound early layers, tiny late ones,
    per-call overhead that no width changes) come from the runtime itself.
    Measured on VGG13 (ort-cpu, batch 64, 2 threads), 8 random width mixes: this model's
    speed-up within -0.8..+3.2% of the measured one, the additive table 10-62% too optimistic
    (`python -m compress.bench.speedup_planner --predictor-only`).
    """

    dense_ms: float
    ms: dict[str, float]  # layer -> fitted ms at full width
    links: dict[str, dict]
    channels: dict[str, int]  # group -> full width
    rms_ms: float = 0.0  # fit residual on the table's own measurements

    def kept(self, layer: str, widths: dict[str, int]) -> float:
        link = self.links[layer]
        a, b = link["in"], link["out"]
        fa = widths.get(a, self.channels[a]) / self.channels[a] if a in self.channels else 1.0
        fb = widths.get(b, self.channels[b]) / self.channels[b] if b in self.channels else 1.0
        return fa if a == b else fa * fb  # in == out: a depthwise conv, linear in its width

    def saving_ms(self, widths: dict[str, int]) -> float:
        return sum(t * (1 - self.kept(n, widths)) for n, t in self.ms.items())

    def predict_ms(self, widths: dict[str, int]) -> float:
        return self.dense_ms - self.saving_ms(widths)

    @classmethod
    def fit(cls, table: LatencyTable, links: dict[str, dict]) -> "LayerModel":
        channels = {r: g["channels"] for r, g in table.groups.items()}
        names = [n for n, link in links.items() if link["in"] in channels or link["out"] in channels]
        probe = cls(table.dense_ms, {}, links, channels)
        rows, saved = [], []
        for root, g in table.groups.items():
            for w, ms in zip(g["widths"], g["ms"]):
                rows.append([1 - probe.kept(n, {root: w}) for n in names])
                saved.append(table.dense_ms - ms)
        # One group cut at a time shows each group's total (its convs plus their consumers), not
        # how it splits between them: in a chain, t1 + t2, t2 + t3, ... leave one degree of
        # freedom. Weak rows pull each layer toward a MAC-proportional share of the dense time
        # and settle it; where the measurements speak, they win.
        macs = {n: links[n]["macs"] for n in names}
        per_mac = table.dense_ms / max(1, sum(macs.values()))
        prior = [[REGULARISE if k == i else 0.0 for k in range(len(names))] for i in range(len(names))]
        a = torch.tensor(rows + prior, dtype=torch.float64)
        y = torch.tensor(saved + [REGULARISE * per_mac * macs[n] for n in names], dtype=torch.float64)[:, None]
        active = [i for i in range(len(names)) if a[:, i].abs().sum() > 0]
        solution = torch.zeros(0, dtype=torch.float64)
        for _ in range(len(names) + 1):  # least squares, dropping layers fitted negative (active set)
            if not active:
                break
            solution = torch.linalg.lstsq(a[:, active], y).solution.flatten()
            if (solution >= 0).all():
                break
            active = [i for i, v in zip(active, solution.tolist()) if v > 0]
        ms = {names[i]: float(v) for i, v in zip(active, solution.tolist())}
        total = sum(ms.values())
        if total > table.dense_ms:  # the layers cannot take longer than the whole network
            ms = {n: v * table.dense_ms / total for n, v in ms.items()}
        model = cls(table.dense_ms, ms, links, channels)
        fitted = torch.tensor([sum(ms.get(n, 0.0) * r[k] for k, n in enumerate(names)) for r in rows],
                              dtype=torch.float64)
        model.rms_ms = float((fitted - torch.tensor(saved, dtype=torch.float64)).pow(2).mean().sqrt()) if rows else 0.0
        return model


def monotone(ms: list[float]) -> list[float]:
    """Latencies by increasing width, made non-decreasing (a narrower width is never slower):
    each value is capped by every wider one's."""
    fixed = list(ms)
    for i in range(len(fixed) - 2, -1, -1):
        fixed[i] = min(fixed[i], fixed[i + 1])
    return fixed


def layer_links(model: nn.Module, spec: ModelSpec, groups: list[FilterGroup]) -> dict[str, dict]:
    """Per conv/linear layer: dense MACs per image, the group its output channels belong to
    ("out") and the group its input channels come from ("in"); None where no group is."""
    out_of = {c: g.root for g in groups for c in g.convs}
    in_of = {c: g.root for g in groups for c in g.consumers}
    links = {}
    for row in layer_rows(model, spec.example_input()):
        name = row["name"].removesuffix(".weight")
        links[name] = {"macs": row["macs"], "out": out_of.get(name), "in": in_of.get(name)}
    return links


def slim_copy(model: nn.Module, spec: ModelSpec, ratios: dict[str, float],
              groups: list[FilterGroup] | None = None) -> nn.Module:
    """A slim copy of `model` with the given filter ratios applied (lowest-L2 filters removed)
    and the removed channels cut out; `groups`: the model's filter groups when known."""
    masked = copy.deepcopy(model).cpu().eval()
    if not ratios:
        return masked
    example = spec.example_input()
    groups = groups if groups is not None else filter_groups(masked, example)
    apply_masks(masked, filter_masks(masked, ratios, example, groups=groups))
    return remove_channels(masked, example, groups=groups)[0].eval()


def narrowed(model: nn.Module, spec: ModelSpec, groups: list[FilterGroup], widths: dict[str, int]) -> nn.Module:
    """A slim copy of `model` with each named group cut to the given width (latency depends on
    widths, not on which filters go)."""
    by_root = {g.root: g for g in groups}
    ratios = {f"{c}.weight": (by_root[r].channels - w) / by_root[r].channels
              for r, w in widths.items() if w < by_root[r].channels for c in by_root[r].convs}
    return slim_copy(model, spec, ratios, groups)


class SideBySide:
    """Times in-memory models on one runtime at one batch size, interleaved, in one scratch
    folder (each model's ONNX file is exported once per session, by name)."""

    def __init__(self, spec: ModelSpec, runtime: str, batch: int, *, threads: int | None = None,
                 device: str = "cpu", budget_s: float = 1.0, show: bool = True):
        self.spec, self.show = spec, show
        self.settings = Settings(batch_sizes=(batch,), runtimes=(runtime,), device=device, threads=threads,
                                 budget_s=budget_s, min_repeats=5, max_repeats=200, min_warmup=2,
                                 warmup_s=min(0.2, budget_s), ort_spinning=False)
        self._session = None

    def __enter__(self) -> "SideBySide":
        self._session = timing_session(self.settings)
        self.ctx, self.runtimes, self.device = self._session.__enter__()
        return self

    def __exit__(self, *exc):
        return self._session.__exit__(*exc)

    @property
    def threads(self) -> int:
        return self.ctx.threads

    def time(self, models: dict[str, nn.Module], budget_s: float | None = None) -> dict[str, dict]:
        """Result rows by model name (the first model is the reference of `speedup_vs_dense`).
        A runtime that cannot run here is an error: a plan needs its measurements."""
        bench = [BenchModel(name, "dense" if i == 0 else "slim", m.cpu().eval(), self.spec)
                 for i, (name, m) in enumerate(models.items())]
        settings = self.settings if budget_s is None else replace(self.settings, budget_s=budget_s)
        rows = measure(bench, self.runtimes, settings, self.ctx, show=self.show)
        bad = [r for r in rows if r["status"] != "ok"]
        if bad:
            raise CompressError(f"runtime {bad[0]['runtime']} cannot measure {bad[0]['model']} here: {bad[0]['reason']}",
                                "choose another --runtime (ort-cpu and torch run on any CPU)")
        return {r["model"]: r for r in rows}


def table_key(model: nn.Module, spec: ModelSpec, runtime: str, batch: int, threads: int, round_to: int,
              device: str) -> dict:
    gpu = torch.cuda.get_device_name(0) if device != "cpu" and torch.cuda.is_available() else None
    return {"model": spec.to_dict(), "widths": conv_widths(model), "runtime": runtime, "batch": batch,
            "threads": threads, "round_to": round_to, "fractions": list(FRACTIONS), "cpu": cpu_name(), "gpu": gpu,
            "versions": {k: v for k, v in versions().items() if k in ("torch", "onnxruntime", "torch_pruning")}}


def cache_file(key: dict, label: str) -> Path:
    """The table's file in the cache folder; `label` (ModelSpec.label: 'vgg13', 'my_vgg.vgg13') names it,
    never a user's source path, which would point outside the cache."""
    digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return cache_folder() / f"{label}_{key['runtime']}_b{key['batch']}_t{key['threads']}_{digest}.json"


def build_table(model: nn.Module, spec: ModelSpec, timer: SideBySide, *, round_to: int = 16,
                use_cache: bool = True) -> tuple[LatencyTable, Path, bool]:
    """The model's latency table on the timer's runtime: from the cache when the key matches,
    else measured now and cached. Returns (table, its file, whether it came from the cache)."""
    model = model.cpu().eval()
    key = table_key(model, spec, timer.settings.runtimes[0], timer.settings.batch_sizes[0], timer.threads,
                     round_to, timer.settings.device)
    path = cache_file(key, spec.label)
    if use_cache and path.is_file():
        try:
            table = LatencyTable.from_dict(json.loads(path.read_text()))
            if table.key == json.loads(json.dumps(key, default=str)):
                return table, path, True
        except (ValueError, KeyError, json.JSONDecodeError):
            pass  # a damaged or older cache file: measure again and replace it
    groups = filter_groups(model, spec.example_input())
    variants: dict[str, nn.Module] = {"dense": model}
    where: dict[str, tuple[str, int]] = {}
    for g in groups:
        for w in measured_widths(g, round_to):
            name = f"{g.root}@{w}"
            variants[name] = narrowed(model, spec, groups, {g.root: w})
            where[name] = (g.root, w)
    if len(variants) == 1:
        raise CompressError("no channel group of this model is wide enough to narrow",
                            f"every prunable group has fewer than 2 x {round_to} filters; try a smaller --round-to")
    if timer.show:
        out.print(f"latency table: {len(variants) - 1} variants of {len(groups)} channel groups on "
                  f"{key['runtime']}, batch {key['batch']}, {key['threads']} threads (cached for reuse)")
    t0 = time.perf_counter()
    rows = timer.time(variants)
    table_groups: dict = {}
    for g in groups:
        names = [n for n, (r, _) in where.items() if r == g.root]
        if names:
            table_groups[g.root] = {"convs": [f"{c}.weight" for c in g.convs], "channels": g.channels,
                                    "widths": [where[n][1] for n in names],
                                    "ms": [rows[n]["median_ms"] for n in names],
                                    "iqr_ms": [rows[n]["iqr_ms"] for n in names]}
    table = LatencyTable(key=json.loads(json.dumps(key, default=str)), dense_ms=rows["dense"]["median_ms"],
                         groups=table_groups, seconds=round(time.perf_counter() - t0, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(table.to_dict(), indent=1)))
    return table, path, False
