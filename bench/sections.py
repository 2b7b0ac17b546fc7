"""What `python -m compress.bench.results` measures: one section per file of docs/results/, each
a list of commands run from scratch in one folder. A section's text says what it measures and
how to read it, never a number: the numbers are what its commands print when they run.

A step's arguments are a Python command line (`-m compress ...`, `-m compress.bench.NAME ...` or
a script under {repo}); `{repo}` is the repository root. `dense.pt`, where a section needs it,
is the dense VGG13 of DENSE trained once per work folder and linked into each section's folder,
so every command shown runs as printed from that folder. `quick` replaces the arguments with
--quick: a tiny model and the shortest budgets, to check that the commands and files still fit.
"""
from __future__ import annotations

from dataclasses import dataclass

Args = tuple[str, ...]


@dataclass(frozen=True)
class Step:
    args: Args
    quick: Args | None = None          # the arguments with --quick (None: the same)
    show: str = "all"                  # what of its output goes into the file: "all", "tables" or "tail"
    figures: tuple[str, ...] = ()      # PNG files it writes, shown under its output
    env: tuple[tuple[str, str], ...] = ()
    markdown: str | None = None        # a Markdown file it writes, shown instead of its output
    run_folder: str | None = None      # a prune command's run folder: its JSON files, as tables, shown instead

    def argv(self, quick: bool) -> Args:
        return self.quick if quick and self.quick is not None else self.args


@dataclass(frozen=True)
class Section:
    name: str
    title: str
    about: str                         # what is measured and how to read it (no numbers)
    steps: tuple[Step, ...]
    minutes: int                       # a full run on 2 CPU cores, about (the index says it before a run)
    dense: bool = False                # needs dense.pt


C = ("-m", "compress")
TINY = ("--model", "vgg13", "--width", "0.125")
DATA = ("--data", "sample")
ONLY_TRAIN = ("--no-export", "--no-quantize", "--no-bench", "--no-report")
# --quick runs whose INT8 stage is not the point: a one-epoch tiny model scores near chance, and
# the speed-up run's widths are chosen by timings that differ between machines, so whether INT8
# keeps such a model within a point is noise. The stage still runs and writes its files.
ANY_DROP = ("--max-drop", "100")

DENSE = Step(C + ("train", *DATA, "--out", "dense.pt"),
             C + ("train", *TINY, *DATA, "--epochs", "1", "--out", "dense.pt"), show="tail")


def retrain(name: str, *options: str, kind: str = "unstructured", ratio: str = "0.8") -> Step:
    """OMP from dense.pt with the recipe's retraining, only the options differ; no export or bench."""
    args = C + (kind, "--ratio", ratio, "--omp", "--checkpoint", "dense.pt", *DATA, *options, *ONLY_TRAIN,
                "--out", name)
    return Step(args, args + ("--epochs", "1"), show="tables")


SECTIONS: tuple[Section, ...] = (
    Section("main_command", "The main command, from scratch", (
        "The README's main command on a fresh machine: the dense VGG13 trained in the run, three IMP "
        "rounds of filter pruning to 40%, slim, ONNX, INT8 and the benchmark. Its tables are built from "
        "the run folder's JSON files (accuracy per round, ONNX sizes and parity, INT8 with its "
        "validation gate, the fastest runtime per model and batch size)."),
        (Step(C + ("filter", "--ratio", "0.4", "--imp", "3", *DATA, "--out", "run"),
              C + ("filter", *TINY, "--ratio", "0.4", "--omp", *DATA, "--dense-epochs", "1", "--epochs", "1",
                   *ANY_DROP, "--out", "run"), run_folder="run"),), minutes=7),
    Section("runtimes", "The fastest runtime on this CPU", (
        "VGG13 (random weights: speed does not depend on the values) dense and slimmed by the shipped "
        "40% filter file, on every CPU runtime installed: ONNX Runtime fp32 and INT8, OpenVINO fp32, bf16 "
        "and INT8, interleaved in one process. Speed-ups are against dense fp32 on ONNX Runtime at the "
        "same batch size. Which runtime wins depends on the CPU's instructions (VNNI and AMX for INT8, "
        "AVX-512-BF16 or AMX for bf16): the header names them."),
        (Step(("-m", "compress.bench.quantize_speedup", "--runtimes",
               "ort-cpu,ort-cpu-int8,openvino-cpu,openvino-cpu-bf16,openvino-cpu-int8", "--out", "runtimes"),
              ("-m", "compress.bench.quantize_speedup", "--batch-sizes", "1", "--budget", "0.05",
               "--out", "runtimes")),), minutes=1),
    Section("channel_widths", "Channel counts decide the speed-up", (
        "The same share of filters (40%) removed from VGG13 in five ways: the shipped ratio file "
        "(multiples of 16), one uniform ratio with unrounded widths, and uniform widths rounded to "
        "multiples of 8 and 16 (`--round-to`), measured side by side against dense on ONNX Runtime CPU at "
        "batch 64. Unaligned widths leave the runtime's kernels half-used: equal MACs, unequal speed."),
        (Step(("-m", "compress.bench.filter_speedup", "--out", "channel_widths"),
              ("-m", "compress.bench.filter_speedup", "--width", "0.125", "--budget", "0.05",
               "--out", "channel_widths")),), minutes=1),
    Section("sizes", "Slim models and ONNX sizes", (
        "File sizes of the full-width VGG13 exports: dense, the shipped 40% filter file masked and "
        "slim, the shipped 80% unstructured file in the dense layout, as ONNX sparse initializers and "
        "as a bitmask with the kept values. Each file is checked by onnx.checker and against PyTorch "
        "in ONNX Runtime. The unstructured forms are smaller files, not faster models: ONNX Runtime "
        "densifies them when it loads them."),
        (Step(("-m", "compress.export.sizes", "--out", "sizes")),), minutes=1),
    Section("semi_structured", "2:4 semi-structured sparsity", (
        "Storage of every VGG13 layer in the 2:4 format (kept values plus 2 bits of metadata per kept "
        "value); the speed on sparse tensor cores needs a CUDA GPU and is reported as skipped without one."),
        (Step(("-m", "compress.bench.semi_structured", "--out", "semi_structured"),
              ("-m", "compress.bench.semi_structured", "--width", "0.125", "--runs", "2",
               "--out", "semi_structured")),), minutes=1),
    Section("training_loop", "Training speed: the loop, masks and bf16", (
        "A plain hand-written PyTorch loop against the toolchain's loop and the toolchain's loop with "
        "80% unstructured masks, interleaved in one process; then a VGG13 training and inference step "
        "in fp32 and in bf16 autocast with channels_last (what `--precision auto` picks on CPUs with "
        "bf16 units)."),
        (Step(("-m", "compress.bench.train_throughput", "--model", "vgg13", "--batch-size", "128",
               "--steps", "20", "--masks"),
              ("-m", "compress.bench.train_throughput", "--model", "vgg13", "--width", "0.125",
               "--batch-size", "16", "--steps", "2", "--runs", "1", "--masks")),
         Step(("-m", "compress.bench.cpu_bf16"),
              ("-m", "compress.bench.cpu_bf16", "--batch-size", "8", "--steps", "1", "--rounds", "1"))),
        minutes=2),
    Section("sweeps", "Where one-shot pruning breaks, and a second criterion", (
        "One-shot sweeps of the dense model, each point's BatchNorm statistics re-estimated on 512 "
        "training images (the weights stay one-shot): unstructured sparsity with one global magnitude "
        "ranking, whole filters, and three criteria (magnitude, first-order Taylor, SynFlow) side by "
        "side. The trade-off point is the last sparsity before accuracy falls more than the tolerance "
        "below dense, on the validation split; test accuracy is reported beside it."),
        (Step(C + ("sweep", "dense.pt", *DATA, "--out", "sweep_unstructured"),
              C + ("sweep", "dense.pt", *DATA, "--start", "0.5", "--stop", "0.9", "--step", "0.2",
                   "--out", "sweep_unstructured"),
              show="tables", figures=("sweep_unstructured/sweep.png", "sweep_unstructured/tradeoff_layers.png")),
         Step(C + ("sweep", "dense.pt", *DATA, "--kind", "filter", "--out", "sweep_filter"),
              C + ("sweep", "dense.pt", *DATA, "--kind", "filter", "--start", "0.1", "--stop", "0.5", "--step", "0.2",
                   "--out", "sweep_filter"),
              show="tables", figures=("sweep_filter/sweep.png",)),
         Step(C + ("sweep", "dense.pt", *DATA, "--start", "0.5", "--stop", "0.98", "--step", "0.02",
                   "--criterion", "magnitude,taylor,synflow", "--out", "criteria"),
              C + ("sweep", "dense.pt", *DATA, "--start", "0.5", "--stop", "0.9", "--step", "0.2",
                   "--criterion", "magnitude,taylor,synflow", "--out", "criteria"),
              show="tables", figures=("criteria/sweep.png",))),
        minutes=27, dense=True),
    Section("layer_ratios", "Choosing the layer ratios and the retraining learning rate", (
        "OMP unstructured at 80% from the same dense model with the recipe's retraining, only the layer "
        "ratios differ (the default for the model, uniform, one global ranking, the ratios `compress "
        "sensitivity` proposes), then only the retraining's peak learning rate (0.1, the recipe, against "
        "0.05 and 0.02). `compress compare` scores them on the validation split, with a Wilson interval "
        "per accuracy and McNemar's exact test per pair."),
        (Step(C + ("sensitivity", "dense.pt", *DATA, "--target", "0.8", "--out", "sens"), show="tables",
              figures=("sens/sensitivity.png",)),
         retrain("ratios_default"), retrain("ratios_uniform", "--allocation", "uniform"),
         retrain("ratios_global", "--allocation", "global"),
         retrain("ratios_sensitivity", "--config", "sens/proposed.yaml"),
         retrain("lr_0.05", "--lr", "0.05"), retrain("lr_0.02", "--lr", "0.02"),
         Step(C + ("compare", "dense.pt", "ratios_default/Omp_*.pt", "ratios_uniform/Omp_*.pt",
                   "ratios_global/Omp_*.pt", "ratios_sensitivity/Omp_*.pt", "lr_0.05/Omp_*.pt", "lr_0.02/Omp_*.pt",
                   *DATA, "--evaluate-on", "val"))),
        minutes=14, dense=True),
    Section("int8", "INT8 that meets its gate: PTQ, the accuracy-aware search, QAT, OpenVINO", (
        "The dense model and an OMP unstructured 95% model quantized by `compress quantize`: static PTQ "
        "as it is (`--no-search --accept-drop`: the drop itself), per-tensor weights, the accuracy-aware "
        "search forced with `--max-drop 0`, two epochs of quantization-aware training, and the U8S8 file "
        "for OpenVINO. Validation is the gate; test is reported."),
        (retrain("u95", ratio="0.95"),
         Step(C + ("quantize", "dense.pt", *DATA, "--no-search", "--accept-drop", "--out", "dense.int8.onnx")),
         Step(C + ("quantize", "dense.pt", *DATA, "--per-tensor", "--no-search", "--accept-drop",
                   "--out", "dense.per_tensor.int8.onnx")),
         Step(C + ("quantize", "u95/Omp_*.pt", *DATA, "--no-search", "--accept-drop", "--out", "u95.int8.onnx")),
         Step(C + ("quantize", "u95/Omp_*.pt", *DATA, "--max-drop", "0", "--accept-drop",
                   "--out", "u95.search.int8.onnx")),
         Step(C + ("quantize", "u95/Omp_*.pt", *DATA, "--qat", "2", "--accept-drop", "--out", "u95.qat.int8.onnx"),
              C + ("quantize", "u95/Omp_*.pt", *DATA, "--qat", "1", "--accept-drop", "--out", "u95.qat.int8.onnx")),
         Step(C + ("quantize", "dense.pt", *DATA, "--runtime", "openvino", "--no-search", "--accept-drop",
                   "--out", "dense.openvino.int8.onnx"))),
        minutes=8, dense=True),
    Section("speedup_planner", "Prune to a measured speed-up", (
        "`compress plan` for 2×, 3× and 4× on ONNX Runtime CPU at batch 64 (greedy and exact search), "
        "the shipped 40% file's measured speed-up and a plan for the same speed-up, uniform widths with "
        "the same MACs (unrounded and rounded to 16), all measured side by side against dense in one "
        "final run; then the latency model's predictions against random width mixes; then the "
        "one-command run `compress filter --speedup 2` retrained with the OMP recipe."),
        (Step(("-m", "compress.bench.speedup_planner", "--checkpoint", "dense.pt", "--threads", "2",
               "--out", "planner"),
              ("-m", "compress.bench.speedup_planner", "--checkpoint", "dense.pt", "--threads", "2", "--targets", "2",
               "--mixes", "1", "--budget", "0.05", "--out", "planner"), show="tables"),
         Step(C + ("filter", "--speedup", "2", "--omp", "--checkpoint", "dense.pt", *DATA, "--out", "speedup2"),
              C + ("filter", "--speedup", "1.2", "--omp", "--checkpoint", "dense.pt", *DATA, "--epochs", "1",
                   *ANY_DROP, "--out", "speedup2"), show="tables")),
        minutes=14, dense=True),
    Section("your_model", "Your own model: a .py file and a torchvision model", (
        "A VGG13 written the way CIFAR model zoos write it (`docs/examples/my_vgg.py`), trained by a plain "
        "PyTorch script (`docs/examples/train_my_vgg.py`), then pruned by the whole pipeline with "
        "`--model FILE.py:NAME --checkpoint`; and a torchvision ResNet-18 with a CIFAR stem, its baseline "
        "trained by the run."),
        (Step(("{repo}/docs/examples/train_my_vgg.py", "--epochs", "20", "--out", "my_vgg.pth"),
              ("{repo}/docs/examples/train_my_vgg.py", "--epochs", "1", "--out", "my_vgg.pth"), show="tail"),
         Step(C + ("filter", "--ratio", "0.4", "--imp", "3", "--model", "{repo}/docs/examples/my_vgg.py:vgg13",
                   "--checkpoint", "my_vgg.pth", *DATA, "--out", "byom_vgg"),
              C + ("filter", "--ratio", "0.4", "--omp", "--epochs", "1", "--model",
                   "{repo}/docs/examples/my_vgg.py:vgg13", "--checkpoint", "my_vgg.pth", *DATA, *ANY_DROP,
                   "--out", "byom_vgg"),
              show="tables", figures=("byom_vgg/bench/bench.png",)),
         Step(C + ("filter", "--ratio", "0.4", "--imp", "3", "--model", "torchvision:resnet18", *DATA,
                   "--dense-epochs", "6", "--epochs", "3", "--out", "byom_r18"),
              C + ("filter", "--ratio", "0.4", "--omp", "--model", "torchvision:resnet18", "--width", "0.125",
                   *DATA, "--dense-epochs", "1", "--epochs", "1", *ANY_DROP, "--out", "byom_r18"), show="tables")),
        minutes=17),
    Section("distributed", "Scaling out: one process against two Gloo processes", (
        "One epoch of the dense VGG13 recipe (global batch 64) in one process at 2 threads, then under "
        "`torchrun --nproc_per_node 2` at one thread each, then with `--sync-bn`. On two cores this is a "
        "correctness check (the same recipe, the same number of steps), not a speed-up."),
        (Step(C + ("train", "--epochs", "1", *DATA, "--out", "ddp1.pt"),
              C + ("train", *TINY, "--epochs", "1", *DATA, "--out", "ddp1.pt"),
              show="tail", env=(("OMP_NUM_THREADS", "2"),)),
         Step(("-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "compress", "train", "--epochs", "1",
               *DATA, "--out", "ddp2.pt"),
              ("-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "compress", "train", *TINY,
               "--epochs", "1", *DATA, "--out", "ddp2.pt"), show="tail", env=(("OMP_NUM_THREADS", "1"),)),
         Step(("-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "compress", "train", "--epochs", "1",
               *DATA, "--sync-bn", "--out", "ddp2sync.pt"),
              ("-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "compress", "train", *TINY,
               "--epochs", "1", *DATA, "--sync-bn", "--out", "ddp2sync.pt"), show="tail",
              env=(("OMP_NUM_THREADS", "1"),))),
        minutes=2),
    Section("recipe", "The dense recipe's defaults: batch 64, bf16 on CPUs with bf16 units", (
        "The dense VGG13 recipe (20 epochs, seed 0) as shipped, then with only the batch size changed "
        "(128 against 64) and only the precision changed (fp32 against `--precision auto`, which trains "
        "in bf16 autocast on CPUs with bf16 units and in fp32 elsewhere), compared by `compress compare` "
        "on the validation split, where the defaults were chosen. The header says whether this CPU has "
        "bf16 units (avx512_bf16, amx_bf16): without them both precision rows are fp32."),
        (Step(C + ("train", *DATA, "--out", "recipe.pt"),
              C + ("train", *TINY, *DATA, "--epochs", "1", "--out", "recipe.pt"), show="tail"),
         Step(C + ("train", *DATA, "--batch-size", "128", "--out", "batch128.pt"),
              C + ("train", *TINY, *DATA, "--epochs", "1", "--batch-size", "128", "--out", "batch128.pt"), show="tail"),
         Step(C + ("train", *DATA, "--precision", "fp32", "--out", "fp32.pt"),
              C + ("train", *TINY, *DATA, "--epochs", "1", "--precision", "fp32", "--out", "fp32.pt"), show="tail"),
         Step(C + ("compare", "recipe.pt", "batch128.pt", "fp32.pt", *DATA, "--evaluate-on", "val"))),
        minutes=13),
    Section("suite", "Four models, OMP/IMP × unstructured/filter, over three seeds", (
        "`compress all` three times (seeds 0, 1 and 2, a dense baseline per seed): dense, OMP and IMP "
        "unstructured 80%, OMP and IMP filter 40%, each slimmed, exported, quantized and benchmarked, "
        "and a report over the seeds with paired bootstrap comparisons (seeds and images resampled "
        "together). Recipes and ratio files are chosen on validation; test is reported."),
        (Step(C + ("all", *DATA, "--seeds", "0,1,2", "--out", "suite"),
              C + ("all", *TINY, *DATA, "--dense-epochs", "1", "--epochs", "3", "--seeds", "0,1", *ANY_DROP,
                   "--out", "suite"),
              markdown="suite/report.md"),), minutes=41),
    Section("distill", "Winning accuracy back with distillation", (
        "OMP retraining with and without knowledge distillation (α 0.5, T 4) at filter 70% and "
        "unstructured 95%, three seeds per arm from the same dense model, each arm against cross-entropy "
        "alone pooled over seeds and images (McNemar's exact test and a 95% interval on the paired "
        "difference): first with the dense model being pruned as the teacher, then, at filter 70%, with a "
        "stronger teacher (the same recipe trained for 40 epochs, seed 1) passed with `--teacher`. The "
        "script writes the table itself; a later run adds its rows to the same table."),
        (Step(C + ("train", *DATA, "--epochs", "40", "--seed", "1", "--out", "teacher.pt"),
              C + ("train", *TINY, *DATA, "--epochs", "2", "--seed", "1", "--out", "teacher.pt"), show="tail"),
         Step(("-m", "compress.bench.distill", "--dense", "dense.pt", "--settings", "filter70,unstructured95",
               "--arms", "plain,kd", "--out", "distill"),
              ("-m", "compress.bench.distill", "--dense", "dense.pt", "--settings", "filter70", "--arms", "plain,kd",
               "--seeds", "0", "--out", "distill"), show="tail"),
         Step(("-m", "compress.bench.distill", "--dense", "dense.pt", "--settings", "filter70",
               "--arms", "plain,teacher", "--teacher", "teacher.pt", "--out", "distill"),
              ("-m", "compress.bench.distill", "--dense", "dense.pt", "--settings", "filter70",
               "--arms", "plain,teacher", "--teacher", "teacher.pt", "--seeds", "0", "--out", "distill"),
              markdown="distill/distill.md")), minutes=40, dense=True),
)


def by_name() -> dict[str, Section]:
    return {s.name: s for s in SECTIONS}
