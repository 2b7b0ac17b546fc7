"""The training recipe's settings as plain dataclasses: `TrainConfig` (the dense recipe, every
number with its reason) and `Distill` (knowledge distillation's settings). Torch-free, so the
command line reads their defaults for its help without importing the training loop
(`compress.train`, which re-exports both).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from compress.errors import CompressError
from compress.options import number, option, positive_int

PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class TrainConfig:
    """The dense training recipe: these defaults are it (`presets.DENSE`), every number in one
    block with its unit and, where it was measured, the measurement. Budgets are sized for the
    bundled sample on a 2-core CPU (the README's main command in about 15 minutes); on full
    CIFAR-10 or a GPU, raise `epochs`."""

    epochs: int = 20  # passes over the training images
    # images per optimiser step (the global batch under torchrun). 64 over 128: on the sample's
    # images more steps per epoch beat bigger batches at the same images/s on CPU. On VALIDATION
    # (814 held-out images, VGG13, 20 epochs, seed 0; docs/results/recipe.md, made by
    # `python -m compress.bench.results --only recipe`): 71.38% vs 64.13%, -7.25 points (95% CI
    # -10.22 to -4.27, McNemar p = 2.8e-06). Test, only reported: 68.93% vs 61.46%.
    batch_size: int = 64
    lr: float = 0.1  # peak learning rate per 128 images, scaled linearly with batch_size (0.05 at 64)
    momentum: float = 0.9  # Nesterov
    weight_decay: float = 5e-4  # conv/linear weights only, not BatchNorm or biases
    label_smoothing: float = 0.1
    warmup_epochs: float = 2.0  # linear warm-up from lr/10, in epochs
    schedule: str = "cosine"  # "cosine" | "onecycle" (linear decay) | "constant", per step
    final_lr_fraction: float = 0.0  # lr at the last step, as a fraction of the peak
    seed: int = 0  # initial weights, shuffling and augmentation
    eval_every: int = 1  # evaluate on the validation split every N epochs (0: only at the end); test once, at the end
    # "auto": bf16 autocast + channels_last on CUDA and on CPUs with bf16 units (AVX-512-BF16, AMX),
    # fp32 on other CPUs (which emulate bf16, slower); "bf16" / "fp32": everywhere. Measured on a
    # 2-core AMD EPYC with AVX-512-BF16 (VGG13, the sample, 20 epochs, seed 0; docs/results/recipe.md):
    # training 172 s vs 297 s (1.73x), VALIDATION 71.38% vs 68.92% (+2.46 points, 95% CI +0.13 to
    # +4.79, McNemar p = 0.049, one seed): not worse, so auto uses it. Test, only reported: 68.93% vs
    # 68.44%. Evaluation stays fp32 on CPU.
    precision: str = "auto"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TrainOverrides:
    """The training options of the command line (`compress train` and the prune commands): each
    replaces one field of the recipe the command starts from (`compress/presets.py`: TrainConfig's
    defaults for a dense model, RETRAIN for masked retraining); None keeps the recipe's value."""

    epochs: int | None = option(None, "--epochs", "epochs of the training set", parse=positive_int, metavar="N",
                                default_text="the recipe's (compress/presets.py)")
    lr: float | None = option(None, "--lr", "peak learning rate per 128 images of the global batch, scaled with "
                              "--batch-size; the same value on 1 or N processes", parse=number, metavar="LR",
                              default_text=f"the recipe's, {TrainConfig.lr:g}")
    batch_size: int | None = option(None, "--batch-size", "images per step; under torchrun the global batch over "
                                    "all processes, each taking an equal share of it (it must divide evenly)",
                                    parse=positive_int, metavar="N", default_text=f"the recipe's, {TrainConfig.batch_size}")
    seed: int = option(TrainConfig.seed, "--seed", "seed for init, shuffling and augmentation", parse=int, metavar="N")
    precision: str | None = option(None, "--precision", "auto: bf16 autocast + channels_last on CUDA and on CPUs "
                                   "with bf16 units (AVX-512-BF16, AMX), fp32 on other CPUs (which emulate bf16); "
                                   "bf16 or fp32: everywhere. Each epoch records the one used. What it buys: "
                                   "docs/results/recipe.md", choices=PRECISIONS,
                                   default_text=f"the recipe's, {TrainConfig.precision}")

    def apply(self, recipe: TrainConfig) -> TrainConfig:
        """The recipe with every option that was given in place of its value."""
        return replace(recipe, **{k: v for k, v in asdict(self).items() if v is not None})


@dataclass
class Distill:
    """Knowledge distillation's settings: loss = (1 - alpha)·CE + alpha·T²·KL(teacher_T ‖ student_T),
    the logits of both divided by the temperature T (T² keeps the gradient's scale as T grows).
    Defaults: alpha 0.5, T 4, the usual values since Hinton et al. (2015); what they buy, on validation:
    docs/results/distill.md."""

    alpha: float = 0.5  # weight of the teacher's term, in [0, 1]
    temperature: float = 4.0  # softening of both distributions, > 0
    teacher: str | None = None  # a checkpoint path; None: the dense model being pruned

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        if not 0 <= self.alpha <= 1:
            raise CompressError(f"--distill-alpha must be in [0, 1] (got {self.alpha})", "e.g. --distill-alpha 0.5")
        if not self.temperature > 0:
            raise CompressError(f"--distill-temperature must be positive (got {self.temperature})",
                                "e.g. --distill-temperature 4")
