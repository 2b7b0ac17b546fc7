"""Batches made on the training device from one uint8 tensor: crop, flip and normalise whole
batches with tensor ops (a streamed folder's batches are decoded by DataLoader workers first)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from compress.data.dataset import Dataset
from compress.data.imagefiles import ImageFiles, batches_of


class Loader:
    """Batches of normalised float images, made on `x`'s device from one uint8 tensor.

    With `augment`, each image gets a random translation of up to `pad` pixels (zero padding,
    as torchvision's RandomCrop(32, padding=4)) and a random horizontal flip, both done for the
    whole batch in one gather. Randomness comes from `generator` (CPU), so a seed replays a run.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        *,
        mean,
        std,
        shuffle: bool = False,
        augment: bool = False,
        pad: int = 4,
        drop_last: bool = False,
        generator: torch.Generator | None = None,
        channels_last: bool = False,
        shard: tuple[int, int] = (0, 1),
        device: torch.device | str | None = None,
    ):
        self.x, self.y, self.batch_size = x, y, batch_size
        self.shard = shard  # (rank, ranks): this rank's equal slice of every batch, the randomness drawn for all
        self.shuffle, self.augment, self.pad, self.drop_last = shuffle, augment, pad, drop_last
        self.generator = generator
        self.channels_last = channels_last
        self.device = dev = torch.device(device) if device is not None else x.device
        self.mean = torch.tensor(mean, device=dev).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std, device=dev).view(1, -1, 1, 1) * 255

    def __len__(self) -> int:
        n = self.x.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        n = self.x.shape[0]
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        if not isinstance(self.x, ImageFiles):
            order = order.to(self.x.device)  # once per epoch: batches index on the device
        rank, ranks = self.shard
        batches = [order[i * self.batch_size : (i + 1) * self.batch_size] for i in range(len(self))]
        parts = [slice(rank * b.numel() // ranks, (rank + 1) * b.numel() // ranks) for b in batches]
        if isinstance(self.x, ImageFiles):  # decoded by DataLoader workers, the same indices in the same order
            pieces = batches_of(self.x, self.y, [b[p].tolist() for b, p in zip(batches, parts)],
                                pin=self.device.type == "cuda")
        else:
            pieces = ((self.x[b[p]], self.y[b[p]]) for b, p in zip(batches, parts))
        if self.augment:  # every batch's draws at once, in the order they were always drawn, moved in one copy
            shifts, flips = self._epoch_params([b.numel() for b in batches])
        start = 0
        for b, part, (xb, yb) in zip(batches, parts, pieces):
            xb, yb = xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)
            # the random numbers are drawn for the whole batch, so every rank's generator stays in step
            if self.augment:
                shift, flip = shifts[:, start:start + b.numel()], flips[start:start + b.numel()]
                xb = self._crop_flip(xb, shift[:, part], flip[part])
            start += b.numel()
            xb = (xb.float() - self.mean) / self.std
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, yb

    def _epoch_params(self, sizes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The crop shifts (2, N) and flips (N) of a whole epoch on the training device: drawn on
        the CPU batch by batch (the same numbers as drawing them before each step), then copied
        once from pinned memory without blocking, so no step waits for a host-to-device copy."""
        drawn = [self._crop_flip_params(b) for b in sizes]
        shifts = torch.cat([s for s, _ in drawn], dim=1) if drawn else torch.zeros(2, 0, dtype=torch.long)
        flips = torch.cat([f for _, f in drawn]) if drawn else torch.zeros(0, dtype=torch.bool)
        if self.device.type == "cuda":
            shifts, flips = shifts.pin_memory(), flips.pin_memory()
        return shifts.to(self.device, non_blocking=True), flips.to(self.device, non_blocking=True)

    def _crop_flip_params(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        shifts = torch.randint(0, 2 * self.pad + 1, (2, b), generator=self.generator)
        flip = torch.rand(b, generator=self.generator) < 0.5
        return shifts, flip

    def _crop_flip(self, xb: torch.Tensor, shifts: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        b, c, h, w = xb.shape
        p = self.pad
        padded = F.pad(xb, (p, p, p, p))
        shifts, flip = shifts.to(xb.device), flip.to(xb.device)
        rows = shifts[0, :, None] + torch.arange(h, device=xb.device)
        cols = shifts[1, :, None] + torch.arange(w, device=xb.device)
        cols = torch.where(flip[:, None], cols.flip(1), cols)
        bi = torch.arange(b, device=xb.device)[:, None, None, None]
        ci = torch.arange(c, device=xb.device)[None, :, None, None]
        return padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


def eval_loader(ds: Dataset, batch_size: int = 500, split: str = "test", channels_last: bool = False) -> Loader:
    """Batches of a split ("train", "val" or "test") in order, without augmentation."""
    x, y = ds.split(split)
    return Loader(x, y, batch_size, mean=ds.mean, std=ds.std, channels_last=channels_last)


def calibration_batch(ds: Dataset, n: int = 64, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """The first `n` images of a split, normalised: real inputs for parity checks and tracing."""
    x, y = ds.split(split)
    xb, yb = next(iter(Loader(x[:n], y[:n], n, mean=ds.mean, std=ds.std)))
    return xb, yb
