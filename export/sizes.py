"""File sizes of full-width VGG13 exports: dense, 40% filter (masked and slim), 80% unstructured.

    python -m compress.export.sizes --out /tmp/vgg13_sizes [--data sample]

Sizes depend on tensor shapes and on which weights are zero, not on their trained values, so
this builds the models from the shipped ratio files (configs/vgg13_filter_0.40.yaml,
configs/vgg13_unstructured_0.80.yaml) on freshly initialised weights with BatchNorm
statistics like a trained model's, saves them as checkpoints, and exports each with
`export_checkpoint` (ONNX checker and ONNX Runtime parity included). Only the "zipped"
column depends on the values; trained weights deflate a little differently.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from compress.checkpoint import load_checkpoint, save_checkpoint
from compress.console import out
from compress.data import load_dataset
from compress.export import export_checkpoint
from compress.export.tables import export_table
from compress.kinds import Kind
from compress.models import ModelSpec
from compress.prune.masks import apply_masks, filter_masks, unstructured_masks
from compress.prune.ratios import read_ratio_file
from compress.prune.slim import slim_checkpoint

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def trained_looking_vgg13(seed: int = 0):
    torch.manual_seed(seed)
    spec = ModelSpec("vgg13")
    model = spec.build().eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.uniform_(-0.2, 0.2)
    return spec, model


def build_checkpoints(folder: Path) -> dict[str, Path]:
    paths = {}
    spec, dense = trained_looking_vgg13()
    paths["dense"] = save_checkpoint(folder / "dense.pt", {"kind": "dense", "model": spec.to_dict(),
                                                           "state_dict": dense.state_dict(), "meta": {}})
    for kind, config, name in (("filter", "vgg13_filter_0.40.yaml", "filter40"),
                               ("unstructured", "vgg13_unstructured_0.80.yaml", "unstructured80")):
        _, model = trained_looking_vgg13()
        ratios = read_ratio_file(CONFIGS / config, model, kind)
        masks = (filter_masks(model, ratios, spec.example_input()) if kind == Kind.FILTER
                 else unstructured_masks(model, ratios))
        apply_masks(model, masks)
        paths[name] = save_checkpoint(folder / f"{name}.pt", {
            "kind": "pruned", "model": spec.to_dict(), "state_dict": model.state_dict(), "masks": masks,
            "meta": {"prune_kind": kind, "config": config}})
    payload, _ = slim_checkpoint(load_checkpoint(paths["filter40"]), None)
    paths["filter40_slim"] = save_checkpoint(folder / "filter40_slim.pt", payload)
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m compress.export.sizes", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for the checkpoints and ONNX files")
    p.add_argument("--data", default="sample", help="images for the parity checks (default: the bundled sample)")
    p.add_argument("--force", action="store_true", help="overwrite ONNX files from an earlier run")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    data = load_dataset(args.data, quiet=True)
    ckpts = build_checkpoints(args.out)
    models = []
    for name in ("dense", "filter40", "filter40_slim", "unstructured80"):
        report = export_checkpoint(ckpts[name], args.out / "onnx" / f"{name}.onnx", data=data, force=args.force)
        models += report["models"]
    out.print(export_table({**report, "models": models, "weight_sparsity": report["weight_sparsity"]}))
    for m in models:
        out.print(f"{Path(m['onnx']).name}: {m['bytes']:,} bytes = {m['ratio']:.4f}x dense ONNX; {m['note']}",
                  soft_wrap=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
