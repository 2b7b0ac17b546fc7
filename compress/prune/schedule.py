"""OMP and IMP: prune to a target (at once, or in rounds), retrain with masks, save the result.

A run folder holds everything: `manifest.json` (config, per-round sparsity/accuracy/timings,
status), `rounds/round_K.pt` after each completed round, and the result model named as the
assignment asks (`Imp_filter_0.40_acc_92.70.pt`). Each round is seeded from (seed, round),
so `resume=True` continues after the last completed round and ends exactly where an
uninterrupted run would (on CPU).
"""
from __future__ import annotations

import datetime
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from compress.baseline import rewind_path
from compress.checkpoint import check_fits_data, load_checkpoint, load_state, save_checkpoint
from compress.console import notice, out
from compress.data import Dataset
from compress.distributed import check_same
from compress.enforcer import MaskEnforcer
from compress.env import versions
from compress.errors import CompressError
from compress.io import atomic_write
from compress.kinds import CRITERION, REWIND, REWINDS, SCHEDULE, Kind
from compress.models import ModelSpec
from compress.prune.criteria import get_criterion
from compress.prune.masks import apply_masks, filter_groups, filter_masks, nm_masks, unstructured_masks
from compress.prune.ratios import planned_sparsity
from compress.prune.rebuild import model_from_checkpoint
from compress.prune.sparsity import sparsity_report, write_report
from compress.stats import pack_correct, unpack_correct
from compress.train import Distill, Teacher, TrainConfig, correct_per_image, evaluate, train


@dataclass
class PruneJob:
    """What to prune, how far, in how many rounds, and how to retrain."""

    kind: str  # "unstructured" | "filter" | "nm"
    method: str  # "omp" | "imp"
    target: float  # overall sparsity the final ratios reach (the name's 0.80 / 0.40)
    ratios: dict[str, float]  # final layer ratios
    rounds: int = 1
    schedule: str = SCHEDULE  # or "linear", or explicit overall targets "0.5,0.7,0.8"
    rewind: str = REWIND  # between rounds: "finetune" | "lr" (rewind the lr schedule) | "weights" (lottery ticket)
    criterion: str = CRITERION
    retrain: TrainConfig = field(default_factory=TrainConfig)  # epochs = total budget over all rounds
    nm: tuple[int, int] = (2, 4)
    distill: Distill | None = None  # retrain with a teacher's logits (None: cross-entropy only)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["retrain"] = self.retrain.to_dict()
        d["nm"] = list(self.nm)
        if self.distill is None:
            del d["distill"]  # runs without distillation keep the manifest they always had (and resume)
        return d

    def validate(self) -> None:
        if self.method == "omp" and self.rounds != 1:
            raise CompressError("OMP prunes once", "use --imp K for several rounds")
        if self.method == "imp" and self.rounds < 1:
            raise CompressError(f"--imp needs at least 1 round (got {self.rounds})", "e.g. --imp 3")
        if self.rewind not in REWINDS:
            raise CompressError(f"unknown --rewind {self.rewind!r}", f"choose one of: {', '.join(REWINDS)}")
        if self.retrain.epochs < self.rounds:
            raise CompressError(f"{self.retrain.epochs} retraining epochs cannot cover {self.rounds} rounds",
                                f"pass --epochs {self.rounds} or more (the budget is split across rounds)")
        round_targets(self)  # schedule syntax
        if self.distill is not None:
            self.distill.validate()

    @property
    def result_stem(self) -> str:
        return f"{self.method.capitalize()}_{self.kind}_{self.target:.2f}"


def round_targets(job: PruneJob) -> list[float]:
    """Overall sparsity after each round; the last is the final target.

    geometric: s_k = 1 - (1 - s)^(k/K) (each round removes the same share of what is left);
    linear: s_k = s·k/K; or an explicit, increasing list ending at the target.
    """
    s, K = job.target, job.rounds
    if job.schedule == "geometric":
        return [1 - (1 - s) ** (k / K) for k in range(1, K + 1)]
    if job.schedule == "linear":
        return [s * k / K for k in range(1, K + 1)]
    try:
        values = [float(v) for v in job.schedule.split(",")]
    except ValueError:
        raise CompressError(f"--schedule {job.schedule!r} is not geometric, linear or a list like 0.5,0.7,0.8") from None
    if len(values) != K or any(b < a for a, b in zip(values, values[1:])) or abs(values[-1] - s) > 1e-6:
        raise CompressError(f"--schedule {job.schedule} must list {K} increasing targets ending at {s}",
                            "e.g. --imp 3 --schedule 0.5,0.7,0.8 for a target of 0.8")
    return values


def round_ratios(ratios: dict[str, float], target: float, round_target: float) -> dict[str, float]:
    """Layer ratios for an intermediate overall target: each layer follows its own geometric path.

    With progress p = log(1 - s_k) / log(1 - s), layer l gets 1 - (1 - r_l)^p: p = 1 gives
    the final ratios exactly, and the overall sparsity follows s_k closely.
    """
    if target <= 0 or round_target >= target:
        return dict(ratios)
    p = math.log1p(-round_target) / math.log1p(-target)
    return {n: 1 - (1 - r) ** p for n, r in ratios.items()}


def epochs_per_round(total: int, rounds: int) -> list[int]:
    """Split the retraining budget; the last rounds get the remainder (they prune the most)."""
    base, extra = divmod(total, rounds)
    return [base + (1 if k >= rounds - extra else 0) for k in range(rounds)]


def round_config(job: PruneJob, k: int, epochs: int) -> TrainConfig:
    """Retraining recipe of round k (0-based), by what happens between rounds."""
    cfg = job.retrain.to_dict() | {"epochs": epochs, "seed": job.retrain.seed * 1000 + k + 1}
    if job.rewind == "finetune":  # continue at a small constant rate
        cfg |= {"schedule": "constant", "lr": job.retrain.lr / 10, "warmup_epochs": 0.0}
    return TrainConfig(**cfg)


# --------------------------------------------------------------------------- masks per kind
def compute_masks(job: PruneJob, model: nn.Module, ratios: dict[str, float], data: Dataset,
                  previous: dict | None, example: torch.Tensor, groups=None) -> dict[str, torch.Tensor]:
    scores = get_criterion(job.criterion).scores(model, job.kind, ratios, data, example)
    if job.kind == Kind.UNSTRUCTURED:
        return unstructured_masks(model, ratios, scores, previous)
    if job.kind == Kind.FILTER:
        return filter_masks(model, ratios, example, scores, previous, groups=groups)
    if job.kind == Kind.NM:
        return nm_masks(model, list(ratios), *job.nm, scores=scores)
    raise CompressError(f"unknown pruning kind {job.kind!r}")


# --------------------------------------------------------------------------- distillation
def teacher_checkpoint(distill: Distill, dense: dict | None, data: Dataset) -> dict:
    """The checkpoint a run distils from (the dense model it prunes, or `distill.teacher`: any
    checkpoint of ours, dense, pruned or slim), checked against the data: callable before a run
    folder exists (`dense=None` then checks only a named teacher)."""
    if distill.teacher is None:
        return dense
    what = f"the teacher {distill.teacher}"
    ckpt = load_checkpoint(distill.teacher)
    check_fits_data(ModelSpec.from_dict(ckpt["model"]), data, what)
    recorded = ckpt["meta"].get("dataset") or {}
    for key in ("mean", "std"):
        theirs, ours = recorded.get(key), list(getattr(data, key))
        if theirs is not None and any(abs(a - b) > 1e-4 for a, b in zip(theirs, ours)):
            raise CompressError(f"{what} expects inputs normalised with {key} {theirs}, the student's data use "
                                f"{[round(v, 4) for v in ours]}", "pass a teacher trained with the same --mean/--std")
    return ckpt


def make_teacher(distill: Distill, dense: dict, data: Dataset, device: torch.device) -> tuple[Teacher, dict]:
    """The run's Teacher, and what the manifest records of it (scored on validation)."""
    ckpt = teacher_checkpoint(distill, dense, data)
    model = model_from_checkpoint(ckpt).to(device)
    split = "val" if data.has_val else "test"
    teacher = Teacher(model, distill.alpha, distill.temperature)
    info = {**distill.to_dict(), "teacher_model": ModelSpec.from_dict(ckpt["model"]).describe(),
            "teacher_kind": ckpt.get("kind", "dense"),
            f"teacher_{split}_accuracy": round(evaluate(model, data, device, split=split)[0], 2),
            "teacher_mib": round(teacher.weights_mib(), 1)}
    recorded = (ckpt["meta"].get("dataset") or {}).get("val_split")
    if distill.teacher is not None and recorded != data.extra.get("val_split"):
        notice(f"the teacher {distill.teacher} was trained beside another validation split: it may have seen "
               "validation images, which can flatter the student's validation accuracy")
    return teacher, info


def teacher_summary(info: dict) -> str:
    """'vgg13, 73.10% on val': the teacher a manifest's `distill` records, with its accuracy."""
    acc = next((f", {v:.2f}% on {k.split('_')[1]}" for k, v in info.items() if k.endswith("_accuracy")), "")
    return f"{info.get('teacher_model', '?')}{acc}"


def distill_line(info: dict) -> str:
    """What the run distils from, in one line."""
    source = info["teacher"] or "the dense model"
    return (f"[bold]distillation[/bold]: teacher {source} ({teacher_summary(info)}, {info['teacher_mib']:.1f} "
            f"MiB of weights), alpha {info['alpha']:g}, temperature {info['temperature']:g}")


# --------------------------------------------------------------------------- the run
class Run:
    """A run folder: manifest, per-round checkpoints, result files."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.manifest_path = self.path / "manifest.json"

    def read(self) -> dict:
        try:
            return json.loads(self.manifest_path.read_text())
        except (OSError, json.JSONDecodeError):
            raise CompressError(f"{self.manifest_path} is missing or unreadable", "start the run again without --resume") from None

    def write(self, manifest: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write(self.manifest_path, lambda tmp: tmp.write_text(json.dumps(manifest, indent=2)))

    def round_path(self, k: int) -> Path:
        return self.path / "rounds" / f"round_{k}.pt"


def prune(job: PruneJob, dense: dict, data: Dataset, run_dir: Path, *, device: torch.device,
          resume: bool = False, show: bool = True, dense_path: Path | None = None,
          on_round=None, sync_bn: bool = False) -> dict:
    """Run OMP/IMP from a dense checkpoint; returns the manifest (with the result's path)."""
    job.validate()
    run = Run(run_dir)
    spec = ModelSpec.from_dict(dense["model"])
    model = model_from_checkpoint(dense).to(device)
    example = spec.example_input().to(device)
    manifest = _new_manifest(job, dense, data, run, spec, model, device, dense_path)
    masks, start = None, 0
    if resume:
        manifest, masks, start = _resumed(run, manifest, data, model, spec)
    run.write(manifest)

    rewind_state = _rewind_weights(dense_path) if job.rewind == "weights" else None
    teacher = None
    if job.distill is not None:
        teacher, manifest["distill"] = make_teacher(job.distill, dense, data, device)
        if show:
            out.print(distill_line(manifest["distill"]), soft_wrap=True)
        run.write(manifest)
    groups = filter_groups(model, example) if job.kind == Kind.FILTER else None  # one graph for every round
    targets, budgets = round_targets(job), epochs_per_round(job.retrain.epochs, job.rounds)
    for k in range(start, job.rounds):
        t0 = time.perf_counter()
        masks = compute_masks(job, model, round_ratios(job.ratios, job.target, targets[k]), data, masks, example, groups)
        check_same(masks, f"the masks of round {k + 1}")  # computed on every rank from the same weights
        apply_masks(model, masks)
        acc_pruned = evaluate(model, data, device)[0]
        val_pruned = evaluate(model, data, device, split="val")[0] if data.has_val else None
        if rewind_state is not None:  # lottery ticket: surviving weights back to their early values
            load_state(model, rewind_state, spec.name)
            apply_masks(model, masks)
        label = f"{job.method.upper()} round {k + 1}/{job.rounds}" if job.rounds > 1 else f"{job.method.upper()}"
        result = train(model, data, round_config(job, k, budgets[k]), device=device, masks=masks, show=show,
                       label=f"{label} {100 * targets[k]:.1f}%", sync_bn=sync_bn, teacher=teacher)
        MaskEnforcer(model, masks).check()  # pruned weights are still exactly zero
        record = {"round": k + 1, "target": round(targets[k], 4),
                  "sparsity": sparsity_report(model, Kind(job.kind).definition)["overall"],
                  "acc_after_prune": round(acc_pruned, 2), "acc_after_retrain": round(result.test_acc, 2),
                  **({"val_after_prune": round(val_pruned, 2), "val_after_retrain": round(result.val_acc, 2)}
                     if data.has_val else {}),
                  "epochs": budgets[k], "seconds": round(time.perf_counter() - t0, 1),
                  "history": result.history}
        save_checkpoint(run.round_path(k + 1), _payload(job, spec, model, masks, data, record,
                                                        manifest["dense"]["accuracy"], manifest))
        manifest["rounds"].append(record)
        run.write(manifest)
        if on_round:
            on_round(k + 1, record)
    return _finish(job, run, manifest, model, spec, data, device)


def _new_manifest(job: PruneJob, dense: dict, data: Dataset, run: Run, spec: ModelSpec, model: nn.Module,
                  device: torch.device, dense_path: Path | None) -> dict:
    """The run's manifest before its first round: the job, the model, the data and the dense model scored."""
    # "vs dense" compares with the dense model measured here, on these test images: a number stored
    # in the checkpoint may come from another test set (said when it does)
    scores = scored(model, data, device)
    right = unpack_correct(scores["test_correct"])
    dense_acc = 100 * sum(right) / len(right)
    stored, recorded = dense["meta"].get("accuracy"), dense["meta"].get("dataset") or {}
    if stored is not None and recorded.get("fingerprint", "").split("-")[0] != data.fingerprint.split("-")[0]:
        notice(f"the dense model was measured on {recorded.get('name', 'other data')} ({stored:.2f}%); on this run's "
               f"{data.name} test images it scores {dense_acc:.2f}%, which is what the pruned models are compared with")
    return {
        "format": "compress-run/1", "status": "running", "job": job.to_dict(), "model": spec.to_dict(),
        "dataset": data.describe(),
        "dense": {"path": str(dense_path) if dense_path else None, "accuracy": dense_acc,
                  "meta_epochs": dense["meta"].get("epochs"), **scores},
        "versions": versions(), "device": str(device), "rounds": [], "run_dir": str(run.path),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def _resumed(run: Run, manifest: dict, data: Dataset, model: nn.Module, spec: ModelSpec):
    """(manifest, masks, rounds done) of the run folder to continue; its model holds the last
    finished round's weights. Another job, model or data is an error."""
    old = run.read()
    if old.get("job") != manifest["job"] or old.get("model") != manifest["model"] or \
            old.get("dataset", {}).get("fingerprint") != data.fingerprint:
        raise CompressError(f"{run.path} was started with other settings",
                            "resume with the same command, or start afresh with --force")
    old["rounds"] = [r for r in old["rounds"] if run.round_path(r["round"]).exists()]
    if not old["rounds"]:
        return old, None, 0
    last = old["rounds"][-1]["round"]
    ckpt = load_checkpoint(run.round_path(last), kinds=("pruned",))
    load_state(model, ckpt["state_dict"], spec.name)
    return old, ckpt["masks"], last


def _finish(job: PruneJob, run: Run, manifest: dict, model: nn.Module, spec: ModelSpec, data: Dataset,
            device: torch.device) -> dict:
    """The last round's model saved under the assignment's name, its sparsity, the manifest complete."""
    acc = manifest["rounds"][-1]["acc_after_retrain"]
    name = f"{job.result_stem}_acc_{acc:.2f}.pt"
    ckpt = load_checkpoint(run.round_path(job.rounds), kinds=("pruned",))
    for old in run.path.glob(f"{job.result_stem}_acc_*.pt"):
        if old.name != name:
            old.unlink()
    save_checkpoint(run.path / name, ckpt)
    load_state(model, ckpt["state_dict"], spec.name)
    definition = Kind(job.kind).definition
    report = sparsity_report(model, definition)
    write_report(report, run.path / "sparsity.json")
    planned = planned_sparsity(model, definition, job.ratios) if job.kind != Kind.NM else report["overall"]
    manifest.update(status="complete", finished=datetime.datetime.now().isoformat(timespec="seconds"),
                    result={"path": name, "accuracy": acc, "sparsity": report["overall"], **scored(model, data, device),
                            "acc_after_prune": manifest["rounds"][0]["acc_after_prune"],
                            "planned_sparsity": planned})
    run.write(manifest)
    return manifest


def scored(model: nn.Module, data: Dataset, device) -> dict:
    """Per-image correctness on test (and validation), packed: what paired comparisons between
    runs read later, without the models (see stats.paired)."""
    doc = {"test_correct": pack_correct(correct_per_image(model, data, device))}
    if data.has_val:
        right = correct_per_image(model, data, device, split="val")
        doc.update(val_accuracy=round(100 * sum(right) / len(right), 2), val_correct=pack_correct(right))
    return doc


def _payload(job, spec, model, masks, data, record, dense_acc, manifest) -> dict:
    return {
        "kind": "pruned",
        "model": spec.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "masks": {k: v.cpu() for k, v in masks.items()},
        "meta": {"prune_kind": job.kind, "method": job.method, "target": job.target, "rounds": job.rounds,
                 "round": record["round"], "criterion": job.criterion, "ratios": job.ratios,
                 "sparsity": record["sparsity"], "accuracy": record["acc_after_retrain"],
                 "val_accuracy": record.get("val_after_retrain"),
                 "acc_after_prune": record["acc_after_prune"], "dense_accuracy": dense_acc,
                 "dataset": data.describe(), "seed": job.retrain.seed, "versions": manifest["versions"],
                 "job": job.to_dict()},
    }


def _rewind_weights(dense_path: Path | None) -> dict:
    path = rewind_path(dense_path) if dense_path else None
    if path is None or not path.exists():
        raise CompressError("--rewind weights needs the dense run's early-epoch weights (*.rewind.pt)",
                            "use a baseline trained by this toolchain, or --rewind lr")
    return load_checkpoint(path)["state_dict"]
