"""One-shot sparsity sweep: prune a trained model at many sparsities and see where it breaks.

The lab's question is where accuracy gives way, so the sweep must be fine (91 points from
80% to 98%) and each point cheap. A point restores the original weights (a tensor copy, no
file read), applies masks cut from scores sorted once per layer, and evaluates with
BatchNorm folded into the convs in channels-last layout: 3-4.5 s per point for full-width
VGG13 on the 1017-image sample on 2 CPU cores (the default 91 points took 402 s with
another job on the machine). Optionally each point is treated before it
is measured: its BatchNorm statistics re-estimated on a few training batches (no weight
changes; one-shot accuracy of BN networks collapses early mostly because those statistics
go stale), and/or a short masked fine-tune with the shared training loop. The untreated
one-shot accuracy is kept beside it.

The trade-off rule: walking up the grid, the trade-off is the last point before accuracy
first falls more than `tolerance` points below dense (the highest sparsity within tolerance
that is not preceded by a breakdown; a lucky point after the curve has collapsed does not count).
Every point is measured on the validation split (the choice reads nothing else) and, for the
report only, on the test split; without a validation split (--val-split 0) the test split is
both, and the outputs say so.
The default tolerance is one point or two standard errors of an accuracy on the split it reads,
whichever is larger: on the sample's 814 validation images one standard error is 1.6 points
(3.2 as tolerance), so a fixed one-point rule would stop at the first unlucky point (measured
on the test split before there was a validation split: the 80% point of VGG13 sat 1.5 points
below dense while 81-85% sat 1.1-2.1 below, and the rule fell back to the knee at 92%, 15
points down). On full CIFAR-10 (5000 validation images) it stays one point.
"""
from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from .checkpoint import atomic_write, check_fits_data, check_writable, load_state, model_from_checkpoint
from .train import TrainConfig, autocast, train
from .console import progress
from .criteria import CRITERIA, scores_for
from .data import Dataset, Loader, eval_loader
from .distributed import current, gathered, mine
from .errors import CompressError, did_you_mean
from .masks import apply_masks, filter_groups, filter_masks, unstructured_masks
from .models import ModelSpec
from .ratios import ALLOCATIONS, allocate, prunable, pruned_count
from .sparsity import DEFINITIONS, sparsity_report

KINDS = ("unstructured", "filter")
# Unstructured: the lab's range, where a trained CNN goes from "no loss" to "collapsed".
# Filter: whole filters go much sooner (a pruned filter removes a feature map everything
# downstream reads), so the interesting part starts near 5% and is over well before 90%;
# 0.01 steps are about one filter of a 64-filter layer.
DEFAULT_GRID = {"unstructured": (0.80, 0.98, 0.002), "filter": (0.05, 0.90, 0.01)}
MAX_POINTS = 1000
SYNFLOW_ITERATIONS = 100  # score-and-prune steps up to the highest target (the paper's default)
RULE = ("the last sparsity before accuracy first falls more than {tol:g} point(s) below dense; "
        "if the first point already does, the knee of the curve")


@dataclass
class SweepOptions:
    kind: str = "unstructured"
    start: float | None = None  # None: DEFAULT_GRID[kind]
    stop: float | None = None
    step: float | None = None
    allocation: str = "global"  # where the overall target goes: the same ratio per layer, or one global ranking
    criteria: tuple[str, ...] = ("magnitude",)
    recalibrate_bn: int = 4  # batches of training images to re-estimate BatchNorm statistics per point (0: none)
    finetune_steps: int = 0  # masked SGD steps per point (0: pure one-shot)
    finetune_lr: float = 0.01  # constant, at batch 128: a tenth of the dense peak
    finetune_batch: int = 128
    tolerance: float | None = None  # accuracy points below dense still acceptable (None: see `default_tolerance`)
    seed: int = 0

    def grid(self) -> list[float]:
        start, stop, step = DEFAULT_GRID.get(self.kind, DEFAULT_GRID["unstructured"])
        return sparsity_grid(self.start if self.start is not None else start,
                             self.stop if self.stop is not None else stop,
                             self.step if self.step is not None else step)

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise CompressError(f"a sweep prunes unstructured or filter, not {self.kind!r}", did_you_mean(self.kind, KINDS))
        if self.allocation not in ALLOCATIONS:
            raise CompressError(f"unknown allocation {self.allocation!r}", did_you_mean(self.allocation, ALLOCATIONS))
        if not self.criteria:
            raise CompressError("no criterion given", f"e.g. --criteria {','.join(CRITERIA)}")
        for c in self.criteria:
            if c not in CRITERIA:
                raise CompressError(f"unknown criterion {c!r}", did_you_mean(c, CRITERIA))
        if len(set(self.criteria)) != len(self.criteria):
            raise CompressError(f"criteria listed twice: {','.join(self.criteria)}", "name each criterion once")
        if self.tolerance is not None and not (math.isfinite(self.tolerance) and self.tolerance >= 0):
            raise CompressError(f"--tolerance must be a number of accuracy points >= 0 (got {self.tolerance})",
                                "e.g. --tolerance 1.0 for 'within one point of dense'")
        if self.finetune_steps < 0:
            raise CompressError(f"--finetune-steps must be >= 0 (got {self.finetune_steps})")
        if self.recalibrate_bn < 0:
            raise CompressError(f"--recalibrate-bn must be >= 0 (got {self.recalibrate_bn})")
        self.grid()

    @property
    def treatment(self) -> str:
        """What happens to each pruned point before it is measured, in words ('' for nothing)."""
        parts = []
        if self.recalibrate_bn:
            parts.append(f"BatchNorm re-estimated on {self.recalibrate_bn * self.finetune_batch} images")
        if self.finetune_steps:
            parts.append(f"{self.finetune_steps} masked fine-tune step{'s' if self.finetune_steps != 1 else ''}")
        return " + ".join(parts)


def sparsity_grid(start: float, stop: float, step: float) -> list[float]:
    """start, start+step, ... up to stop inclusive (when it lies on the grid), rounded to 1e-6."""
    for name, v in (("start", start), ("stop", stop)):
        if not (math.isfinite(v) and 0 <= v < 1):
            raise CompressError(f"--{name} {v} is not a sparsity in [0, 1)", "e.g. --start 0.80 --stop 0.98")
    if start > stop:
        raise CompressError(f"--start {start} is above --stop {stop}", "the sweep goes from low to high sparsity")
    if not (math.isfinite(step) and step > 0):
        raise CompressError(f"--step must be positive (got {step})", "e.g. --step 0.002")
    n = int(math.floor((stop - start) / step + 1e-6)) + 1
    if n > MAX_POINTS:
        raise CompressError(f"that grid has {n} points (more than {MAX_POINTS})", "use a larger --step")
    return [round(start + i * step, 6) for i in range(n)]


def standard_error(accuracy: float, images: int) -> float:
    """Binomial standard error, in points, of an accuracy measured on `images` images."""
    p = accuracy / 100
    return 100 * math.sqrt(p * (1 - p) / max(images, 1))


def default_tolerance(dense_acc: float, images: int) -> float:
    """One point, or two standard errors when the split is too small for one point to be signal."""
    return max(1.0, round(2 * standard_error(dense_acc, images), 1))


def choose_tradeoff(points: list[dict], dense_acc: float, tolerance: float) -> dict | None:
    """The point just before the first one more than `tolerance` below dense; when the first
    point already is, the knee of the curve (see `knee`). The result says which (`by`)."""
    ordered = sorted(points, key=lambda p: p["target"])
    best = None
    for p in ordered:
        if p["accuracy"] < dense_acc - tolerance - 1e-9:
            break
        best = p
    if best is not None:
        return best | {"by": "tolerance"}
    k = knee(ordered)
    return None if k is None else k | {"by": "knee"}


def knee(ordered: list[dict]) -> dict | None:
    """Kneedle (Satopää et al. 2011): with sparsity and accuracy scaled to [0, 1], the point
    farthest above the straight line from the first point to the last, i.e. where accuracy
    turns from sliding to falling. Needs three points and a curve that ends lower than it starts."""
    if len(ordered) < 3 or ordered[-1]["accuracy"] >= ordered[0]["accuracy"]:
        return None
    x0, x1 = ordered[0]["target"], ordered[-1]["target"]
    y0, y1 = ordered[0]["accuracy"], ordered[-1]["accuracy"]
    if x1 <= x0:
        return None

    def lift(p):  # height above the chord, in scaled units
        x = (p["target"] - x0) / (x1 - x0)
        return (p["accuracy"] - y1) / (y0 - y1) - (1 - x)

    return max(ordered[1:-1], key=lift)


# --------------------------------------------------------------------------- fast evaluation
class Evaluator:
    """Accuracy of a (masked) model on one split, with BatchNorm folded into its convs.

    The batches are normalised once; folding halves the work of BN-heavy CNNs in
    eval mode and gives the same predictions up to float rounding. Models FX cannot trace
    are evaluated as they are.
    """

    def __init__(self, data: Dataset, device: torch.device, batch_size: int = 500, split: str = "test"):
        self.device, self.split = device, split
        self.batches = [(xb.to(device).contiguous(memory_format=torch.channels_last), yb.to(device))
                        for xb, yb in eval_loader(data, batch_size, split)]
        self.images = sum(int(yb.numel()) for _, yb in self.batches)

    @torch.no_grad()
    def accuracy(self, model: nn.Module) -> float:
        net = fold_batchnorm(model).to(memory_format=torch.channels_last)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        for xb, yb in self.batches:
            with autocast(self.device):
                correct += (net(xb).argmax(1) == yb).sum()
        return 100.0 * correct.item() / self.images


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy with each Conv-BN pair fused into one conv (torch.fx), or the model itself."""
    model.eval()
    try:
        from torch.fx.experimental.optimization import fuse

        return fuse(model)
    except Exception:  # untraceable control flow: plain evaluation is still right, just slower
        return model


# --------------------------------------------------------------------------- masks at any sparsity
class OneShot:
    """Masks for a rising list of overall targets from one trained model.

    Magnitude and Taylor scores do not depend on the target: they are computed once, each
    layer is sorted once, and a point's mask is "all but the k lowest" (equal to
    `unstructured_masks` / `filter_masks` with the same ratios and scores). SynFlow's
    iterative scores do depend on it: one iterative pass runs up to the highest target and
    hands out the mask at each target on the way (see `SynflowPath`).

    Layer ratios come from `allocate` on a frozen copy of the original weights: uniform, or
    one global ranking by the criterion's own scores (SynFlow: its log scores for
    unstructured; magnitude for filter, as filter scores are normalised per layer).
    """

    def __init__(self, model: nn.Module, kind: str, criterion: str, allocation: str, data: Dataset,
                 example: torch.Tensor, groups=None):
        import copy

        self.kind, self.criterion, self.allocation = kind, criterion, allocation
        self.reference = copy.deepcopy(model).eval()  # the original weights, whatever happens to `model`
        self.data, self.example = data, example
        self.params = prunable(self.reference, kind)
        self.groups = groups if kind != "filter" or groups is not None else filter_groups(self.reference, example)
        self.scores = None
        if criterion == "taylor":  # target-independent: once
            self.scores = scores_for(criterion, kind, self.reference, {n: 0.5 for n in self.params}, data, example)
        self.order = {}
        if kind == "unstructured" and criterion != "synflow":
            for n, w in self.params.items():
                s = (self.scores[n] if self.scores is not None else w.detach().abs()).flatten().float().cpu()
                self.order[n] = torch.argsort(s, stable=True)

    def ratios(self, target: float, scores: dict | None = None) -> dict[str, float]:
        if self.allocation != "global":
            return allocate(self.reference, self.kind, target, "uniform")
        if self.criterion == "synflow" and self.kind == "filter":
            scores = None
        return allocate(self.reference, self.kind, target, "global", scores=scores if scores is not None else self.scores)

    def masks(self, ratios: dict[str, float]) -> dict[str, torch.Tensor]:
        if self.kind == "filter":
            return filter_masks(self.reference, ratios, self.example, self.scores, groups=self.groups)
        masks = {}
        for n, r in ratios.items():
            w = self.params[n]
            keep = torch.ones(w.numel(), dtype=torch.bool)
            keep[self.order[n][: pruned_count(r, w.numel())]] = False
            masks[n] = keep.view_as(w)
        return masks

    def along(self, targets: list[float]):
        """(target, masks) for each target, in rising order."""
        if self.criterion == "synflow":
            yield from SynflowPath(self.reference, self.kind, self.ratios, targets, self.example, self.groups,
                                   iterations=SYNFLOW_ITERATIONS)
            return
        for t in targets:
            yield t, self.masks(self.ratios(t))


class SynflowPath:
    """One iterative SynFlow pass (Tanaka et al. 2020) that yields the mask at each target.

    Running SynFlow's 100 score-and-prune steps separately for each of 91 sweep points
    would cost hours for VGG13 on a CPU. Instead the exponential schedule runs once up to
    the highest target, with each target inserted as an extra step; masks only grow, as in
    IMP, so each point is the mask iterative SynFlow had reached at that sparsity.
    `ratio_fn(s, log_scores)` gives the layer ratios at overall sparsity s.
    """

    def __init__(self, model: nn.Module, kind: str, ratio_fn, targets: list[float], example: torch.Tensor,
                 groups=None, iterations: int = 100):
        from .criteria import linearise

        self.model, self.kind, self.ratio_fn, self.example, self.groups = model, kind, ratio_fn, example, groups
        self.targets = sorted(targets)
        top = self.targets[-1]
        steps = {round(1 - (1 - top) ** (i / iterations), 9) for i in range(1, iterations + 1)}
        self.schedule = sorted(steps | set(self.targets))
        self.net = linearise(model)

    def __iter__(self):
        params = dict(self.net.named_parameters())
        names = list(prunable(self.net, self.kind))
        ones = torch.ones((1, *self.example.shape[1:]), dtype=torch.float64, device=self.example.device)
        masks = None
        wanted = set(self.targets)
        for s in self.schedule:
            self.net.zero_grad(set_to_none=True)
            self.net(ones).sum().backward()
            with torch.no_grad():
                sal = {n: (params[n].grad * params[n]).abs() for n in names}
                if self.kind == "filter":
                    scores = {n: v.flatten(1).sum(1).float().cpu() for n, v in sal.items()}
                else:  # log: products of |w| over many layers overflow float32's range
                    scores = {n: v.clamp_min(1e-300).log().float().cpu() for n, v in sal.items()}
            ratios = self.ratio_fn(s, scores)
            if self.kind == "filter":
                masks = filter_masks(self.model, ratios, self.example, scores, previous=masks, groups=self.groups)
            else:
                masks = unstructured_masks(self.model, ratios, scores, previous=masks)
            apply_masks(self.net, masks)  # pruned weights (and channels, BN included) carry no flow
            if s in wanted:
                yield s, masks


def finetune_subset(data: Dataset, steps: int, batch_size: int, seed: int) -> Dataset:
    """`steps` batches of training images (fixed, the same for every point) and one test image.

    The training loop evaluates on the test split at its end; one image keeps that cheap, as
    the sweep measures every point with its own evaluator.
    """
    n = steps * batch_size
    g = torch.Generator().manual_seed(seed)
    perms = [torch.randperm(data.train_x.shape[0], generator=g) for _ in range(-(-n // data.train_x.shape[0]))]
    idx = torch.cat(perms)[:n].to(data.train_x.device)
    return Dataset(name=data.name, source=data.source, classes=data.classes, train_x=data.train_x[idx],
                   train_y=data.train_y[idx], test_x=data.test_x[:1], test_y=data.test_y[:1], mean=data.mean,
                   std=data.std, fingerprint=data.fingerprint)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, data: Dataset, batches: int, batch_size: int = 128, seed: int = 0) -> None:
    """Re-estimate BatchNorm running statistics of a pruned model (no weight changes).

    Pruning shifts every later layer's activation statistics, so the dense model's running
    mean/var no longer fit and one-shot accuracy collapses far earlier than the weights
    alone would explain ("adaptive BN", Li et al., EagleEye, 2020). A cumulative average
    over a fixed set of training batches (the same for every point) replaces them; only the
    BatchNorm layers run in training mode, so dropout stays off. The batches are augmented
    as in training: the network learned its weights under those statistics, and estimating
    them on clean images instead cost 2.4 points on dense VGG13 with nothing pruned
    (71.78% vs 74.14%; augmented: 74.04%).
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or batches <= 0:
        return
    model.eval()
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch counts equally
        m.train()
    device = next(model.parameters()).device
    loader = Loader(data.train_x, data.train_y, batch_size, mean=data.mean, std=data.std, shuffle=True,
                    augment=True, generator=torch.Generator().manual_seed(seed))
    try:
        with torch.no_grad():
            for i, (xb, _) in enumerate(loader):
                if i == batches:
                    break
                model(xb.to(device))
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom
        model.eval()


# --------------------------------------------------------------------------- blocks
def layer_blocks(model: nn.Module, example: torch.Tensor, kind: str) -> dict[str, str]:
    """Block of each prunable layer: convs grouped by output resolution (VGG's stages between
    pools, ResNet's stages), linear layers as "classifier". Found by one forward pass."""
    names = {f"{m}.weight": mod for m, mod in model.named_modules() if isinstance(mod, (nn.Conv2d, nn.Linear))}
    wanted = {n: names[n] for n in prunable(model, kind) if n in names}
    sizes: dict[str, tuple[int, int]] = {}

    def record(name):
        def hook(module, inputs, output):  # returns None: the output is left alone
            sizes.setdefault(name, tuple(output.shape[-2:]))
        return hook

    hooks = [mod.register_forward_hook(record(n)) for n, mod in wanted.items() if isinstance(mod, nn.Conv2d)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    order = sorted(set(sizes.values()), key=lambda hw: -hw[0] * hw[1])
    out = {}
    for n, mod in wanted.items():
        if n in sizes:
            h, w = sizes[n]
            out[n] = f"block {order.index((h, w)) + 1} ({h}×{w})"
        else:
            out[n] = "classifier"
    return out


def layer_table(rep: dict, model: nn.Module, kind: str, blocks: dict[str, str]) -> dict:
    """A `sparsity_report` with each layer's block and type, and per-block and per-type totals."""
    import copy

    rep = copy.deepcopy(rep)
    params = prunable(model, kind)
    per_block: dict[str, dict] = {}
    for row in rep["layers"]:
        row["block"] = blocks.get(row["name"], "")
        row["type"] = "conv" if len(row["shape"]) == 4 else "linear"
        row["weights"] = params[row["name"]].numel()
        b = per_block.setdefault(row["block"], {"block": row["block"], "layers": [], "pruned": 0, "total": 0})
        b["layers"].append(row["name"])
        b["pruned"] += row["pruned"]
        b["total"] += row["total"]
    for b in per_block.values():
        b["sparsity"] = b["pruned"] / max(1, b["total"])
    rep["blocks"] = list(per_block.values())
    by_type: dict[str, list] = {}
    for row in rep["layers"]:
        by_type.setdefault(row["type"], [0, 0])
        by_type[row["type"]][0] += row["pruned"]
        by_type[row["type"]][1] += row["total"]
    rep["by_type"] = {t: {"pruned": p, "total": n, "sparsity": p / max(1, n)} for t, (p, n) in by_type.items()}
    return rep


def describe_blocks(rep: dict, allocation: str) -> list[str]:
    """Plain sentences on where the sparsity went: early or late blocks, conv or linear."""
    if allocation == "uniform":
        return ["uniform allocation: every layer gets the same ratio by construction, so blocks differ only by "
                "rounding; sweep with --allocation global to let one ranking decide where to prune"]
    blocks = [b for b in rep["blocks"] if b["block"] != "classifier"]
    lines = []
    if blocks:
        hi = max(blocks, key=lambda b: b["sparsity"])
        lo = min(blocks, key=lambda b: b["sparsity"])
        trend = "later" if blocks.index(hi) > blocks.index(lo) else "earlier"
        total = sum(b["total"] for b in rep["blocks"])
        unit = rep.get("unit", "weights")
        lines.append(f"the sparsest conv block is {hi['block']} ({100 * hi['sparsity']:.1f}%, holding "
                     f"{100 * hi['total'] / total:.1f}% of the {unit}), the least sparse {lo['block']} "
                     f"({100 * lo['sparsity']:.1f}%, {100 * lo['total'] / total:.1f}% of the {unit}): "
                     f"the {trend} blocks end up sparser")
    t = rep.get("by_type", {})
    if "conv" in t and "linear" in t:
        lines.append(f"conv layers {100 * t['conv']['sparsity']:.1f}% sparse, linear (classifier) "
                     f"{100 * t['linear']['sparsity']:.1f}%")
    return lines


# --------------------------------------------------------------------------- the sweep
@dataclass
class SweepResult:
    summary: dict  # what sweep.json holds
    files: dict[str, Path] = field(default_factory=dict)


def prepare_analysis(ckpt: dict, data: Dataset, device: torch.device, out_dir: Path, names, force: bool):
    """What a sweep and a sensitivity scan both start from, checked before any work: their output
    files writable, the model fitting the data; then the model on the device, a copy of its
    original weights to restore between points, and an example input. Returns
    (spec, model, original state, example)."""
    from .slim import example_input

    for n in names:
        check_writable(out_dir / n, force=force)
    spec = ModelSpec.from_dict(ckpt["model"])
    check_fits_data(spec, data)
    model = model_from_checkpoint(ckpt).to(device)
    original = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return spec, model, original, example_input(spec).to(device)


def run_sweep(ckpt: dict, data: Dataset, opts: SweepOptions, out_dir: Path, *, device: torch.device,
              source: str = "", show: bool = True, force: bool = False, command: list[str] | None = None) -> SweepResult:
    """Sweep a dense checkpoint; writes sweep.csv/json/png and tradeoff_layers.json/png to `out_dir`."""
    from .env import machine

    opts.validate()
    grid = opts.grid()
    out_dir = Path(out_dir)
    spec, model, original, example = prepare_analysis(
        ckpt, data, device, out_dir, ("sweep.csv", "sweep.json", "sweep.png", "tradeoff_layers.json",
                                      "tradeoff_layers.png"), force)
    evaluator = Evaluator(data, device, split=data.choice_split)  # what the trade-off reads
    tester = Evaluator(data, device) if data.has_val else None  # reported beside it, never read by a choice
    t_start = time.perf_counter()
    dense_acc = evaluator.accuracy(model)
    dense_test = tester.accuracy(model) if tester else dense_acc
    blocks = layer_blocks(model, example, opts.kind)
    groups = filter_groups(model, example) if opts.kind == "filter" else None
    tune_data = finetune_subset(data, opts.finetune_steps, opts.finetune_batch, opts.seed) if opts.finetune_steps else None

    def restore():
        load_state(model, original, spec.name)

    points: list[dict] = []
    index = 0
    reports: dict[tuple[str, float], dict] = {}  # per-layer sparsity of every point (a few numbers each)
    total = len(grid) * len(opts.criteria)
    with progress(show=show) as bar:
        task = bar.add_task(f"sweep {spec.name} {opts.kind}", total=total, status="")
        for criterion in opts.criteria:
            restore()
            pruner = OneShot(model, opts.kind, criterion, opts.allocation, data, example, groups)
            t0 = time.perf_counter()
            for target, masks in pruner.along(grid):
                restore()
                apply_masks(model, masks)
                rep = sparsity_report(model, opts.kind)
                reports[(criterion, target)] = rep
                sparsity = rep["overall"]
                index += 1
                if not mine(index - 1):  # under torchrun the points are dealt round robin to the ranks
                    bar.update(task, advance=1)
                    continue
                acc = acc_oneshot = evaluator.accuracy(model)
                if opts.recalibrate_bn:
                    recalibrate_bn(model, data, opts.recalibrate_bn, opts.finetune_batch, opts.seed)
                    acc = evaluator.accuracy(model)
                if tune_data is not None:
                    cfg = TrainConfig(epochs=1, batch_size=opts.finetune_batch, lr=opts.finetune_lr, warmup_epochs=0.0,
                                      schedule="constant", eval_every=0, seed=opts.seed)
                    train(model, tune_data, cfg, device=device, masks=masks, show=False, data_parallel=False)
                    acc = evaluator.accuracy(model)
                p = {"criterion": criterion, "target": target, "sparsity": round(sparsity, 6),
                     "accuracy": round(acc, 2), "drop": round(dense_acc - acc, 2),
                     "test_accuracy": round(tester.accuracy(model) if tester else acc, 2),
                     "seconds": round(time.perf_counter() - t0, 3)}
                if opts.treatment:
                    p["acc_oneshot"] = round(acc_oneshot, 2)
                points.append(p)
                t0 = time.perf_counter()
                bar.update(task, advance=1, status=f"{criterion} {100 * sparsity:.1f}% → {acc:.2f}%")
    order = {c: i for i, c in enumerate(opts.criteria)}
    points = sorted(gathered(points), key=lambda p: (order[p["criterion"]], p["target"]))
    seconds = time.perf_counter() - t_start

    curves = {c: [p for p in points if p["criterion"] == c] for c in opts.criteria}
    se = standard_error(dense_acc, evaluator.images)
    tol = opts.tolerance if opts.tolerance is not None else default_tolerance(dense_acc, evaluator.images)
    tradeoffs = {c: choose_tradeoff(pts, dense_acc, tol) for c, pts in curves.items()}

    # ---- per-layer sparsity at each trade-off
    layers_doc = {"kind": opts.kind, "definition": DEFINITIONS[opts.kind], "allocation": opts.allocation,
                  "rule": RULE.format(tol=tol), "dense_accuracy": round(dense_acc, 2), "tradeoffs": []}
    for c in opts.criteria:
        t = tradeoffs[c]
        if t is None:
            continue
        rep = layer_table(reports[(c, t["target"])], model, opts.kind, blocks)
        layers_doc["tradeoffs"].append({"criterion": c, "target": t["target"], "sparsity": rep["overall"],
                                        "accuracy": t["accuracy"], "by": t["by"], "layers": rep["layers"], "blocks": rep["blocks"],
                                        "by_type": rep["by_type"], "observations": describe_blocks(rep, opts.allocation)})
    restore()

    summary = {
        "format": "compress-sweep/1", "source": source, "model": spec.to_dict(), "dataset": data.describe(),
        "kind": opts.kind, "definition": DEFINITIONS[opts.kind], "options": asdict(opts) | {"criteria": list(opts.criteria)},
        "grid": {"start": grid[0], "stop": grid[-1], "step": opts.step or DEFAULT_GRID[opts.kind][2], "points": len(grid)},
        "choices_on": "validation" if tester else "test (no validation split: --val-split 0)",
        "dense_accuracy": round(dense_acc, 2), "dense_test_accuracy": round(dense_test, 2), "tolerance": tol,
        "tolerance_source": "--tolerance" if opts.tolerance is not None else "default: max(1 point, 2 standard errors)",
        "rule": RULE.format(tol=tol),
        "treatment": opts.treatment or "none (pure one-shot)",
        # binomial standard error of one accuracy on the split the choice reads: differences below it are noise
        "standard_error": round(se, 2),
        "tradeoffs": {c: (None if t is None else {k: t[k] for k in ("target", "sparsity", "accuracy", "drop", "by",
                                                                    "test_accuracy")})
                      for c, t in tradeoffs.items()},
        "breakdown": {c: _first_below(curves[c], dense_acc, tol) for c in opts.criteria},
        "seconds": round(seconds, 1), "seconds_per_point": round(sum(p["seconds"] for p in points) / len(points), 3),
        "evaluator": {"images": evaluator.images, "split": evaluator.split, "test_images": (tester or evaluator).images,
                      "batchnorm_folded": True, "device": str(device)},
        "machine": machine(), "command": command, "points": points,
    }
    files = _write_sweep(out_dir, summary, curves, tradeoffs, layers_doc, opts, spec) if current().main else {}
    return SweepResult(summary, files)


def _first_below(points, dense_acc, tol) -> dict | None:
    for p in sorted(points, key=lambda p: p["target"]):
        if p["accuracy"] < dense_acc - tol - 1e-9:
            return {k: p[k] for k in ("target", "sparsity", "accuracy", "drop")}
    return None


def _write_sweep(out_dir: Path, summary, curves, tradeoffs, layers_doc, opts: SweepOptions, spec) -> dict[str, Path]:
    from . import plots

    files = {}
    cols = (["criterion", "target", "sparsity", "accuracy", "drop"] + (["acc_oneshot"] if opts.treatment else [])
            + ["test_accuracy", "seconds"])

    def write_csv(tmp: Path):
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            for p in summary["points"]:
                w.writerow({k: p.get(k) for k in cols})

    files["csv"] = atomic_write(out_dir / "sweep.csv", write_csv)
    files["json"] = atomic_write(out_dir / "sweep.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=2)))
    files["tradeoff_json"] = atomic_write(out_dir / "tradeoff_layers.json",
                                          lambda tmp: tmp.write_text(json.dumps(layers_doc, indent=2)))
    title = (f"One-shot {opts.kind} pruning sweep of {spec.name} (width {spec.width:g})\n"
             f"{opts.allocation} allocation · {summary['dataset']['name']}, chosen on {summary['evaluator']['images']} "
             f"{'validation' if summary['evaluator']['split'] == 'val' else 'TEST (no validation split)'} images")
    files["png"] = plots.sweep_figure(curves, summary["dense_accuracy"], out_dir / "sweep.png", kind=opts.kind,
                                      tolerance=summary["tolerance"], tradeoffs=tradeoffs, title=title,
                                      standard_error=summary["standard_error"], images=summary["evaluator"]["images"],
                                      treatment=opts.treatment, split=summary["evaluator"]["split"])
    files["tradeoff_png"] = tradeoff_figure(layers_doc, out_dir / "tradeoff_layers.png", spec)
    return files


def tradeoff_figure(layers_doc: dict, path: Path, spec: ModelSpec) -> Path:
    """Per-layer and per-block bars (one colour per criterion) at each criterion's trade-off."""
    from . import plots

    entries = layers_doc["tradeoffs"]
    kind = layers_doc["kind"]
    if not entries:
        return plots.empty_figure(path, "No trade-off point: the first swept sparsity is already below the "
                                        "tolerance; sweep from a lower --start")
    layers = entries[0]["layers"]
    series, block_series, colors = {}, {}, {}
    for e in entries:
        st = plots.criterion_style(e["criterion"])
        label = f"{st.label}: {100 * e['sparsity']:.1f}% overall, {e['accuracy']:.2f}% accuracy"
        series[label] = {l["name"]: l["sparsity"] for l in e["layers"]}
        block_series[label] = {b["block"]: b["sparsity"] for b in e["blocks"]}
        colors[label] = st.color
    notes = [(f"{plots.criterion_style(e['criterion']).label}: " if len(entries) > 1 else "") + "; ".join(e["observations"])
             for e in entries if e["observations"]]
    unit = "filters" if kind == "filter" else "weights"
    return plots.layer_sparsity_figure(
        series, layers, path, colors=colors, blocks={l["name"]: l["block"] for l in layers},
        block_series=block_series, block_rows=entries[0]["blocks"],
        title=f"Sparsity per layer at the trade-off point ({spec.name}, {layers_doc['allocation']} allocation)",
        ylabel=f"sparsity (% of the layer's {unit})", note="\n".join(notes))
