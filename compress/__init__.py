"""compress: prune CNNs, remove what was pruned, export slim ONNX models, and measure them.

The library behind the `compress` command. The pipeline in five calls (`compress.api`):

    run = compress.prune_model("vgg11", width=0.25, kind="filter", ratio=0.4, dense_epochs=1, epochs=1,
                               stages=(), out="runs/api")
    slim = compress.slim_model(run.result); onnx = compress.to_onnx(slim); int8 = compress.quantize(onnx)
    compress.benchmark([run.path / "dense.pt", slim])

and the verbs beneath them (loaded lazily, so the CLI starts fast):

    from compress import load_dataset, create_model, TrainConfig, fit, evaluate
    from compress import unstructured_masks, filter_masks, apply_masks, sparsity_report, prune_channels

(`compress.train` and `compress.prune.slim` are modules, so their main functions are exported here
as `fit` and `prune_channels`.)
"""
__version__ = "0.1.0"


def _beside_the_package() -> None:
    """export/ and bench/ sit beside compress/ in the repository and install inside it, as
    `compress.export` and `compress.bench` (pyproject.toml's package-dir). In the repository the
    links compress/export and compress/bench find them; where a copy lost its links (a zip
    download, a checkout without symlinks), look for them beside the package instead."""
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    if not os.path.isdir(os.path.join(here, "export")) and os.path.isfile(os.path.join(root, "export", "__init__.py")) \
            and os.path.isfile(os.path.join(root, "pyproject.toml")):
        __path__.append(root)  # noqa: F821 (the package's own __path__)


_beside_the_package()


# public name -> (module, attribute)
_EXPORTS = {
    "load_dataset": ("compress.data", "load_dataset"), "Dataset": ("compress.data", "Dataset"),
    "create_model": ("compress.models", "create_model"), "list_models": ("compress.models", "list_models"),
    "ModelSpec": ("compress.models", "ModelSpec"),
    "fit": ("compress.train", "train"), "TrainConfig": ("compress.train", "TrainConfig"),
    "evaluate": ("compress.train", "evaluate"),
    "read_ratio_file": ("compress.prune.ratios", "read_ratio_file"), "allocate": ("compress.prune.ratios", "allocate"),
    "unstructured_masks": ("compress.prune.masks", "unstructured_masks"), "filter_masks": ("compress.prune.masks", "filter_masks"),
    "nm_masks": ("compress.prune.masks", "nm_masks"), "apply_masks": ("compress.prune.masks", "apply_masks"),
    "MaskEnforcer": ("compress.enforcer", "MaskEnforcer"),
    "sparsity_report": ("compress.prune.sparsity", "sparsity_report"),
    "PruneJob": ("compress.prune.schedule", "PruneJob"), "prune": ("compress.prune.schedule", "prune"),
    "prune_channels": ("compress.prune.slim", "slim"), "slim_checkpoint": ("compress.prune.slim", "slim_checkpoint"),
    "load_checkpoint": ("compress.checkpoint", "load_checkpoint"),
    "save_checkpoint": ("compress.checkpoint", "save_checkpoint"),
    "model_from_checkpoint": ("compress.prune.rebuild", "model_from_checkpoint"),
    "CompressError": ("compress.errors", "CompressError"),
    # the pipeline in five calls (compress.api)
    "prune_model": ("compress.api", "prune_model"), "PruneRun": ("compress.api", "PruneRun"),
    "slim_model": ("compress.api", "slim_model"), "to_onnx": ("compress.api", "to_onnx"),
    "quantize": ("compress.api", "quantize"), "benchmark": ("compress.api", "benchmark"),
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'compress' has no attribute {name!r}")
    import importlib

    module, attr = _EXPORTS[name]
    return getattr(importlib.import_module(module), attr)
