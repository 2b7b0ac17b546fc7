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
from pathlib import Path

import torch

from .checkpoint import check_writable, load_checkpoint, save_checkpoint
from .data import Dataset
from .distributed import agree, barrier
from .env import versions
from .errors import CompressError
from .models import ModelSpec
from .train import TrainConfig, TrainingDiverged, train


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


def train_baseline(spec: ModelSpec, data: Dataset, cfg: TrainConfig, out: Path, *, device: torch.device,
                   force: bool = False, show: bool = True, sync_bn: bool = False) -> dict:
    """Train a dense model from scratch and save it to `out`; returns the final checkpoint dict."""
    out = check_writable(Path(out), force=force)
    # the initial weights are a function of the seed alone, not of whatever the command drew
    # from the global generator before (checks that build a model, ratio allocation, ...)
    torch.manual_seed(cfg.seed)
    model = spec.build()
    rewind_epoch = default_rewind_epoch(cfg.epochs)
    started = datetime.datetime.now().isoformat(timespec="seconds")
    state = {"last": None}

    def payload(epoch: int, record: dict, complete: bool) -> dict:
        return {
            "kind": "dense",
            "model": spec.to_dict(),
            "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "meta": {
                "accuracy": record.get("test_acc"),
                "epochs": cfg.epochs,
                "epochs_completed": epoch,
                "complete": complete,
                "seed": cfg.seed,
                "dataset": data.describe(),
                "train_config": cfg.to_dict(),
                "history": list(history),
                "device": str(device),
                "started": started,
                "versions": versions(),
                "rewind_epoch": rewind_epoch,
            },
        }

    history: list[dict] = []

    def on_epoch(epoch: int, record: dict) -> None:
        history.append(record)
        if "val_acc" not in record and "test_acc" not in record:  # checkpoints only at evaluated epochs
            return
        if epoch == rewind_epoch:
            save_checkpoint(rewind_path(out), payload(epoch, record, complete=False) | {"kind": "dense-rewind"})
        if epoch < cfg.epochs:
            state["last"] = epoch
            save_checkpoint(out, payload(epoch, record, complete=False))

    from .distributed import current

    if not current().main:  # under torchrun only rank 0 writes: the others train, wait for its files, return
        train(model, data, cfg, device=device, label=f"dense {spec.name}", show=False, sync_bn=sync_bn)
        barrier()
        return payload(cfg.epochs, {}, complete=True)
    try:
        result = train(model, data, cfg, device=device, label=f"dense {spec.name}", on_epoch=on_epoch, show=show,
                       sync_bn=sync_bn)
    except TrainingDiverged as e:
        kept = f"epoch {state['last']} is kept at {out}" if state["last"] else "no epoch finished, nothing was written"
        raise CompressError(e.message, f"lower --lr; {kept}") from None
    final = payload(cfg.epochs, history[-1], complete=True)
    final["meta"]["accuracy"] = round(result.test_acc, 2)
    if data.has_val:
        final["meta"]["val_accuracy"] = round(result.val_acc, 2)
    final["meta"]["train_seconds"] = round(result.seconds, 1)
    final["meta"]["images_per_s"] = round(result.images_per_s, 1)
    save_checkpoint(out, final)
    if not rewind_path(out).exists():  # rewind epoch was not an evaluated one
        save_checkpoint(rewind_path(out), final | {"kind": "dense-rewind"})
    barrier()  # under torchrun: the other ranks read these files next
    return final


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
    return train_baseline(spec, data, cfg, path, device=device, force=True, show=show, sync_bn=sync_bn), path
