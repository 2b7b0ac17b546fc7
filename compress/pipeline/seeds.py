"""Repeated seeds: one command run once per seed, its files per seed, and what holds across them.

`--seeds 0,1,2` runs a prune command (or `compress all`) three times into `OUT/seed_0`,
`OUT/seed_1`, ...: the retraining seed changes, and the dense baseline is trained per seed
(`--seed-dense each`, the default: the spread then holds the baseline's noise too) or trained
once with the first seed and shared (`--seed-dense shared`: cheaper, and the comparisons then
isolate the pruning). `OUT/seeds.json`, `OUT/report.md` and `OUT/seeds.png` give each model's
mean ± standard deviation over seeds and the paired comparisons pooled over seeds and images.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
from pathlib import Path

from compress.analysis.comparisons import BOOTSTRAP, across_seeds, correctness, sentence
from compress.console import counted, out
from compress.errors import CompressError
from compress.io import atomic_write
from compress.stats import mean_sd, with_ci

SEED_DENSE = ("each", "shared")
MAX_SEEDS = 20


def parse_seeds(text: str) -> tuple[int, ...]:
    """'0,1,2' -> (0, 1, 2): distinct non-negative integers."""
    try:
        seeds = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise CompressError(f"--seeds {text!r} is not a comma-separated list of integers", "e.g. --seeds 0,1,2") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise CompressError(f"--seeds {text!r} must list distinct non-negative integers", "e.g. --seeds 0,1,2")
    if len(seeds) > MAX_SEEDS:
        raise CompressError(f"--seeds lists {len(seeds)} seeds (more than {MAX_SEEDS})", "use fewer seeds")
    return seeds


def seed_dir(root: Path, seed: int) -> Path:
    return Path(root) / f"seed_{seed}"


def for_seed(opts, seed: int, first: int, seed_dense: str, out_dir: Path):
    """The PruneOptions of one seed: its retraining seed, its dense seed, its folder."""
    dense_seed = first if seed_dense == "shared" else seed
    dense = dataclasses.replace(opts.dense, seed=dense_seed)
    return dataclasses.replace(opts, retrain=dataclasses.replace(opts.retrain, seed=seed), dense=dense, out=out_dir)


def open_root(root: Path, resume: bool, force: bool) -> Path:
    """The folder that holds the seeds: new, resumed, or replaced with --force (never a run folder's files)."""
    import shutil

    root = Path(root)
    if root.exists() and any(root.iterdir()):
        if force:
            shutil.rmtree(root)
        elif not resume:
            raise CompressError(f"folder {root} already exists",
                                "pass --resume to continue it, --force to start it afresh, or --out DIR")
    root.mkdir(parents=True, exist_ok=True)
    return root


def run_seeds(run_one, seeds: tuple[int, ...], root: Path, *, resume: bool, force: bool, what: str,
              seed_dense: str, shared_checkpoint: bool, command: list[str] | None) -> dict:
    """`run_one(seed, folder)` for every seed, returning {name: run manifest}; then the summary."""
    if seed_dense not in SEED_DENSE:
        raise CompressError(f"unknown --seed-dense {seed_dense!r}", f"choose one of: {', '.join(SEED_DENSE)}")
    root = open_root(root, resume, force)
    started = datetime.datetime.now().isoformat(timespec="seconds")
    by_seed: dict[int, dict[str, dict]] = {}
    for seed in seeds:
        out.print(f"[bold]seed {seed}[/bold] ({seeds.index(seed) + 1} of {len(seeds)}) → {seed_dir(root, seed)}")
        by_seed[seed] = run_one(seed, seed_dir(root, seed))
    dense_note = ("one dense model, given with --checkpoint, shared by every seed" if shared_checkpoint else
                  f"one dense baseline trained with seed {seeds[0]}, shared by every seed" if seed_dense == "shared"
                  else "a dense baseline trained per seed (its seed = the run's seed)")
    summary = summarize(by_seed, what=what, dense=dense_note, command=command, started=started)
    write_summary(root, summary)
    return summary


# --------------------------------------------------------------------------- the summary
def summarize(by_seed: dict[int, dict[str, dict]], *, what: str, dense: str, command, started: str) -> dict:
    """Per model: accuracy per seed and mean ± sd (test, validation); pooled paired comparisons."""
    seeds = sorted(by_seed)
    first = next(iter(by_seed[seeds[0]].values()))
    ds = first.get("dataset", {})
    models: dict[str, dict] = {}

    def add(name: str, seed: int, test, val, sparsity):
        m = models.setdefault(name, {"test": {}, "val": {}, "sparsity": {}})
        m["test"][seed], m["sparsity"][seed] = test, sparsity
        if val is not None:
            m["val"][seed] = val

    for seed in seeds:
        runs = by_seed[seed]
        d = next(iter(runs.values())).get("dense", {})
        add("dense", seed, d.get("accuracy"), d.get("val_accuracy"), 0.0)
        for name, m in runs.items():
            res = m.get("result") or {}
            if res:
                add(name, seed, res["accuracy"], res.get("val_accuracy"), res["sparsity"])
    for m in models.values():
        for split in ("test", "val"):
            values = [v for v in m[split].values() if v is not None]
            if values:
                mean, sd = mean_sd(values)
                m[f"{split}_mean"], m[f"{split}_sd"] = round(mean, 2), round(sd, 2)
        m["sparsity_mean"] = sum(m["sparsity"].values()) / len(m["sparsity"])
    comparisons, on_val = (pooled([correctness(by_seed[s], split) for s in seeds]) for split in ("test", "val"))
    return {"format": "compress-seeds/1", "what": what, "seeds": seeds, "dense": dense,
            "dataset": {k: ds.get(k) for k in ("name", "train_images", "val_images", "test_images", "choices_on")},
            "model": first.get("model", {}), "models": models, "comparisons": comparisons, "val_comparisons": on_val,
            "folders": {s: f"seed_{s}" for s in seeds}, "command": command, "started": started,
            "finished": datetime.datetime.now().isoformat(timespec="seconds")}


def pooled(found: list[dict]) -> list[dict]:
    """Paired comparisons over seeds, each with its sentence (none when a seed lacks the data)."""
    results = across_seeds(found) if all(len(f) > 1 for f in found) else []
    for c in results:
        c["sentence"] = sentence(c)
    return results


def write_summary(root: Path, summary: dict) -> dict[str, Path]:
    from compress.plots import seeds_figure

    files = {"json": atomic_write(root / "seeds.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=2)))}
    files["png"] = seeds_figure(summary, root / "seeds.png")
    text = "\n".join(report_lines(summary)) + "\n"
    files["md"] = atomic_write(root / "report.md", lambda tmp: tmp.write_text(text))
    out.print(f"seeds summary: {files['md']}, {files['json']}, {files['png']}")
    for c in summary["comparisons"]:
        out.print(f"  {c['sentence']}", soft_wrap=True)
    return files


def report_lines(s: dict) -> list[str]:
    """The across-seeds report: a table of mean ± sd, the comparisons as sentences, the folders."""
    ds, seeds = s["dataset"], s["seeds"]
    n_val, n_test = ds.get("val_images") or None, ds.get("test_images")
    lines = [f"# {s['what']}: {len(seeds)} seeds ({', '.join(map(str, seeds))}), {s['model'].get('name', '?')} on "
             f"{ds.get('name', '?')}", "",
             f"Dense: {s['dense']}. Choices read the {ds.get('choices_on', '?')} split "
             f"({n_val or 0} images); the test split ({n_test} images) is only reported.", "",
             "## Accuracy over seeds", "",
             "Mean ± standard deviation over seeds; in brackets the 95% Wilson interval of one seed's accuracy at "
             "the mean (the test-set noise alone).", "",
             "| model | sparsity | validation | test | test per seed |", "| :--- | ---: | ---: | ---: | :--- |"]
    for name, m in s["models"].items():
        val = f"{m['val_mean']:.2f} ± {m['val_sd']:.2f}" if "val_mean" in m else "–"
        test = f"{m['test_mean']:.2f} ± {m['test_sd']:.2f}" if "test_mean" in m else "–"
        if "test_mean" in m and n_test:
            test += f" {with_ci(m['test_mean'], n_test).split(' ', 1)[1]}"
        per = ", ".join(f"{m['test'][k]:.2f}" for k in sorted(m["test"], key=int))
        lines.append(f"| {name} | {100 * m['sparsity_mean']:.2f}% | {val} | {test} | {per} |")
    lines += ["", "![accuracy per seed](seeds.png)", ""]
    if s["comparisons"]:
        lines += ["## How sure: paired comparisons over seeds and images", "",
                  "Each difference is the mean over seeds of A's minus B's test accuracy on the same images; its "
                  "interval and p-value come from a paired bootstrap that resamples seeds and test images together "
                  f"({BOOTSTRAP} resamples), so both the training noise and the "
                  "test-set noise are in them. Per-seed differences are listed after each sentence. "
                  f"{counted(len(s['comparisons']), 'comparison')} at the 5% level: about {len(s['comparisons']) / 20:.1f} "
                  "'better' verdicts are expected by chance alone (no correction for multiple comparisons).", ""]
        for c in s["comparisons"]:
            lines.append(f"- {c['sentence']} (per seed: {', '.join(f'{d:+.2f}' for d in c['per_seed_points'])})")
        lines.append("")
    if s.get("val_comparisons"):
        lines += ["### The same comparisons on the validation split", "",
                  "To choose between these recipes for another run, read these (the test split above is the "
                  "report; choosing by it would make its numbers optimistic).", ""]
        lines += [f"- {c['sentence']}" for c in s["val_comparisons"]] + [""]
    lines += ["## Per-seed folders", ""] + [f"- seed {k}: [`{v}/`]({v}/) (its own report: `{v}/report.md`)"
                                            for k, v in s["folders"].items()]
    if s.get("command"):
        import shlex

        lines += ["", "## Command", "", "```", shlex.join(s["command"]), "```"]
    return lines


def rewrite_summary(root: Path) -> dict:
    """The summary of a --seeds folder again, from its seeds' manifests (after `compress report`)."""
    root = Path(root)
    old = json.loads((root / "seeds.json").read_text())
    by_seed = {int(s): load_seed_manifests(root / f) for s, f in old["folders"].items()}
    summary = summarize(by_seed, what=old["what"], dense=old["dense"], command=old.get("command"),
                        started=old.get("started", ""))
    summary["finished"] = old.get("finished", summary["finished"])
    write_summary(root, summary)
    return summary


def finished(folder: Path) -> dict[str, dict] | None:
    """A seed's manifests when its folder already holds a complete run or suite (--resume skips it)."""
    try:
        doc = json.loads((Path(folder) / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return load_seed_manifests(folder) if doc.get("status") == "complete" else None


def load_seed_manifests(folder: Path) -> dict[str, dict]:
    """{run name: manifest} of one seed's folder: a run folder, or a suite's runs."""
    folder = Path(folder)
    suite = folder / "manifest.json"
    doc = json.loads(suite.read_text())
    if doc.get("format") == "compress-suite/1":
        return {name: json.loads((folder / rel / "manifest.json").read_text()) for name, rel in doc["runs"].items()}
    return {f"{doc['job']['method']}_{doc['job']['kind']}": doc}
