"""Figures from plain numbers (matplotlib, Agg): no model, checkpoint or run folder in sight, so
the analyses and the report can both draw with them.

    base      colours and line styles per model and criterion; accuracy vs sparsity; a mask
    analysis  the sweep's curves, per-layer sparsity, the sensitivity heat map, repeated seeds
"""
from compress.plots.analysis import empty_figure, layer_sparsity_figure, seeds_figure, sensitivity_figure, sweep_figure
from compress.plots.base import (
                                 CRITERION_STYLES,
                                 DENSE_COLOR,
                                 DPI,
                                 MODEL_STYLES,
                                 SPARSITY_NOTE,
                                 Style,
                                 accuracy_vs_sparsity,
                                 criterion_style,
                                 default_mask_layer,
                                 layer_labels,
                                 mask_figure,
                                 model_style,
)

__all__ = ["CRITERION_STYLES", "DENSE_COLOR", "DPI", "MODEL_STYLES", "SPARSITY_NOTE", "Style", "accuracy_vs_sparsity",
           "criterion_style", "default_mask_layer", "empty_figure", "layer_labels", "layer_sparsity_figure",
           "mask_figure", "model_style", "seeds_figure", "sensitivity_figure", "sweep_figure"]
