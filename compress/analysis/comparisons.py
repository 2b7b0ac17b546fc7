"""Which differences between a folder's models are real: paired tests on per-image correctness.

Every run stores, for its dense and its result model, which test (and validation) images each
got right (`schedule.scored`). Two models compared on the same images differ only on the
images they disagree on, so the test is paired: McNemar's exact test for one seed
(`stats.paired`), and for several seeds a paired bootstrap that resamples both the seeds and
the images, so the interval holds the training noise as well as the test-set noise.
"""
from __future__ import annotations

import numpy as np

from compress.stats import paired, unpack_correct

# (A, B) pairs the assignment asks about, by (method, kind) of the runs; "dense" is the baseline
QUESTIONS = (
    (("imp", "unstructured"), ("omp", "unstructured")),
    (("imp", "filter"), ("omp", "filter")),
    (("omp", "unstructured"), ("omp", "filter")),
    (("imp", "unstructured"), ("imp", "filter")),
)
BOOTSTRAP = 4000


def correctness(manifests: dict[str, dict], split: str = "test") -> dict:
    """{"dense" or (method, kind): per-image correctness} from run manifests (those that have it)."""
    key = f"{split}_correct"
    found: dict = {}
    for m in manifests.values():
        if m.get("dense", {}).get(key) and "dense" not in found:
            found["dense"] = unpack_correct(m["dense"][key])
        res = m.get("result") or {}
        if res.get(key):
            found[(m["job"]["method"], m["job"]["kind"])] = unpack_correct(res[key])
    return found


def pairs(found: dict) -> list[tuple]:
    """The (A, B) pairs to compare among what was found: each model vs dense, then QUESTIONS."""
    models = [k for k in found if k != "dense"]
    out = [(k, "dense") for k in models] if "dense" in found else []
    return out + [(a, b) for a, b in QUESTIONS if a in found and b in found]


def name(key) -> str:
    return key if isinstance(key, str) else f"{key[0].upper()} {key[1]}"


def one_seed(found: dict) -> list[dict]:
    """McNemar on one seed's models: [{"a", "b", **stats.paired}]."""
    return [{"a": name(a), "b": name(b), **paired(found[a], found[b])} for a, b in pairs(found)]


def bootstrap(a_by_seed: list[list[bool]], b_by_seed: list[list[bool]], reps: int = BOOTSTRAP,
              seed: int = 0) -> dict:
    """A − B in points, averaged over seeds, with a 95% percentile interval and a two-sided p-value
    from a paired bootstrap that resamples seeds and images (the same images for A and B)."""
    a, b = np.array(a_by_seed, dtype=np.int8), np.array(b_by_seed, dtype=np.int8)
    if a.shape != b.shape or a.size == 0:
        raise ValueError("both models need correctness on the same images for every seed")
    d = (a - b).astype(np.float64)  # seeds × images: +1 only A right, -1 only B right
    s, n = d.shape
    rng = np.random.default_rng(seed)
    stats = np.empty(reps)
    for i in range(reps):
        stats[i] = d[rng.integers(0, s, s)][:, rng.integers(0, n, n)].mean()
    diff = d.mean()
    lo, hi = np.percentile(stats, [2.5, 97.5])
    p = min(1.0, 2 * min((np.sum(stats <= 0) + 1) / (reps + 1), (np.sum(stats >= 0) + 1) / (reps + 1)))
    per_seed = (a.mean(1) - b.mean(1)) * 100
    return {"n": int(n), "seeds": int(s), "acc_a": float(100 * a.mean()), "acc_b": float(100 * b.mean()),
            "diff_points": float(100 * diff), "ci_points": (float(100 * lo), float(100 * hi)), "p_value": float(p),
            "per_seed_points": [round(float(x), 2) for x in per_seed], "method": "paired bootstrap over seeds and images"}


def across_seeds(found_by_seed: list[dict]) -> list[dict]:
    """The same pairs as `one_seed`, pooled over seeds (only pairs every seed has)."""
    common = set.intersection(*(set(f) for f in found_by_seed))
    shared = pairs({k: None for k in found_by_seed[0] if k in common})
    return [{"a": name(a), "b": name(b), **bootstrap([f[a] for f in found_by_seed], [f[b] for f in found_by_seed])}
            for a, b in shared]


def sentence(result: dict, alpha: float = 0.05) -> str:
    """'IMP unstructured − OMP unstructured = +0.80 points (95% CI −1.10 to +2.70, p = 0.41): not
    distinguishable on 1017 images'; with seeds, the mean over seeds and how it was tested."""
    lo, hi = result["ci_points"]
    seeds = result.get("seeds")
    where = f"{result['n']} images" + (f" × {seeds} seeds" if seeds else "")
    if result["p_value"] >= alpha:
        verdict = f"not distinguishable on {where}"
    else:
        verdict = f"{result['a'] if result['diff_points'] > 0 else result['b']} is better (p < {alpha:g}, {where})"
    test = "paired bootstrap over seeds and images" if seeds else "McNemar"
    mean = f", mean of {seeds} seeds" if seeds else ""
    return (f"{result['a']} − {result['b']} = {result['diff_points']:+.2f} points{mean} "
            f"(95% CI {lo:+.2f} to {hi:+.2f}; {test}: p = {result['p_value']:.2g}): {verdict}")
