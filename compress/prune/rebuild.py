"""A model from any checkpoint of ours: dense, masked, or slim (its removal history replayed on a
fresh model before the weights load). Below `slim` and everything that reads a checkpoint back."""
from __future__ import annotations

import torch.nn as nn

from compress.checkpoint import build_spec, load_state
from compress.errors import CompressError
from compress.models import ModelSpec
from compress.models.attention import describe, head_attentions, remove_heads
from compress.models.structure import build_graph


def model_from_checkpoint(ckpt: dict) -> nn.Module:
    """Rebuild the exact module a checkpoint of ours describes (slim ones replay their pruning
    history on a fresh model before the weights load)."""
    spec = ModelSpec.from_dict(ckpt["model"])
    model = build_spec(spec, from_checkpoint=True)
    if ckpt.get("kind") == "slim":
        replay_history(model, ckpt["pruning_history"], spec)
    load_state(model, ckpt["state_dict"], ckpt["model"].get("name", "?"))
    model.eval()
    return model



HEADS = "heads"  # a history entry [attention module, "heads", removed heads]: ours, not Torch-Pruning's


def replay_history(model: nn.Module, history: list, spec: ModelSpec) -> nn.Module:
    """Rebuild a slim architecture: replay Torch-Pruning's history on a fresh model."""
    model.eval()
    dg = build_graph(model, spec.example_input())
    try:
        dg.load_pruning_history([list(h) for h in history if h[1] != HEADS])
        attentions = head_attentions(model)
        for attn_name, _, heads in (h for h in history if h[1] == HEADS):
            remove_heads(model, attentions[attn_name], heads)
            # a later entry may narrow the same attention again
            attentions[attn_name] = describe(attn_name, model.get_submodule(attn_name))
    except (AttributeError, IndexError, KeyError, RuntimeError) as e:
        raise CompressError(f"the slim model's pruning history does not fit a {spec.name} ({type(e).__name__})",
                            "the file was made for another architecture") from None
    return model
