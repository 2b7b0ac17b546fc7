"""From a command's options to a finished run: dense baseline, ratios, prune, then the
deployment stages (slim, export, bench, figures, report). The CLI only parses and prints."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import torch

from compress.baseline import get_baseline
from compress.checkpoint import build_spec, check_fits_data, load_dense, save_checkpoint, split_for, with_contract
from compress.console import notice, out
from compress.data import Dataset
from compress.errors import CompressError
from compress.kinds import Kind
from compress.models import ModelSpec
from compress.models.sources import allow_code, canonical, code_trusted
from compress.pipeline.options import DEFAULT_MODEL, PruneOptions
from compress.pipeline.stages import bench_stage, link_or_copy, record_stage, report_stage, run_stages
from compress.presets import shipped_config
from compress.prune.ratios import allocate, planned_sparsity, read_ratio_file, round_to_multiple
from compress.prune.rebuild import model_from_checkpoint
from compress.prune.schedule import PruneJob, Run, prune, teacher_checkpoint
from compress.report.runs import failed_stages
from compress.train import evaluate


def requested_spec(opts: PruneOptions, data: Dataset) -> ModelSpec | None:
    """The model the options name (None when only a checkpoint of ours names it)."""
    if opts.model is None and opts.checkpoint is not None:
        return None
    if opts.model is not None:
        allow_code(opts.model)  # named by the caller: its checkpoints may rebuild from it
    return ModelSpec(canonical(opts.model or DEFAULT_MODEL), data.num_classes, opts.width, data.image_size,
                     args=dict(opts.model_args))


def resolve_dense(opts: PruneOptions, data: Dataset, device: torch.device) -> tuple[ModelSpec, dict | None, Dataset]:
    """The spec to prune, the dense checkpoint when one was given (ours, or foreign weights
    imported and evaluated), and the data normalised as that model expects, with the validation
    split it was trained beside (see `split_for`). Nothing is written."""
    wanted = requested_spec(opts, data)
    if opts.checkpoint is None:
        return wanted, None, split_for(data, None, opts.val_split, opts.val_data)
    dense = load_dense(opts.checkpoint, wanted, trust_pickle=opts.trust_pickle)
    spec = ModelSpec.from_dict(dense["model"])
    check_fits_data(spec, data, str(opts.checkpoint))
    data = split_for(with_contract(data, dense), dense, opts.val_split, opts.val_data)
    model = model_from_checkpoint(dense)  # the weights fit the model and are finite, before any folder exists
    if "imported" in dense["meta"]:
        imported = dense["meta"]["imported"]
        out.print(f"[bold]weights[/bold] from {opts.checkpoint}: {imported['summary']}", soft_wrap=True)
        acc = evaluate(model.to(device), data, device)[0]
        dense["meta"].update(accuracy=round(acc, 2), dataset=data.describe(), epochs=None)
        imported["accuracy_warning"] = chance_warning(acc, data)
        norm = lambda v: ",".join(f"{x:.4g}" for x in v)  # noqa: E731
        out.print(f"[bold]imported model[/bold] {spec.describe()}: {acc:.2f}% on {data.test_x.shape[0]} test images, "
                  f"inputs normalised with mean {norm(data.mean)} std {norm(data.std)} (pass --mean/--std if your "
                  "training used other values)", soft_wrap=True)
        if imported["accuracy_warning"]:
            notice(imported["accuracy_warning"])
        imported["validation_warning"] = optimistic_validation(data)
        if imported["validation_warning"]:
            notice(imported["validation_warning"])
    return spec, dense, data


def place_dense(opts: PruneOptions, spec: ModelSpec, given: dict | None, data: Dataset, device: torch.device,
                dest: Path) -> tuple[dict, Path]:
    """The dense checkpoint and the file it lives in, with `dest` (a run folder's dense.pt)
    holding it: given weights of ours are linked, imported ones saved as ours, and without any a
    baseline is taken from the cache or trained now."""
    if given is not None and "imported" in given["meta"]:
        if not dest.exists():
            save_checkpoint(dest, given)
        return given, dest
    if given is not None:
        dense, path = given, Path(opts.checkpoint)
    else:
        dense, path = get_baseline(spec, data, opts.dense, device=device, show=opts.show,
                                   sync_bn=opts.sync_bn)
    if not dest.exists():
        link_or_copy(path, dest)
    return dense, path


def optimistic_validation(data: Dataset) -> str | None:
    """Weights trained elsewhere may have seen the images a validation split holds out of the
    training split: every choice made on them then looks better than it is. Said, unless the
    validation images came from a separate --val-data folder."""
    vs = data.extra.get("val_split")
    if not data.has_val or (isinstance(vs, dict) and vs.get("separate")):
        return None
    return (f"the validation split ({data.val_x.shape[0]} images) is held out of the training images, which your "
            "own training may have used: validation numbers (and the choices made on them) can be optimistic; "
            "pass --val-data SOURCE with images your model never trained on")


def chance_warning(acc: float, data: Dataset) -> str | None:
    """A loud note when an imported model scores near chance: its input contract is probably off."""
    chance = 100 / data.num_classes
    if acc >= min(2 * chance, chance + (100 - chance) / 4):
        return None
    return (f"[bold red]the imported model is near chance[/bold red] ({acc:.2f}% vs {chance:.1f}% for guessing): "
            "the usual causes are another input normalisation (pass the --mean/--std it was trained with), "
            "another class order, or weights that were never trained; pruning it will not tell you anything")


def resolve_ratios(opts: PruneOptions, model: torch.nn.Module,
                   spec: ModelSpec | None = None) -> tuple[dict[str, float], float, str]:
    """(layer ratios, overall target, where they came from)."""
    kind = Kind(opts.kind).definition
    if opts.kind == Kind.NM:
        from compress.prune.masks import nm_layers

        n, m = opts.nm
        names = nm_layers(model, m)
        ratios = {name: 1 - n / m for name in names}
        return ratios, planned_sparsity(model, kind, ratios), f"{n}:{m} on {len(names)} layers"
    config = opts.config
    source = "file"
    if config is None and opts.allocation == "auto" and opts.ratio is not None and spec is not None \
            and spec.source_kind == "registry":
        config = shipped_config(spec.name, kind, opts.ratio)
        source = "shipped"
    if config is not None:
        ratios = read_ratio_file(config, model, kind)
        if opts.round_to:
            ratios = round_to_multiple(model, ratios, opts.round_to, opts.ratio or 0.0)
        reached = planned_sparsity(model, kind, ratios)
        if opts.ratio is not None and reached < opts.ratio - 5e-3:
            raise CompressError(f"the ratio file {config} reaches {reached:.4f} overall {kind} sparsity, "
                                f"below --ratio {opts.ratio}", "raise its ratios, or lower --ratio")
        target = opts.ratio if opts.ratio is not None else math.floor(reached * 100 + 1e-9) / 100
        return ratios, target, f"{'shipped ' if source == 'shipped' else ''}ratio file {config}"
    if opts.ratio is None:
        raise CompressError(f"{opts.kind} pruning needs --ratio R or --config YAML", "e.g. --ratio 0.8")
    method = "uniform" if opts.allocation == "auto" else opts.allocation
    ratios = allocate(model, kind, opts.ratio, method)
    if opts.round_to:
        ratios = round_to_multiple(model, ratios, opts.round_to, opts.ratio)
    return ratios, opts.ratio, f"{method} allocation" + (f", widths rounded to {opts.round_to}" if opts.round_to else "")


def global_allocation(model: torch.nn.Module, opts: PruneOptions, target: float, data: Dataset,
                      spec: ModelSpec) -> dict[str, float]:
    """Layer ratios from ranking every unit of every layer together, by the run's criterion."""
    from compress.prune.criteria import get_criterion

    example = spec.example_input().to(next(model.parameters()).device)
    return get_criterion(opts.criterion).global_ratios(model, opts.kind, target, data, example)


def default_run_dir(opts: PruneOptions, target: float, spec: ModelSpec) -> Path:
    sched = "omp" if opts.method == "omp" else f"imp{opts.rounds}"
    kind = f"nm{opts.nm[0]}{opts.nm[1]}" if opts.kind == Kind.NM else opts.kind
    if opts.plan is not None:
        p = opts.plan
        goal = f"{p.speedup:g}x" if p.speedup else f"{p.latency_ms:g}ms"
        return Path("runs") / f"{spec.label}_{kind}_{goal}_{p.runtime}_b{p.batch}_{sched}"
    return Path("runs") / f"{spec.label}_{kind}_{target:.2f}_{sched}"


def seeds_root(opts: PruneOptions, spec: ModelSpec) -> Path:
    """The default folder of a --seeds run (its seed_N folders inside)."""
    if opts.plan is None and opts.ratio is None and opts.config is not None:
        sched = "omp" if opts.method == "omp" else f"imp{opts.rounds}"
        return Path("runs") / f"{spec.label}_{opts.kind}_{Path(opts.config).stem}_{sched}_seeds"
    target = opts.ratio if opts.ratio is not None else 1 - opts.nm[0] / opts.nm[1]
    path = default_run_dir(opts, target, spec)
    return path.with_name(path.name + "_seeds")


def planned_ratios(opts: PruneOptions, spec: ModelSpec, given: dict | None, data: Dataset,
                   device: torch.device):
    """Ratios for a measured speed-up (`compress filter --speedup`), planned on the trained dense
    model (the cached baseline, trained now if there is none) before any run folder exists: a
    target the runtime cannot reach is an error that costs no retraining."""
    from compress.analysis.planner import make_plan

    opts.check()
    opts.plan.validate()
    dense = given if given is not None else get_baseline(spec, data, opts.dense,
                                                         device=device, show=opts.show)[0]
    model = model_from_checkpoint(dense)
    plan = make_plan(model, spec, data, opts.plan, show=opts.show)
    out.print(plan.summary())
    if not plan.met:
        raise CompressError(f"{opts.plan.describe()} cannot be reached: the best measured is "
                            f"{plan.measured_speedup:.2f}x (nothing was written)",
                            "lower --speedup (or raise --latency-ms); `compress plan` shows the attempts")
    target = math.floor(plan.filter_sparsity * 100 + 1e-9) / 100
    return plan, plan.ratios, target, f"latency plan: {plan.summary()}"


def open_run_dir(path: Path, resume: bool, force: bool) -> Path:
    if path.exists() and any(path.iterdir()):
        if resume:
            return path
        if not force:
            raise CompressError(f"run folder {path} already exists",
                                "pass --resume to continue it, --force to start it afresh, or --out DIR")
        shutil.rmtree(path)
    elif resume:
        raise CompressError(f"nothing to resume in {path}", "drop --resume to start the run")
    path.mkdir(parents=True, exist_ok=True)
    return path


def recipe_line(job: PruneJob, opts: PruneOptions, data: Dataset) -> str:
    """The resolved recipe in one line, printed before any work (the manifest keeps it whole, as
    `job`, and the dense checkpoint its `train_config`)."""
    r = job.retrain
    rounds = f"{job.rounds} rounds ({job.schedule}, {job.rewind} rewinding)" if job.method == "imp" else "one shot"
    dense = (f"dense: {opts.checkpoint}" if opts.checkpoint is not None else
             f"dense: {opts.dense.epochs} epochs, batch {opts.dense.batch_size}, lr {opts.dense.lr:g}/128 (cached "
             "when trained before)")
    return (f"[bold]recipe[/bold]: {job.method.upper()} {job.kind} to {job.target:.2f}, {rounds}, {job.criterion}; "
            f"retraining {r.epochs} epochs, batch {r.batch_size}, peak lr {r.lr:g} per 128 images, warm-up "
            f"{r.warmup_epochs:g} epochs, {r.schedule}, seed {r.seed}"
            + (f", distilled (alpha {job.distill.alpha:g}, T {job.distill.temperature:g})" if job.distill else "")
            + f"; {dense}; choices on "
            + (f"{data.val_x.shape[0]} validation images" if data.has_val else "the test split (no validation split)"))


def run_prune(opts: PruneOptions, data: Dataset, device: torch.device) -> dict:
    """The whole prune command; returns the run manifest (with paths of every artifact)."""
    # ---- checks that need no training come first: a bad ratio file or weights that do not fit
    # the model must not cost a baseline, nor leave a run folder behind
    opts.check()
    spec, given, data = resolve_dense(opts, data, device)
    if given is None and spec.source_kind != "registry":
        notice(f"model: {spec.describe()}")
    probe = build_spec(spec)
    plan = None
    if opts.plan is not None:
        plan, ratios, target, source = planned_ratios(opts, spec, given, data, device)
    else:
        ratios, target, source = resolve_ratios(opts, probe, spec)
    from compress.report.tables import ratio_table

    if opts.kind != Kind.NM and not source.startswith("global"):  # a plan's summary was printed above it
        out.print(ratio_table(probe, opts.kind, ratios, "latency plan" if plan is not None else source))
    job = PruneJob(kind=opts.kind, method=opts.method, target=target, ratios=ratios, rounds=opts.rounds,
                   schedule=opts.schedule, rewind=opts.rewind, criterion=opts.criterion, retrain=opts.retrain,
                   nm=opts.nm, distill=opts.distill)
    job.validate()
    if job.distill is not None:
        teacher_checkpoint(job.distill, None, data)  # a teacher that cannot teach this data costs no folder
    out.print(recipe_line(job, opts, data), soft_wrap=True)
    run_dir = open_run_dir(opts.out or default_run_dir(opts, target, spec), opts.resume, opts.force)

    dense, dense_path = place_dense(opts, spec, given, data, device, run_dir / "dense.pt")
    if source.startswith("global"):  # a global ranking needs the trained weights, not the probe's
        trained = model_from_checkpoint(dense).to(device)
        job.ratios = global_allocation(trained, opts, target, data, spec)
        source = f"global {opts.criterion} ranking"
        out.print(ratio_table(trained, opts.kind, job.ratios, source))
    manifest = prune(job, dense, data, run_dir, device=device, resume=opts.resume, show=opts.show,
                     dense_path=dense_path, sync_bn=opts.sync_bn)
    manifest["ratio_source"] = source
    manifest["command"] = opts.command
    if code_trusted():
        manifest["trust_code"] = True
    bench_settings = None
    if plan is not None:
        from compress.analysis.planner import write_plan

        files = write_plan(plan, run_dir / "plan", spec.describe(), force=True)
        manifest["plan"] = {"target_speedup": plan.target_speedup, "predicted_speedup": plan.predicted_speedup,
                            "measured_speedup": plan.measured_speedup, "runtime": plan.request["runtime"],
                            "batch": plan.request["batch"], "files": [str(f.relative_to(run_dir)) for f in files]}
        bench_settings = {"batch_sizes": tuple(sorted({1, 64, plan.request["batch"]}))}
    if "imported" in dense["meta"]:
        manifest["imported"] = dense["meta"]["imported"]
    manifest.setdefault("artifacts", {})
    Run(run_dir).write(manifest)
    return run_stages(run_dir, data, device, opts.stages, bench_settings=bench_settings, max_drop=opts.max_drop)


# --------------------------------------------------------------------------- the full set
SUITE = (("omp", "unstructured"), ("imp", "unstructured"), ("omp", "filter"), ("imp", "filter"))


def run_all(base: PruneOptions, ratios: dict[str, float], data: Dataset, device: torch.device,
            out_dir: Path, rounds: int = 3) -> dict:
    """The assignment's four models (OMP/IMP × unstructured/filter) from one dense baseline, each
    slimmed/exported, then one benchmark and one report over all of them, in one suite folder."""
    import datetime
    import json
    import time

    from compress.env import versions
    from compress.io import atomic_write

    t0 = time.perf_counter()
    for method, kind in SUITE:  # every run's recipe checked before any training, not after the first run
        PruneJob(kind=kind, method=method, target=ratios[kind], ratios={}, rounds=rounds if method == "imp" else 1,
                 schedule=base.schedule, rewind=base.rewind, criterion=base.criterion, retrain=base.retrain,
                 distill=base.distill).validate()
    spec, given, data = resolve_dense(base, data, device)  # weights checked before the folder exists
    if base.distill is not None:
        teacher_checkpoint(base.distill, None, data)
    suite = open_run_dir(out_dir, base.resume, base.force)
    dense, _ = place_dense(base, spec, given, data, device, suite / "dense.pt")
    manifest = {"format": "compress-suite/1", "status": "running", "model": spec.to_dict(),
                "dataset": data.describe(), "dense": {"path": "dense.pt", "accuracy": dense["meta"]["accuracy"],
                                                   "val_accuracy": dense["meta"].get("val_accuracy")},
                "runs": {}, "results": {}, "command": base.command, "versions": versions(), "device": str(device),
                **({"trust_code": True} if code_trusted() else {}),
                "started": datetime.datetime.now().isoformat(timespec="seconds")}

    def write():
        atomic_write(suite / "manifest.json", lambda tmp: tmp.write_text(json.dumps(manifest, indent=2)))

    write()
    for method, kind in SUITE:
        name = f"{method}_{kind}"
        run_dir = suite / name
        if base.resume and (run_dir / "manifest.json").exists() and Run(run_dir).read().get("status") == "complete" \
                and not failed_stages(Run(run_dir).read()):
            m = Run(run_dir).read()
        else:
            opts = PruneOptions(**{**base.__dict__, "model": None, "model_args": {}, "width": 1.0,
                                   "kind": kind, "ratio": ratios[kind], "method": method,
                                   "round_to": base.round_to if kind == Kind.FILTER else 0,
                                   "rounds": rounds if method == "imp" else 1, "checkpoint": suite / "dense.pt",
                                   "out": run_dir, "resume": base.resume and run_dir.exists(), "force": True,
                                   "stages": tuple(s for s in base.stages if s in ("slim", "export", "quantize"))})
            m = run_prune(opts, data, device)
            from compress.report.tables import prune_summary

            out.print(prune_summary(m))
        manifest["runs"][name] = name
        manifest["results"][name] = dict(m["result"], path=f"{name}/{m['result']['path']}",
                                         slim=(f"{name}/{m['artifacts']['slim']}" if m.get("artifacts", {}).get("slim") else None))
        write()
    artifacts = manifest.setdefault("artifacts", {})
    stages = manifest.setdefault("stages", {})
    if "bench" in base.stages:
        artifacts["bench"] = record_stage(manifest, "bench", lambda: bench_stage(suite, device, None))
    write()
    if "report" in base.stages:
        artifacts["report"] = record_stage(manifest, "report", lambda: report_stage(suite))
    failed = failed_stages(manifest)
    failed.update({f"{name}/{stage}": error for name in manifest["runs"]
                   for stage, error in failed_stages(Run(suite / name).read()).items()})
    manifest.update(status="failed" if failed else "complete", failed=failed, seconds=round(time.perf_counter() - t0, 1),
                    finished=datetime.datetime.now().isoformat(timespec="seconds"))
    del stages
    write()
    return manifest
