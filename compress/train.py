"""One training loop, read top to bottom: dense training and masked retraining share it.

Recipe (torchvision references + "Bag of Tricks"): SGD with Nesterov momentum, label
smoothing, linear warm-up then cosine (or one-cycle) decay per step, weight decay only on
conv/linear weights (not BatchNorm or biases). On CUDA and on CPUs with bf16 units: bf16
autocast and channels_last (`TrainConfig.precision`).
Masking is a hook: with `masks`, pruned weights are zeroed once before training and pruned
gradients before each step. With the loop's fresh SGD that keeps them exactly zero (momentum
and weight decay only ever add zeros: see `MaskEnforcer`); `check()` asserts it every epoch.
Distillation is a second hook: with a `Teacher`, the loss mixes cross-entropy with the KL
divergence to the teacher's softened logits on the same augmented batch (Hinton et al. 2015).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from compress.console import err, progress
from compress.data import Dataset, Loader, eval_loader
from compress.distributed import World, current, shard_size, sync_batchnorm
from compress.enforcer import MaskEnforcer
from compress.env import cpu_has_bf16
from compress.errors import CompressError
from compress.train_config import PRECISIONS, Distill, TrainConfig  # noqa: F401 (their home is torch-free; the loop's names)


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)
    test_acc: float = float("nan")
    test_loss: float = float("nan")
    val_acc: float = float("nan")  # nan without a validation split
    val_loss: float = float("nan")
    seconds: float = 0.0
    images_per_s: float = 0.0


@dataclass
class Teacher:
    """A model in eval mode whose logits the student learns from; never trained (no gradient)."""

    model: nn.Module
    alpha: float
    temperature: float

    def __post_init__(self):
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def logits(self, xb: torch.Tensor) -> torch.Tensor:
        return main_output(self.model(xb))

    def weights_mib(self) -> float:
        tensors = list(self.model.parameters()) + list(self.model.buffers())
        return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def distillation_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor, alpha: float,
                      temperature: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """(1 - alpha)·CE(logits, targets) + alpha·T²·KL(softmax(teacher/T) ‖ softmax(logits/T)), batch mean."""
    ce = F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
    t = temperature
    kl = F.kl_div(F.log_softmax(logits.float() / t, 1), F.log_softmax(teacher_logits.float() / t, 1),
                  reduction="batchmean", log_target=True)
    return (1 - alpha) * ce + alpha * t * t * kl


class TrainingDiverged(CompressError):
    def __init__(self, epoch: int, step: int):
        super().__init__(f"training diverged: the loss became non-finite at epoch {epoch}, step {step}",
                         "lower --lr (or --batch-size); the last good checkpoint is kept")
        self.epoch = epoch


def lr_factor(step: int, total: int, warmup: int, schedule: str, final: float) -> float:
    """Learning-rate multiplier at `step` of `total` (0-based)."""
    if step < warmup:
        return 0.1 + 0.9 * (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    t = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * t))
    if schedule == "onecycle":
        return final + (1 - final) * (1 - t)
    raise CompressError(f"unknown schedule {schedule!r}", "use cosine, onecycle or constant")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on conv/linear weights; none on BatchNorm parameters and biases."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]




def uses_bf16(device: torch.device, precision: str = "auto") -> bool:
    """Whether training runs in bf16 autocast + channels_last: by default on CUDA and on CPUs with
    bf16 units (see TrainConfig.precision); CPUs without them emulate bf16, slower than fp32."""
    if precision not in PRECISIONS:
        raise CompressError(f"unknown precision {precision!r}", f"choose one of: {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision == "bf16"
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16())


def autocast(device: torch.device, bf16: bool | None = None):
    """bf16 autocast: in training where `uses_bf16` said so (`bf16`, decided once per run, not per
    step); in evaluation (`bf16=None`) on CUDA only, so accuracies measured on a CPU stay fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" if bf16 is None else bf16)


@torch.no_grad()
def main_output(out) -> torch.Tensor:
    """The logits of a model's output: the tensor itself, `.logits` (GoogLeNet's and Inception's
    named tuples with auxiliary heads in train mode, transformers' outputs), or the first item."""
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise TypeError(f"the model returned {type(out).__name__}, not logits")


def _predictions(model: nn.Module, data: Dataset, device: torch.device, batch_size: int, split: str):
    """(logits, labels) batch by batch over a split, the model in eval mode (restored after)."""
    was_training = model.training
    model.eval()
    try:
        for xb, yb in eval_loader(data, batch_size, split, channels_last=device.type == "cuda"):
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            with autocast(device):
                yield main_output(model(xb)), yb
    finally:
        model.train(was_training)


def eval_batch(data: Dataset) -> int:
    """Evaluation batch: 500 images at CIFAR's 32 px, fewer as images grow (same pixels per
    batch, at least 16), so a 224 px MaxViT evaluates in a few GB rather than tens."""
    return max(16, 500 * 32 * 32 // (data.image_size ** 2))


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, device: torch.device | str | None = None,
             batch_size: int | None = None, split: str = "test") -> tuple[float, float]:
    """Top-1 accuracy (%) and mean cross-entropy on a split."""
    device = torch.device(device or next(model.parameters()).device)
    batch_size = batch_size or eval_batch(data)
    correct = torch.zeros((), device=device)
    loss_sum = torch.zeros((), device=device)
    n = 0
    for logits, yb in _predictions(model, data, device, batch_size, split):
        loss_sum += F.cross_entropy(logits.float(), yb, reduction="sum")
        correct += (logits.argmax(1) == yb).sum()
        n += yb.numel()
    return 100.0 * correct.item() / n, loss_sum.item() / n


@torch.no_grad()
def correct_per_image(model: nn.Module, data: Dataset, device: torch.device | str | None = None,
                      batch_size: int | None = None, split: str = "test") -> list[bool]:
    """Whether the model's top-1 prediction is right, image by image (for paired comparisons)."""
    device = torch.device(device or next(model.parameters()).device)
    batch_size = batch_size or eval_batch(data)
    right: list[bool] = []
    for logits, yb in _predictions(model, data, device, batch_size, split):
        right += (logits.argmax(1) == yb).cpu().tolist()
    return right


def train(model: nn.Module, data: Dataset, cfg: TrainConfig, *, device: torch.device | str = "cpu",
          masks: dict[str, torch.Tensor] | None = None, label: str = "train",
          on_epoch: Callable[[int, dict, dict], None] | None = None, show: bool = True,
          sync_bn: bool = False, data_parallel: bool = True, resume: dict | None = None,
          teacher: Teacher | None = None) -> TrainResult:
    """Train `model` in place on `data` (already on `device`); returns per-epoch history.

    `on_epoch(epoch, record, state)` runs after each epoch (the baseline saves its checkpoint
    there); `state` is what `resume` takes to continue after that epoch exactly as if the run
    had not stopped (optimiser, schedule and random-generator states). Under torchrun the model
    is wrapped in DistributedDataParallel and each rank trains on its slice of every global batch
    of `cfg.batch_size` (see `distributed`); `sync_bn` normalises over the global batch. Every
    rank evaluates the whole split; only rank 0 shows progress. `data_parallel=False` trains this
    rank's model alone (a sweep point that is only this rank's). With `teacher` the loss is
    `distillation_loss`; the teacher's forward time and weights are recorded per epoch (its cost).
    """
    device = torch.device(device)
    world = current() if data_parallel else World()
    show = show and world.main
    if cfg.epochs <= 0:
        raise CompressError(f"epochs must be positive (got {cfg.epochs})", "pass --epochs 1 or more")
    torch.manual_seed(cfg.seed)
    model.to(device).train()
    bf16 = uses_bf16(device, cfg.precision)
    if bf16:
        model.to(memory_format=torch.channels_last)
    if teacher is not None:
        teacher.model.to(device, memory_format=torch.channels_last if bf16 else torch.preserve_format)
    enforcer = MaskEnforcer(model, masks) if masks else None
    if enforcer:
        enforcer.apply()
    net = model
    if world.distributed:
        if sync_bn:
            sync_batchnorm(model, device)
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    # ---- data: the whole uint8 set on the device (or a streamed folder's batches, decoded by
    # DataLoader workers), cropped/flipped/normalised there; each rank takes its slice of every
    # global batch (the randomness is drawn for the whole batch)
    generator = torch.Generator().manual_seed(cfg.seed)
    batch_size = min(cfg.batch_size, data.train_x.shape[0])
    shard_size(batch_size, world)
    loader = Loader(data.train_x, data.train_y, batch_size, mean=data.mean, std=data.std, shuffle=True,
                    augment=True, drop_last=True, generator=generator, channels_last=bf16,
                    shard=(world.rank, world.size), device=device)
    steps_per_epoch = len(loader)
    total_steps = cfg.epochs * steps_per_epoch

    # ---- optimiser and per-step schedule
    peak_lr = cfg.lr * batch_size / 128
    optimizer = torch.optim.SGD(param_groups(model, cfg.weight_decay), lr=peak_lr, momentum=cfg.momentum,
                                nesterov=cfg.momentum > 0)
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, warmup, cfg.schedule, cfg.final_lr_fraction))

    result = TrainResult()
    first, train_seconds = 1, 0.0
    if resume:  # continue after the epoch `resume` was saved at, as if the run had not stopped
        first, train_seconds = _restore(resume, optimizer, scheduler, generator, device, result) + 1, resume["seconds"]

    with progress(show=show) as bar:
        task = bar.add_task(label, total=total_steps, completed=(first - 1) * steps_per_epoch, status="")
        for epoch in range(first, cfg.epochs + 1):
            def shown(i: int, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int, t0: float) -> None:
                running = loss_sum.item() / seen
                if not math.isfinite(running) and not world.distributed:  # ranks stop together, below
                    raise TrainingDiverged(epoch, i + 1)
                bar.update(task, completed=(epoch - 1) * steps_per_epoch + i + 1, status=(
                    f"epoch {epoch}/{cfg.epochs}  loss {running:.3f}  train {100 * correct.item() / seen:.1f}%"
                    f"  {_last_test(result)}  {seen / (time.perf_counter() - t0):.0f} img/s"))

            # ---- one epoch of steps
            t0 = time.perf_counter()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            loss_sum, correct, seen, teacher_s = train_one_epoch(net, loader, optimizer, scheduler, enforcer, cfg,
                                                                 device, on_step=shown if show else None,
                                                                 teacher=teacher, bf16=bf16)
            seconds = time.perf_counter() - t0
            train_seconds += seconds
            if world.distributed:  # the epoch's loss and accuracy over every rank's images
                loss_sum, correct, seen = _summed(loss_sum, correct, seen, device)
            train_loss = loss_sum.item() / seen
            if not math.isfinite(train_loss):
                raise TrainingDiverged(epoch, steps_per_epoch)

            # ---- evaluate, record, hand the epoch to the caller
            record = {"epoch": epoch, "train_loss": round(train_loss, 4),
                      "train_acc": round(100 * correct.item() / seen, 2),
                      "lr": optimizer.param_groups[0]["lr"], "seconds": round(seconds, 2),
                      "images_per_s": round(seen / seconds, 1), "precision": "bf16" if bf16 else "fp32"}
            if device.type == "cuda":
                record["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
            if teacher is not None:  # what distillation costs: the teacher's forward passes and its weights
                record.update(teacher_seconds=round(teacher_s, 2), teacher_mib=round(teacher.weights_mib(), 1))
            _evaluate_epoch(model, data, device, cfg, epoch, result, record)
            if enforcer:
                enforcer.check()
            result.history.append(record)
            summary = (f"epoch {epoch}/{cfg.epochs}  loss {record['train_loss']:.3f}  train {record['train_acc']:.1f}%"
                       f"  {_last_test(result)}  {record['images_per_s']:.0f} img/s"
                       + (f"  (teacher {teacher_s:.1f} of {seconds:.1f} s)" if teacher is not None else ""))
            if show:  # the bar keeps this epoch's accuracy, not the one before
                bar.update(task, status=summary)
            if show and not err.is_terminal:  # logs and CI: a line per epoch instead of a live bar
                err.print(f"{label}: {summary}")
            if on_epoch:
                on_epoch(epoch, record, _loop_state(epoch, optimizer, scheduler, generator, device, train_seconds))
    result.seconds = train_seconds
    timed = [h for h in result.history if h.get("seconds")]
    result.images_per_s = (sum(h["images_per_s"] * h["seconds"] for h in timed)
                           / max(sum(h["seconds"] for h in timed), 1e-9))
    model.eval()
    return result


def train_one_epoch(net: nn.Module, loader: Loader, optimizer, scheduler, enforcer: MaskEnforcer | None,
                    cfg: TrainConfig, device: torch.device, on_step=None,
                    teacher: Teacher | None = None,
                    bf16: bool = False) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """One pass over `loader`: (summed loss, correct predictions, images, seconds in the teacher).
    Loss and accuracy accumulate on the device, so nothing waits for the GPU except `on_step`
    (every 10 steps); the teacher is timed with CUDA events there, with the clock on CPU."""
    t0 = time.perf_counter()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    seen = 0
    clock = _Stopwatch(device)
    for i, (xb, yb) in enumerate(loader):
        with autocast(device, bf16):
            if teacher is not None:
                with clock:
                    teacher_logits = teacher.logits(xb)
            logits = main_output(net(xb))
            if teacher is not None:
                loss = distillation_loss(logits, teacher_logits, yb, teacher.alpha, teacher.temperature,
                                         cfg.label_smoothing)
            else:
                loss = F.cross_entropy(logits, yb, label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if enforcer:  # enough on its own: see MaskEnforcer on a fresh SGD
            enforcer.mask_grads()
        optimizer.step()
        scheduler.step()
        loss_sum += loss.detach() * yb.numel()
        correct += (logits.argmax(1) == yb).sum()
        seen += yb.numel()
        if on_step and (i % 10 == 9 or i == len(loader) - 1):
            on_step(i, loss_sum, correct, seen, t0)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return loss_sum, correct, seen, clock.seconds()


class _Stopwatch:
    """Summed wall time of the blocks it wraps: CUDA events on a GPU (no synchronisation per
    step), the clock on a CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.spans: list = []
        self.total = 0.0

    def __enter__(self):
        if self.cuda:
            self.spans.append((torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)))
            self.spans[-1][0].record()
        else:
            self.t0 = time.perf_counter()

    def __exit__(self, *exc):
        if self.cuda:
            self.spans[-1][1].record()
        else:
            self.total += time.perf_counter() - self.t0

    def seconds(self) -> float:
        return self.total + sum(a.elapsed_time(b) for a, b in self.spans) / 1000


def _evaluate_epoch(model, data: Dataset, device, cfg: TrainConfig, epoch: int, result: TrainResult,
                    record: dict) -> None:
    """Per epoch the split choices read (validation); the test split once, on the final model."""
    if not ((cfg.eval_every and epoch % cfg.eval_every == 0) or epoch == cfg.epochs):
        return
    if data.has_val:
        result.val_acc, result.val_loss = evaluate(model, data, device, split="val")
        record.update(val_acc=round(result.val_acc, 2), val_loss=round(result.val_loss, 4))
    if epoch == cfg.epochs or not data.has_val:
        result.test_acc, result.test_loss = evaluate(model, data, device)
        record.update(test_acc=round(result.test_acc, 2), test_loss=round(result.test_loss, 4))


def _loop_state(epoch: int, optimizer, scheduler, generator: torch.Generator, device: torch.device,
                seconds: float) -> dict:
    """What `train(resume=...)` needs to continue after `epoch` (plain tensors and numbers only,
    so it rides in a weights_only checkpoint)."""
    state = {"epoch": epoch, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "generator": generator.get_state(), "rng": torch.get_rng_state(), "seconds": seconds}
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    return state


def _restore(state: dict, optimizer, scheduler, generator: torch.Generator, device: torch.device,
             result: TrainResult) -> int:
    """Load a `_loop_state` into the loop's objects; returns the epoch it was saved after."""
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["rng"])
    if "cuda_rng" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"], device)
    result.history = [dict(h) for h in state.get("history", [])]
    return int(state["epoch"])


def _summed(loss_sum: torch.Tensor, correct: torch.Tensor, seen: int, device: torch.device):
    t = torch.stack([loss_sum.float(), correct.float(), torch.tensor(float(seen), device=device)])
    dist.all_reduce(t)
    return t[0], t[1], int(t[2].item())


def _last_test(result: TrainResult) -> str:
    for h in reversed(result.history):
        if "val_acc" in h or "test_acc" in h:
            return "  ".join(f"{name} {h[key]:.1f}%" for key, name in (("val_acc", "val"), ("test_acc", "test")) if key in h)
    return ""
