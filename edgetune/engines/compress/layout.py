"""Where a transformers encoder keeps its layers (BERT-style `encoder.layer`, DistilBERT `transformer.layer`),
and which teacher layers a student keeps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# every=2 keeps the layer that ends each group of `every` (1, 3, 5 of 6), so the teacher's last layer, whose output
# the trained pooler and head read, stays. Measured on the default recipe's merged model (3 of 6 layers, same
# distillation settings): see the README's design note on the student.
EVERY_KEEPS_LAST = True
# Layers of a `model.base_model`, tried in order: (path to the ModuleList, what the layout is called).
_LAYOUTS = (("encoder.layer", "BERT-style encoder.layer"), ("transformer.layer", "DistilBERT transformer.layer"))


def _get(module: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


def encoder_layers(model: Any) -> tuple[Any, str, str]:
    """(the module holding the layer list, the attribute name, the layout path) of a transformers encoder; raises
    ValueError for a layout this module does not handle."""
    import torch

    base = getattr(model, "base_model", None)
    config = getattr(model, "config", None)
    name = type(model).__name__
    if base is None or config is None:
        raise ValueError(f"{name}: not a transformers model (no base_model/config); a student needs one")
    for path, _ in _LAYOUTS:
        layers = _get(base, path)
        if isinstance(layers, torch.nn.ModuleList) and len(layers) > 0:
            holder_path, attr = path.rsplit(".", 1)
            return _get(base, holder_path), attr, path
    kinds = "; ".join(f"{what} (base_model.{path})" for path, what in _LAYOUTS)
    model_type = getattr(config, "model_type", "?")
    raise ValueError(
        f"{name} (model_type {model_type}): unsupported layout for a student: make_student handles {kinds}; "
        f"this model has neither (decoders, ALBERT's shared layers and other layouts are not supported)"
    )


def num_layers(model: Any) -> int:
    """How many encoder layers the model has (ValueError for an unsupported layout)."""
    holder, attr, _ = encoder_layers(model)
    return len(getattr(holder, attr))


def choose_layers(n: int, keep_layers: Sequence[int] | None = None, every: int | None = None) -> list[int]:
    """The teacher layers a student keeps: `keep_layers` as given (validated), or one in every `every` layers
    ending each group (every=2 of 6: 1, 3, 5; see EVERY_KEEPS_LAST), default every=2."""
    if keep_layers is not None and every is not None:
        raise ValueError("give keep_layers or every, not both")
    if keep_layers is not None:
        kept = [int(i) for i in keep_layers]
        if not kept:
            raise ValueError("keep_layers: empty; a student keeps at least one layer")
        bad = [i for i in kept if not 0 <= i < n]
        if bad:
            raise ValueError(f"keep_layers: {bad} out of range for a teacher with {n} layers (0..{n - 1})")
        if kept != sorted(set(kept)):
            raise ValueError(f"keep_layers: {kept} must be strictly increasing (each teacher layer once, in order)")
        return kept
    every = 2 if every is None else int(every)
    if not 1 <= every <= n:
        raise ValueError(f"every: {every} must be between 1 and the teacher's {n} layers")
    if EVERY_KEEPS_LAST:
        return [i for i in range(n) if (i + 1) % every == 0]
    return list(range(0, n, every))
