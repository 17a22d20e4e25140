"""Structured pruning of a student: the least important attention heads and FFN neurons, the same count in
every layer, by a weight-magnitude importance."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from edgetune.engines.compress.layout import _get, encoder_layers

# Per layer: (value projection, attention output projection), the first that exists (BERT-likes, DeBERTa-v2,
# MPNet, DistilBERT), and (FFN in -> intermediate, intermediate -> out, config field of the intermediate width).
_ATTENTION = (
    ("attention.self.value", "attention.output.dense"),
    ("attention.self.value_proj", "attention.output.dense"),
    ("attention.attn.v", "attention.attn.o"),
    ("attention.v_lin", "attention.out_lin"),
)
_FFN = (("intermediate.dense", "output.dense", "intermediate_size"), ("ffn.lin1", "ffn.lin2", "hidden_dim"))


def head_importance(model: Any) -> list[Any]:
    """Per layer, a tensor with one score per attention head: the norm of the head's value projection times the
    norm of its columns in the output projection (what the head can add to the residual stream)."""
    holder, attr, _ = encoder_layers(model)
    cfg = model.config
    heads = getattr(cfg, "num_attention_heads", None) or cfg.n_heads
    size = (getattr(cfg, "hidden_size", None) or cfg.dim) // heads
    out = []
    for layer in getattr(holder, attr):
        value, proj = (m.weight.detach() for m in _linears(layer, _ATTENTION, "prune_heads"))
        v = value.reshape(-1, size * value.shape[1]).norm(dim=1)  # rows of head h: h*size .. (h+1)*size
        o = proj.reshape(proj.shape[0], -1, size).transpose(0, 1).reshape(v.shape[0], -1).norm(dim=1)
        out.append(v * o)
    return out


def _linears(layer: Any, candidates: Sequence[Sequence[str]], what: str) -> list[Any]:
    """The linear layers of the first candidate whose modules all exist in `layer`; ValueError if none does."""
    import torch

    for names in candidates:
        mods = [_get(layer, n) for n in names]
        if all(isinstance(m, torch.nn.Linear) for m in mods):
            return mods
    raise ValueError(f"{what}: {type(layer).__name__} has none of the known projections ({candidates})")


def _prune_heads(model: Any, fraction: float) -> None:
    """Remove the same number of least important heads in every layer (transformers' prune_heads)."""
    cfg = model.config
    heads = getattr(cfg, "num_attention_heads", None) or cfg.n_heads
    if getattr(cfg, "pruned_heads", None):
        raise ValueError("prune_heads: the teacher already has pruned heads; prune it once")
    drop = int(math.floor(heads * fraction))
    if drop == 0:
        return
    if drop >= heads:
        raise ValueError(f"prune_heads: {fraction} would remove all {heads} heads")
    if not hasattr(model, "prune_heads"):  # transformers 5 removed it (and config.pruned_heads, which reloads it)
        raise ValueError(f"prune_heads: {type(model).__name__} cannot prune heads (transformers 5 has no head pruning)")
    plan = {i: sorted(score.argsort()[:drop].tolist()) for i, score in enumerate(head_importance(model))}
    try:
        model.prune_heads(plan)
    except NotImplementedError as e:
        raise ValueError(f"prune_heads: {type(model).__name__} cannot prune heads ({e})") from None


def ffn_importance(model: Any) -> list[Any]:
    """Per layer, one score per FFN neuron: the norm of its input row times the norm of its output column."""
    holder, attr, _ = encoder_layers(model)
    out = []
    for layer in getattr(holder, attr):
        lin1, lin2 = _linears(layer, [f[:2] for f in _FFN], "prune_ffn")
        out.append(lin1.weight.detach().norm(dim=1) * lin2.weight.detach().norm(dim=0))
    return out


def _ffn_paths(model: Any) -> tuple[str, str, str]:
    """(in linear, out linear, config width field) of this model's FFN layers; ValueError if unknown, or if a
    layer holds several FFN blocks of that width."""
    import torch

    holder, attr, _ = encoder_layers(model)
    layer = getattr(holder, attr)[0]
    _linears(layer, [f[:2] for f in _FFN], "prune_ffn")
    for names in _FFN:
        if _get(layer, names[0]) is not None and hasattr(model.config, names[2]):
            width = getattr(model.config, names[2])
            blocks = sum(isinstance(m, torch.nn.Linear) and m.out_features == width for m in layer.modules())
            if blocks > 1:  # MobileBERT stacks num_feedforward_networks FFNs per layer
                raise ValueError(
                    f"prune_ffn: each {type(layer).__name__} has {blocks} feed-forward blocks sharing "
                    f"config.{names[2]}; edgetune prunes one per layer"
                )
            return names
    raise ValueError(f"prune_ffn: the config of {type(model).__name__} has no intermediate width field")


def _prune_ffn(model: Any, fraction: float) -> None:
    """Keep the same number of most important FFN neurons in every layer; the config's width follows."""
    from transformers.pytorch_utils import prune_linear_layer

    holder, attr, _ = encoder_layers(model)
    w_in, w_out, field_name = _ffn_paths(model)
    width = getattr(model.config, field_name)
    keep = width - int(math.floor(width * fraction))
    if keep == width:
        return
    for layer, score in zip(getattr(holder, attr), ffn_importance(model)):
        index = score.argsort(descending=True)[:keep].sort().values
        for dotted, dim in ((w_in, 0), (w_out, 1)):
            parent_path, name = dotted.rsplit(".", 1)
            parent = _get(layer, parent_path)
            setattr(parent, name, prune_linear_layer(getattr(parent, name), index, dim=dim))
    setattr(model.config, field_name, keep)
