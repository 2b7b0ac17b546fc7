"""Data-parallel runs under `torchrun`: one process per GPU (NCCL) or per CPU worker (Gloo).

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; `setup` joins the process group they describe
(NCCL on CUDA, Gloo on CPU, with a timeout so that one failed rank stops the others instead of
hanging them). Every rank holds the whole dataset and draws the same seeded permutation and the
same augmentation for each global batch, then trains on its own slice of it (`data.Loader`
with `shard`), so N processes at batch B/N see exactly what one process at batch B sees; DDP
averages the gradients. Only rank 0 prints and writes files.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.nn.functional import all_reduce

from compress.errors import CompressError

TIMEOUT_S = int(os.environ.get("COMPRESS_DIST_TIMEOUT", "300"))  # a rank that waits longer gives up


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def launched() -> bool:
    """Whether torchrun (or another launcher setting WORLD_SIZE > 1) started this process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def current() -> World:
    """This process's place in the group (a world of one outside torchrun)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return World()


def setup(device: torch.device) -> tuple[World, torch.device]:
    """Join the group torchrun describes; returns the world and this rank's device (cuda:LOCAL_RANK
    on GPUs). Outside torchrun: a world of one and `device` unchanged."""
    if not launched():
        return World(), device
    if not dist.is_available():
        raise CompressError("this PyTorch build has no torch.distributed", "run without torchrun")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise CompressError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPUs",
                                "pass --nproc_per_node no larger than the GPU count")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=TIMEOUT_S))
    return current(), device


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def agree(value):
    """Rank 0's `value` on every rank: decisions that read files (a cache hit, a folder to resume)
    are made once, so no rank takes another branch and waits forever at a collective."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gathered(items: list) -> list:
    """Every rank's `items`, concatenated in rank order (a world of one: `items`)."""
    if not (dist.is_available() and dist.is_initialized()):
        return items
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, items)
    return [x for part in parts for x in part]


def mine(index: int) -> bool:
    """Whether work item `index` (a sweep point, a sensitivity cell) is this rank's: round robin."""
    world = current()
    return index % world.size == world.rank


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shard_size(global_batch: int, world: World) -> int:
    """Images per rank per step: the global batch (what a recipe means) split evenly."""
    if global_batch % world.size:
        raise CompressError(f"--batch-size {global_batch} does not split evenly over {world.size} processes",
                            f"pass a multiple of {world.size} (the batch size is the global batch over all processes)")
    return global_batch // world.size


def check_same(tensors: dict[str, torch.Tensor], what: str) -> None:
    """All ranks hold identical `tensors` (masks, weights): else one clear error on every rank."""
    world = current()
    if not world.distributed:
        return
    sums = torch.stack([t.detach().double().sum() + t.detach().double().abs().sum() * 1e-3 for t in tensors.values()])
    sums = sums.cpu() if dist.get_backend() == "gloo" else sums
    parts = [torch.empty_like(sums) for _ in range(world.size)]
    dist.all_gather(parts, sums)
    bad = [r for r, g in enumerate(parts) if not torch.equal(g, parts[0])]
    if bad:
        raise CompressError(f"{what} differ between ranks (rank {bad[0]} vs rank 0)",
                            "every rank must run the same command on the same data; report this as a bug")


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the global batch for CPU (Gloo) runs: torch's SyncBatchNorm runs on GPUs
    only. Training-mode statistics are summed over ranks with a differentiable all-reduce, so
    N processes at batch B/N normalise exactly as one process at batch B."""

    @classmethod
    def convert(cls, module: nn.Module) -> nn.Module:
        if isinstance(module, nn.BatchNorm2d) and not isinstance(module, cls):
            new = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
            new.load_state_dict(module.state_dict())
            return new
        for name, child in module.named_children():
            setattr(module, name, cls.convert(child))
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)

        n = torch.tensor([x.shape[0] * x.shape[2] * x.shape[3]], dtype=x.dtype, device=x.device)
        stats = torch.cat([x.sum(dim=(0, 2, 3)), (x * x).sum(dim=(0, 2, 3)), n])
        stats = all_reduce(stats)
        c = self.num_features
        count = stats[2 * c]
        mean = stats[:c] / count
        var = stats[c:2 * c] / count - mean * mean  # biased, as BatchNorm normalises with
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * count / (count - 1), alpha=m)
        y = (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + self.eps)
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """--sync-bn: torch's SyncBatchNorm on CUDA, ours on CPU."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return SyncBatchNorm2d.convert(model)
