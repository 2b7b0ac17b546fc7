"""Does distillation from the dense model win accuracy back? Retraining with and without it,
same epochs, several seeds, compared pairwise on the same validation images (test reported).

    python -m compress.bench.distill --dense DENSE.pt [--settings filter70,unstructured95,filter40]
                            [--arms plain,kd] [--seeds 0,1,2] [--teacher BIG.pt] [--out DIR]

Each (setting, arm, seed) is one `compress filter|unstructured` run from the same dense
checkpoint, without the deployment stages; a finished run is reused (the script resumes). The
comparison pools seeds and images: every validation image of every seed is one pair (arm vs
plain), McNemar's exact test and a 95% interval on the paired difference (`compress.stats`).
Arms: plain (cross-entropy), kd (the `Distill` defaults), kd_a0.9 / kd_t2 / ... (alpha,
temperature), teacher (the defaults with --teacher). Writes OUT/distill.json and prints tables.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from compress.checkpoint import load_checkpoint, split_for, with_contract
from compress.console import err, out
from compress.data import load_dataset
from compress.env import machine
from compress.errors import CompressError
from compress.io import atomic_write
from compress.kinds import Kind
from compress.presets import retrain_config, shipped_config
from compress.prune.ratios import allocate, read_ratio_file
from compress.prune.rebuild import model_from_checkpoint
from compress.prune.schedule import PruneJob, Run, prune
from compress.stats import paired, unpack_correct
from compress.train import Distill

SETTINGS = {  # name: (kind, overall ratio, allocation)
    "filter70": ("filter", 0.7, "uniform"),
    "unstructured95": ("unstructured", 0.95, "uniform"),
    "filter40": ("filter", 0.4, "auto"),  # the shipped ratio file configs/vgg13_filter_0.40.yaml
}


def arm_distill(arm: str, teacher: Path | None) -> Distill | None:
    """'plain' -> None; 'kd' -> the defaults; 'kd_a0.9_t2' -> alpha 0.9, T 2; 'teacher' -> --teacher."""
    if arm == "plain":
        return None
    d = Distill()
    if arm == "teacher":
        if teacher is None:
            raise CompressError("the teacher arm needs --teacher CHECKPOINT")
        return dataclasses.replace(d, teacher=str(teacher))
    for part in arm.split("_")[1:]:
        if part.startswith("a"):
            d = dataclasses.replace(d, alpha=float(part[1:]))
        elif part.startswith("t"):
            d = dataclasses.replace(d, temperature=float(part[1:]))
    return d


def run_one(setting: str, arm: str, seed: int, dense_path: Path, teacher: Path | None, data,
            folder: Path) -> dict:
    """One OMP run of the setting from the dense checkpoint (the library calls a prune command
    makes, without its deployment stages); a finished run folder is read back instead."""
    if (folder / "manifest.json").exists() and Run(folder).read().get("status") == "complete":
        return Run(folder).read()
    kind, ratio, allocation = SETTINGS[setting]
    dense = load_checkpoint(dense_path, kinds=("dense",))
    data = split_for(with_contract(data, dense), dense, None)
    model = model_from_checkpoint(dense)
    definition = Kind(kind).definition
    shipped = shipped_config("vgg13", definition, ratio) if allocation == "auto" else None
    ratios = read_ratio_file(shipped, model, definition) if shipped else allocate(model, definition, ratio, "uniform")
    job = PruneJob(kind=kind, method="omp", target=ratio, ratios=ratios,
                   retrain=dataclasses.replace(retrain_config("vgg13"), seed=seed), distill=arm_distill(arm, teacher))
    if folder.exists():
        shutil.rmtree(folder)  # an unfinished run starts again
    return prune(job, dense, data, folder, device=torch.device("cpu"), show=False, dense_path=dense_path)


def compare(manifests: dict[int, dict], reference: dict[int, dict], split: str) -> dict:
    """Arm vs plain pooled over the seeds both have: every image of every seed is one pair."""
    key = "val_correct" if split == "val" else "test_correct"
    a, b = [], []
    for seed in sorted(set(manifests) & set(reference)):
        a += unpack_correct(reference[seed]["result"][key])
        b += unpack_correct(manifests[seed]["result"][key])
    r = paired(b, a)  # stats.paired's difference is its first argument minus its second: arm - plain
    return {"seeds": sorted(set(manifests) & set(reference)), "plain": round(r["acc_b"], 2),
            "arm": round(r["acc_a"], 2), "diff": round(r["diff_points"], 2),
            "ci": [round(v, 2) for v in r["ci_points"]], "p": r["p_value"], "images": r["n"]}


def markdown(results: dict) -> str:
    """The README's table: per setting and arm, accuracy over seeds and the paired difference."""
    rows = ["| setting | retraining | validation % (seeds) | vs cross-entropy, validation | test % (seeds) | "
            "vs cross-entropy, test | s / epoch (teacher) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for setting, arms in results.get("settings", {}).items():
        for arm, r in arms.items():
            d = r.get("distill")
            how = "cross-entropy" if d is None else (
                f"distilled, alpha {d['alpha']:g}, T {d['temperature']:g}" + (", teacher " + Path(d["teacher"]).name
                                                                               if d.get("teacher") else ""))
            mean = lambda v: sum(v) / len(v)  # noqa: E731
            cell = lambda c: (f"{c['diff']:+.2f} ({c['ci'][0]:+.2f} to {c['ci'][1]:+.2f}), p = {c['p']:.2g}"  # noqa: E731
                              if c else "")
            rows.append(f"| {setting} | {how} | {mean(r['val']):.2f} ({', '.join(f'{v:.2f}' for v in r['val'])}) | "
                        f"{cell(r.get('vs_plain_val'))} | {mean(r['test']):.2f} "
                        f"({', '.join(f'{v:.2f}' for v in r['test'])}) | {cell(r.get('vs_plain_test'))} | "
                        f"{r['epoch_seconds']:.1f} ({r['teacher_seconds_per_epoch']:.1f}) |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m compress.bench.distill", description=__doc__.split("\n\n")[0])
    p.add_argument("--dense", type=Path, required=True, help="dense VGG13 checkpoint of ours (compress train)")
    p.add_argument("--settings", default="filter70,unstructured95", help=f"of {', '.join(SETTINGS)}")
    p.add_argument("--arms", default="plain,kd")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--teacher", type=Path, default=None, help="a stronger teacher for the 'teacher' arm")
    p.add_argument("--data", default="sample")
    p.add_argument("--out", type=Path, default=Path("runs/distill"))
    args = p.parse_args(argv)
    try:
        settings, arms = args.settings.split(","), args.arms.split(",")
        seeds = [int(s) for s in args.seeds.split(",")]
        unknown = [s for s in settings if s not in SETTINGS]
        if unknown:
            raise CompressError(f"unknown setting {unknown[0]!r}", f"choose from {', '.join(SETTINGS)}")
        data = load_dataset(args.data, quiet=True)
        results = json.loads((args.out / "distill.json").read_text()) if (args.out / "distill.json").exists() else {}
        m = machine()
        results.update(machine=f"{m['cpu']} ({', '.join(m['cpu_int8']) or 'no VNNI/AMX'})", threads=m["torch_threads"],
                       versions={k: m[k] for k in ("torch", "torch_pruning") if k in m}, dense=str(args.dense))
        for setting in settings:
            runs: dict[str, dict[int, dict]] = {}
            for arm in arms:
                for seed in seeds:
                    t0 = time.perf_counter()
                    m = run_one(setting, arm, seed, args.dense, args.teacher, data,
                                args.out / setting / arm / f"seed_{seed}")
                    runs.setdefault(arm, {})[seed] = m
                    hist = [h for r in m["rounds"] for h in r["history"]]
                    teacher_s = sum(h.get("teacher_seconds", 0) for h in hist)
                    train_s = sum(h["seconds"] for h in hist)
                    err.print(f"{setting} {arm} seed {seed}: val {m['result']['val_accuracy']:.2f}% test "
                              f"{m['result']['accuracy']:.2f}% ({time.perf_counter() - t0:.0f} s; training "
                              f"{train_s:.0f} s, of which teacher {teacher_s:.0f} s)")
            row = results.setdefault("settings", {}).setdefault(setting, {})
            for arm in arms:
                hist = [h for m in runs[arm].values() for r in m["rounds"] for h in r["history"]]
                row[arm] = {"val": [runs[arm][s]["result"]["val_accuracy"] for s in seeds],
                            "test": [runs[arm][s]["result"]["accuracy"] for s in seeds],
                            "epoch_seconds": round(sum(h["seconds"] for h in hist) / len(hist), 1),
                            "teacher_seconds_per_epoch": round(sum(h.get("teacher_seconds", 0) for h in hist)
                                                               / len(hist), 1),
                            "distill": runs[arm][seeds[0]].get("distill")}
                if arm != "plain" and "plain" in runs:
                    row[arm]["vs_plain_val"] = compare(runs[arm], runs["plain"], "val")
                    row[arm]["vs_plain_test"] = compare(runs[arm], runs["plain"], "test")
            atomic_write(args.out / "distill.json", lambda tmp: tmp.write_text(json.dumps(results, indent=2)))
            for arm, r in row.items():
                if "vs_plain_val" in r:
                    v, t = r["vs_plain_val"], r["vs_plain_test"]
                    out.print(f"{setting} {arm} vs plain, seeds {v['seeds']}: validation {v['arm']:.2f} vs "
                              f"{v['plain']:.2f} ({v['diff']:+.2f} points, 95% CI {v['ci'][0]:+.2f} to "
                              f"{v['ci'][1]:+.2f}, McNemar p = {v['p']:.2g}, {v['images']} pairs); test "
                              f"{t['arm']:.2f} vs {t['plain']:.2f} ({t['diff']:+.2f}, {t['ci'][0]:+.2f} to "
                              f"{t['ci'][1]:+.2f}); epoch {r['epoch_seconds']} s, teacher "
                              f"{r['teacher_seconds_per_epoch']} s of it", soft_wrap=True)
        atomic_write(args.out / "distill.md", lambda tmp: tmp.write_text(markdown(results)))
        out.print(f"wrote {args.out / 'distill.json'} and distill.md ({results['machine']}, "
                  f"{results['threads']} threads)")
        return 0
    except CompressError as e:
        err.print(f"error: {e}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
