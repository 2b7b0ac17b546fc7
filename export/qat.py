"""Quantization-aware training: fine-tune a model under the fake quantization ONNX Runtime's static
QDQ INT8 export will apply, then export and quantize it as usual.

PyTorch's own fake-quant modules (`torch.ao.quantization.FakeQuantize` with its observers) model
what `compress.export.quantize` asks ONNX Runtime for: weights symmetric int8 in [-127, 127], one scale per
output channel (scale = max|w| / 127: the same formula ORT uses, so the trained weights round to
the same integers there), and the activations entering each conv/linear layer asymmetric int8 in
[-128, 127] from their observed min/max. The weights are fake-quantized through a parametrization,
so gradients reach the fp32 weights (straight-through estimator) and the masks of pruned weights
still apply to them: pruned weights stay exactly zero, and zero quantizes to zero.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.utils.parametrize as parametrize
from torch.ao.quantization import (
    FakeQuantize,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    disable_observer,
)

from compress.checkpoint import load_checkpoint, save_checkpoint
from compress.data import Dataset
from compress.export.artifacts import export_checkpoint
from compress.prune.rebuild import model_from_checkpoint
from compress.train import TrainConfig, TrainResult, train

QUANTIZED = (nn.Conv2d, nn.Linear)


@dataclass
class QATConfig:
    """Fine-tuning under fake quantization: short, at a tenth of retraining's peak rate (the
    weights only need to settle into their integer grid), cosine to zero, no warm-up."""

    epochs: int = 2
    lr: float = 0.01  # peak learning rate per 128 images
    batch_size: int = 64
    seed: int = 0

    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, warmup_epochs=0.0,
                           seed=self.seed, eval_every=0)


class _WeightFakeQuant(nn.Module):
    """A parametrization: the weight as ONNX Runtime's symmetric int8 will see it."""

    def __init__(self, per_channel: bool):
        super().__init__()
        if per_channel:
            self.fq = FakeQuantize(observer=MovingAveragePerChannelMinMaxObserver, quant_min=-127, quant_max=127,
                                   dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0,
                                   averaging_constant=1.0)  # the current weights' range, as ORT will compute it
        else:
            self.fq = FakeQuantize(observer=MovingAverageMinMaxObserver, quant_min=-127, quant_max=127,
                                   dtype=torch.qint8, qscheme=torch.per_tensor_symmetric, averaging_constant=1.0)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.fq(w)


def _activation_fake_quant() -> FakeQuantize:
    return FakeQuantize(observer=MovingAverageMinMaxObserver, quant_min=-128, quant_max=127, dtype=torch.qint8,
                        qscheme=torch.per_tensor_affine)


def fake_quantized(model: nn.Module, per_channel: bool = True) -> nn.Module:
    """A copy of `model` whose conv/linear weights and inputs pass through fake quantization."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, QUANTIZED):
            parametrize.register_parametrization(module, "weight", _WeightFakeQuant(per_channel))
            module.input_fq = _activation_fake_quant()
            module.register_forward_pre_hook(lambda m, args: (m.input_fq(args[0]), *args[1:]))
    return model


def plain_state(fq: nn.Module) -> dict[str, torch.Tensor]:
    """The fp32 state dict of a `fake_quantized` model under the original names (its trained
    weights without fake quantization): what is exported and then quantized by ONNX Runtime.
    (Removing the parametrizations from a copy would change the class the original shares.)"""
    state = {}
    for name, value in fq.state_dict().items():
        if ".input_fq." in name or ".parametrizations.weight.0." in name:
            continue  # the fake quantizers' own observers and scales
        state[name.replace(".parametrizations.weight.original", ".weight")] = value
    return state


def masks_for(model: nn.Module, masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Masks named by weight (`features.0.weight`) renamed to the parametrized parameter
    (`features.0.parametrizations.weight.original`) of a `fake_quantized` model."""
    names = dict(model.named_parameters())
    renamed = {}
    for name, mask in masks.items():
        module, _, leaf = name.rpartition(".")
        alias = f"{module}.parametrizations.{leaf}.original" if module else f"parametrizations.{leaf}.original"
        renamed[alias if alias in names else name] = mask
    return renamed


def qat_finetune(model: nn.Module, data: Dataset, cfg: QATConfig, *, device: torch.device | str = "cpu",
                 masks: dict[str, torch.Tensor] | None = None, per_channel: bool = True,
                 show: bool = True) -> tuple[nn.Module, nn.Module, TrainResult]:
    """(fake-quantized model, its plain fp32 twin, training result): `model` is not changed."""
    fq = fake_quantized(model, per_channel)
    result = train(fq, data, cfg.train_config(), device=device, masks=masks_for(fq, masks) if masks else None,
                   label="QAT", show=show, data_parallel=False)
    fq.eval().apply(disable_observer)  # the ranges learned in training stay what they are
    tuned = copy.deepcopy(model)
    tuned.load_state_dict(plain_state(fq))
    return fq, tuned.eval(), result


def qat_exporter(ckpt_path: Path, data: Dataset, *, per_channel: bool = True, device: torch.device | str = "cpu",
                 seed: int = 0, show: bool = True) -> Callable[[Path, int], Path]:
    """What `compress.export.quantize.quantize(qat=...)` calls: (folder, epochs) -> the fp32 ONNX file of the
    checkpoint after `epochs` of QAT (its checkpoint, qat.pt, beside it), masks kept."""

    def run(folder: Path, epochs: int) -> Path:
        ckpt = load_checkpoint(ckpt_path, kinds=("dense", "pruned", "slim"))
        model = model_from_checkpoint(ckpt)
        _, tuned, result = qat_finetune(model, data, QATConfig(epochs=epochs, seed=seed), device=device,
                                        masks=ckpt.get("masks") or None, per_channel=per_channel, show=show)
        folder.mkdir(parents=True, exist_ok=True)
        recipe = QATConfig(epochs=epochs, seed=seed).__dict__
        meta = {**ckpt.get("meta", {}),
                "qat": {**recipe, "from": str(ckpt_path), "seconds": round(result.seconds, 1)}}
        save_checkpoint(folder / "qat.pt", {**ckpt, "meta": meta,
                                            "state_dict": {k: v.detach().cpu() for k, v in tuned.state_dict().items()}})
        export_checkpoint(folder / "qat.pt", folder / "qat.onnx", data=data, compact=False, force=True)
        return folder / "qat.onnx"

    return run
