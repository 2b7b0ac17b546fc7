"""compress: prune CNNs, remove what was pruned, export slim ONNX models, and measure them.

The library behind the `compress` command; each subcommand is one call into it. The verbs a
notebook needs are importable from here (loaded lazily, so the CLI starts fast):

    from compress import load_dataset, create_model, TrainConfig, fit, evaluate
    from compress import unstructured_masks, filter_masks, apply_masks, sparsity_report, prune_channels

(`compress.train` and `compress.prune.slim` are modules, so their main functions are exported here
as `fit` and `prune_channels`.)
"""
__version__ = "0.1.0"

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
    "model_from_checkpoint": ("compress.prune.channels", "model_from_checkpoint"),
    "CompressError": ("compress.errors", "CompressError"),
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'compress' has no attribute {name!r}")
    import importlib

    module, attr = _EXPORTS[name]
    return getattr(importlib.import_module(module), attr)
