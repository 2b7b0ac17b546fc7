"""Attention whose heads filter pruning may remove, and what removing them changes.

Two kinds are recognised:
- timm's `Attention` (ViT, DeiT, ...): `qkv` and `proj` linear layers; its forward reads
  `num_heads`, `head_dim` and `attn_dim` from the module, so fewer heads is a narrower qkv and
  proj and two changed attributes;
- `nn.MultiheadAttention` used as self-attention (torchvision's ViT): its packed `in_proj_weight`
  and `out_proj`; its own forward ties the heads' total width to the embedding, so a module that
  lost heads becomes a `PrunedSelfAttention` (a subclass: same parameters, same state-dict keys)
  that computes the same attention at the narrower width.
Head h is q, k and v rows h*d..h*d+d in the three thirds of the qkv weight and columns
h*d..h*d+d of the output projection. A head whose q, k, v rows are zero attends uniformly to zero
values and adds nothing, so the masked model and the one without the head are equal.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class Heads:
    """Where one attention's heads live, by parameter name."""
    attn: str  # module name
    heads: int
    head_dim: int
    qkv: str  # weight parameter name (also the ratio file's key: the share of heads removed)
    qkv_bias: str | None
    proj: str  # output projection weight: one column block per head

    def rows(self, heads) -> list[int]:
        d, width = self.head_dim, self.heads * self.head_dim
        return [part * width + h * d + i for part in range(3) for h in heads for i in range(d)]

    def cols(self, heads) -> list[int]:
        return [h * self.head_dim + i for h in heads for i in range(self.head_dim)]


def _timm(name: str, m: nn.Module) -> Heads | None:
    qkv, proj = getattr(m, "qkv", None), getattr(m, "proj", None)
    if not (type(m).__name__ == "Attention" and isinstance(qkv, nn.Linear) and isinstance(proj, nn.Linear)
            and all(isinstance(getattr(m, a, None), int) for a in ("num_heads", "head_dim", "attn_dim"))):
        return None
    if not qkv.out_features == 3 * m.attn_dim == 3 * m.num_heads * m.head_dim == 3 * proj.in_features:
        return None
    return Heads(name, m.num_heads, m.head_dim, f"{name}.qkv.weight",
                 f"{name}.qkv.bias" if qkv.bias is not None else None, f"{name}.proj.weight")


def _mha(name: str, m: nn.Module) -> Heads | None:
    if not (isinstance(m, nn.MultiheadAttention) and m._qkv_same_embed_dim and m.bias_k is None
            and not m.add_zero_attn and m.in_proj_weight is not None):
        return None
    d = m.head_dim
    if m.in_proj_weight.shape[0] != 3 * m.num_heads * d or m.out_proj.in_features != m.num_heads * d:
        return None
    return Heads(name, m.num_heads, d, f"{name}.in_proj_weight",
                 f"{name}.in_proj_bias" if m.in_proj_bias is not None else None, f"{name}.out_proj.weight")


def describe(name: str, m: nn.Module) -> Heads | None:
    """Heads of module `m` (named `name`) if it is an attention whose heads can be removed."""
    return _timm(name, m) or _mha(name, m)


def head_attentions(model: nn.Module) -> dict[str, Heads]:
    """{module name: Heads} for every attention whose heads can be removed."""
    found = {}
    for name, m in model.named_modules():
        heads = describe(name, m)
        if heads is not None:
            found[name] = heads
    return found


class PrunedSelfAttention(nn.MultiheadAttention):
    """`nn.MultiheadAttention` after some heads were removed: self-attention (query is key is
    value, no masks: how torchvision's ViT calls it) at `num_heads * head_dim` inner width."""

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if key is not query or value is not query or key_padding_mask is not None or attn_mask is not None:
            raise NotImplementedError("an attention with removed heads runs as self-attention without masks only")
        x = query if self.batch_first else query.transpose(0, 1)
        b, n, _ = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                             is_causal=is_causal)
        out = self.out_proj(out.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim))
        return (out if self.batch_first else out.transpose(0, 1)), None


def pruned_attention_flops(module: PrunedSelfAttention, inputs, output) -> None:
    """Torch-Pruning's op counter for a `PrunedSelfAttention` (its MultiheadAttention counter
    matches the class exactly, so this one would count nothing): the same terms as TP's, at the
    inner width `num_heads * head_dim` instead of the embedding's."""
    x = inputs[0] if module.batch_first else inputs[0].transpose(0, 1)
    b, n, e = x.shape
    inner, d = module.num_heads * module.head_dim, module.head_dim
    flops = n * inner + 3 * n * e * inner + (3 * n * inner if module.in_proj_bias is not None else 0)
    flops += module.num_heads * (2 * n * n * d + n * n) + n * e * (inner + 1)
    module.__flops__ += int(flops * b)


def remove_heads(model: nn.Module, where: Heads, heads: list[int]) -> None:
    """Remove whole heads of one attention in place: their qkv rows, their output-projection
    columns, and the head count (and width) the forward reads. `where` describes the attention
    as it is now (`head_attentions` of this model)."""
    import torch_pruning as tp

    attn = model.get_submodule(where.attn)
    rows = where.rows(heads)
    if isinstance(attn, nn.MultiheadAttention):
        gone = set(rows)
        keep = torch.tensor([i for i in range(attn.in_proj_weight.shape[0]) if i not in gone])
        attn.in_proj_weight = nn.Parameter(attn.in_proj_weight.data[keep].clone())
        if attn.in_proj_bias is not None:
            attn.in_proj_bias = nn.Parameter(attn.in_proj_bias.data[keep].clone())
        tp.prune_linear_in_channels(attn.out_proj, where.cols(heads))
        attn.num_heads -= len(heads)
        attn.__class__ = PrunedSelfAttention
    else:
        tp.prune_linear_out_channels(attn.qkv, rows)
        tp.prune_linear_in_channels(attn.proj, where.cols(heads))
        attn.num_heads -= len(heads)
        attn.attn_dim = attn.num_heads * attn.head_dim
