"""Making a student: a copy of the teacher with only some of its encoder layers (optionally pruned), and its
parameter count."""

from __future__ import annotations

import copy
from typing import Any

from edgetune.engines.compress.layout import choose_layers, encoder_layers
from edgetune.engines.compress.prune import _prune_ffn, _prune_heads


def make_student(
    teacher: Any,
    keep_layers: list[int] | None = None,
    every: int | None = None,
    prune_heads: float = 0.0,
    prune_ffn: float = 0.0,
) -> Any:
    """A deep copy of `teacher` that keeps only the chosen encoder layers (their weights unchanged), with
    config.num_hidden_layers updated so that save_pretrained/from_pretrained and ONNX export see the new depth.

    `keep_layers` (teacher indices, increasing) or `every` (default 2: see `choose_layers`). Optional structured
    pruning, the same count in every layer so that the config can describe it: `prune_heads`, the fraction of
    attention heads removed per layer (transformers' prune_heads, recorded in config.pruned_heads), and
    `prune_ffn`, the fraction of FFN neurons removed per layer (config.intermediate_size shrinks); both by a
    weight-magnitude importance (see `head_importance`, `ffn_importance`). The student gets `kept_layers` (a
    Python attribute, not saved) for `distill`'s hidden-state mapping. Raises ValueError for an unsupported
    layout or bad arguments; the teacher is not modified."""
    import torch

    for what, frac in (("prune_heads", prune_heads), ("prune_ffn", prune_ffn)):
        if not 0.0 <= frac < 1.0:
            raise ValueError(f"{what}: {frac} must be in [0, 1)")
    holder, attr, _ = encoder_layers(teacher)
    n = len(getattr(holder, attr))
    kept = choose_layers(n, keep_layers, every)
    student = copy.deepcopy(teacher)
    s_holder, _, _ = encoder_layers(student)
    old = getattr(s_holder, attr)
    setattr(s_holder, attr, torch.nn.ModuleList([old[i] for i in kept]))
    cfg = student.config
    cfg.num_hidden_layers = len(kept)  # DistilBERT maps it to n_layers
    _renumber(getattr(s_holder, attr), cfg, kept, n)
    if prune_heads:
        _prune_heads(student, prune_heads)
    if prune_ffn:
        _prune_ffn(student, prune_ffn)
    student.kept_layers = list(kept)
    return student


def _renumber(layers: Any, cfg: Any, kept: list[int], n: int) -> None:
    """Per-layer bookkeeping after dropping layers: the modules' own layer indices (attention caches use them),
    per-layer config lists, and heads pruned before (config.pruned_heads, by layer index)."""
    for new, layer in enumerate(layers):
        for module in layer.modules():
            for name in ("layer_idx", "layer_id"):
                if isinstance(getattr(module, name, None), int):
                    setattr(module, name, new)
    for name in ("layer_types",):
        value = getattr(cfg, name, None)
        if isinstance(value, (list, tuple)) and len(value) == n:
            setattr(cfg, name, [value[i] for i in kept])
    pruned = getattr(cfg, "pruned_heads", None) or {}
    if pruned:
        cfg.pruned_heads = {new: list(pruned[old]) for new, old in enumerate(kept) if old in pruned}


def count_parameters(model: Any) -> int:
    """All parameters of a model (shared ones once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
