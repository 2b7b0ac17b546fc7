"""The dense baseline: trained here (no pretrained CIFAR VGG13 exists), cached and reused.

A baseline checkpoint is written atomically after every epoch with `complete: False`, so a
crash or a diverged loss leaves the last good epoch on disk, and only a finished run is ever
reused from the cache. The weights of an early epoch are saved beside it (`*.rewind.pt`) for
lottery-ticket rewinding.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from compress.checkpoint import load_checkpoint, save_checkpoint, with_metadata
from compress.console import notice
from compress.data import Dataset
from compress.distributed import agree, barrier, current
from compress.env import versions
from compress.errors import CompressError
from compress.io import check_writable
from compress.models import ModelSpec
from compress.train import TrainConfig, TrainingDiverged, train


def cache_dir() -> Path:
    env = os.environ.get("COMPRESS_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "compress" / "baselines"


def cache_path(spec: ModelSpec, data: Dataset, cfg: TrainConfig) -> Path:
    """One file per (architecture, dataset content, recipe, seed)."""
    key = json.dumps({"model": spec.to_dict(), "data": data.fingerprint, "cfg": cfg.to_dict()}, sort_keys=True)
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    return cache_dir() / f"{spec.label}_w{spec.width:g}_{data.name}_e{cfg.epochs}_s{cfg.seed}_{digest}.pt"


def rewind_path(path: Path) -> Path:
    return Path(path).with_suffix(".rewind.pt")


def default_rewind_epoch(epochs: int) -> int:
    """Early enough to be a 'ticket', late enough to be past warm-up (Frankle et al. 2020)."""
    return max(1, min(epochs, round(0.05 * epochs)))


@dataclass
class _Files:
    """What a baseline run writes: its checkpoint after every evaluated epoch (with the loop's
    state, so it can be resumed), the rewind epoch's weights, and the final checkpoint."""

    out: Path
    spec: ModelSpec
    model: torch.nn.Module
    cfg: TrainConfig
    data: Dataset
    device: torch.device
    started: str
    history: list[dict] = field(default_factory=list)
    last: int | None = None  # the last epoch saved

    def payload(self, epoch: int, record: dict, complete: bool, loop: dict | None = None) -> dict:
        return {
            "kind": "dense",
            "model": self.spec.to_dict(),
            "state_dict": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "meta": {
                "accuracy": record.get("test_acc"),
                "epochs": self.cfg.epochs,
                "epochs_completed": epoch,
                "complete": complete,
                "seed": self.cfg.seed,
                "dataset": self.data.describe(),
                "train_config": self.cfg.to_dict(),
                "history": list(self.history),
                "device": str(self.device),
                "started": self.started,
                "versions": versions(),
                "rewind_epoch": default_rewind_epoch(self.cfg.epochs),
                **({"train_state": loop} if loop is not None else {}),  # what --resume continues from
            },
        }

    def on_epoch(self, epoch: int, record: dict, loop: dict) -> None:
        self.history.append(record)
        if "val_acc" not in record and "test_acc" not in record:  # checkpoints only at evaluated epochs
            return
        if epoch == default_rewind_epoch(self.cfg.epochs):
            save_checkpoint(rewind_path(self.out), self.payload(epoch, record, complete=False) | {"kind": "dense-rewind"})
        if epoch < self.cfg.epochs:
            self.last = epoch
            save_checkpoint(self.out, self.payload(epoch, record, complete=False, loop=loop))

    def finish(self, result) -> dict:
        final = self.payload(self.cfg.epochs, self.history[-1], complete=True)
        final["meta"]["accuracy"] = round(result.test_acc, 2)
        if self.data.has_val:
            final["meta"]["val_accuracy"] = round(result.val_acc, 2)
        final["meta"]["train_seconds"] = round(result.seconds, 1)
        final["meta"]["images_per_s"] = round(result.images_per_s, 1)
        save_checkpoint(self.out, final)
        if not rewind_path(self.out).exists():  # rewind epoch was not an evaluated one
            save_checkpoint(rewind_path(self.out), final | {"kind": "dense-rewind"})
        return final


def train_baseline(spec: ModelSpec, data: Dataset, cfg: TrainConfig, out: Path, *, device: torch.device,
                   force: bool = False, show: bool = True, sync_bn: bool = False, resume: bool = False) -> dict:
    """Train a dense model from scratch and save it to `out`; returns the final checkpoint dict.
    `resume`: continue the unfinished checkpoint at `out` from its last epoch (same recipe, model
    and data, else an error), with the optimiser, schedule and random state it was saved with."""
    unfinished = resumable(out, spec, data, cfg) if resume else None
    out = check_writable(Path(out), force=force or unfinished is not None)
    # the initial weights are a function of the seed alone, not of whatever the command drew
    # from the global generator before (checks that build a model, ratio allocation, ...)
    torch.manual_seed(cfg.seed)
    files = _Files(out, spec, spec.build(), cfg, data, device, datetime.datetime.now().isoformat(timespec="seconds"))
    loop = None
    if unfinished is not None:
        files.model.load_state_dict(with_metadata(files.model, unfinished["state_dict"]))
        files.history = [dict(h) for h in unfinished["meta"]["history"]]
        files.started, files.last = unfinished["meta"]["started"], unfinished["meta"]["epochs_completed"]
        loop = unfinished["meta"]["train_state"] | {"history": files.history}
        if show and current().main:
            notice(f"resuming the dense baseline at {out} after epoch {files.last} of {cfg.epochs}")
    label = f"dense {spec.name}"
    if not current().main:  # under torchrun only rank 0 writes: the others train, wait for its files, return
        train(files.model, data, cfg, device=device, label=label, show=False, sync_bn=sync_bn, resume=loop)
        barrier()
        return files.payload(cfg.epochs, {}, complete=True)
    try:
        result = train(files.model, data, cfg, device=device, label=label, on_epoch=files.on_epoch, show=show,
                       sync_bn=sync_bn, resume=loop)
    except TrainingDiverged as e:
        kept = f"epoch {files.last} is kept at {out}" if files.last else "no epoch finished, nothing was written"
        raise CompressError(e.message, f"lower --lr; {kept}") from None
    final = files.finish(result)
    barrier()  # under torchrun: the other ranks read these files next
    return final


def resumable(path: Path, spec: ModelSpec, data: Dataset, cfg: TrainConfig) -> dict | None:
    """The unfinished baseline checkpoint at `path` to continue (None: no file yet). A finished one,
    or one made with another recipe, model or data, is an error."""
    path = Path(path)
    if not path.exists():
        return None
    ckpt = load_checkpoint(path, kinds=("dense",))
    meta = ckpt.get("meta", {})
    if meta.get("complete"):
        raise CompressError(f"{path} is a finished run; there is nothing to resume", "pass --force to train it again")
    if "train_state" not in meta:
        raise CompressError(f"{path} was saved without its optimiser state (an older version), so it cannot be "
                            "continued exactly", "pass --force to train it again from scratch")
    differs = [what for what, mine, theirs in (
        ("recipe", cfg.to_dict(), meta.get("train_config")), ("model", spec.to_dict(), ckpt.get("model")),
        ("data", data.fingerprint, meta.get("dataset", {}).get("fingerprint"))) if mine != theirs]
    if differs:
        raise CompressError(f"{path} is an unfinished run with another {' and '.join(differs)}",
                            "resume it with the options it was started with, or pass --force to start over")
    return ckpt


def get_baseline(spec: ModelSpec, data: Dataset, cfg: TrainConfig, *, device: torch.device,
                 checkpoint: Path | None = None, show: bool = True, sync_bn: bool = False) -> tuple[dict, Path]:
    """The dense checkpoint to prune: the one given, else a cached one, else train and cache it."""
    if checkpoint is not None:
        ckpt = load_checkpoint(checkpoint, kinds=("dense",))
        return ckpt, Path(checkpoint)
    path = cache_path(spec, data, cfg)
    cached = load_checkpoint(path, kinds=("dense",)) if path.exists() else None
    if agree(cached is not None and bool(cached["meta"].get("complete"))):  # rank 0 decides for all
        return cached or load_checkpoint(path, kinds=("dense",)), path
    # an unfinished cache entry (same recipe, model and data by its key) is continued, not restarted
    resume = agree(cached is not None and "train_state" in cached["meta"])
    return train_baseline(spec, data, cfg, path, device=device, force=True, show=show, sync_bn=sync_bn,
                          resume=resume), path
