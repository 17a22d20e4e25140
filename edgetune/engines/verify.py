"""How far an ONNX model's outputs are from PyTorch's, and whether a gate holds: the one definition verify and
quantize.auto both use."""

from __future__ import annotations

from typing import Any

import numpy as np


def compare(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """How far ONNX outputs are from PyTorch's: max/mean abs diff, the largest diff relative to its row's scale
    (max |ref| in that row: the float error of a correct export grows with the logits' size), cosine per row,
    top-1 agreement."""
    a, b = got.reshape(len(got), -1).astype(np.float64), ref.reshape(len(ref), -1).astype(np.float64)
    cos = (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)
    rel = np.abs(a - b).max(-1) / np.maximum(np.abs(b).max(-1), 1e-12)
    return {
        "max_abs_diff": float(np.abs(got - ref).max()),
        "max_rel_diff": float(rel.max()),
        "mean_abs_diff": float(np.abs(got - ref).mean()),
        "min_cosine": float(cos.min()),
        "mean_cosine": float(cos.mean()),
        "top1_agreement": float((got.argmax(-1) == ref.argmax(-1)).mean()),
    }


def greedy_agreement(ref: list[list[int]], got: list[list[int]], n: int) -> float:
    """Share of prompts whose first `n` greedy tokens (up to the end token) are identical."""
    return float(np.mean([a[:n] == b[:n] for a, b in zip(ref, got)]))


def against_reference(ref: np.ndarray, ref_metrics: dict, got: np.ndarray, metrics: dict, generate: int) -> dict:
    """One model's figures against PyTorch's: its task metrics, how far its outputs are (compare), with
    generations the greedy agreement over the first `generate` tokens, and each float metric's drop."""
    out = {**metrics, **compare(ref, got)}
    if "generations" in out:
        out["greedy_agreement"] = greedy_agreement(ref_metrics["generations"], out["generations"], generate)
    for key in ref_metrics.keys() & metrics.keys():
        if isinstance(metrics[key], float):
            out[f"{key}_drop"] = float(ref_metrics[key] - metrics[key])
    return out


def fp32_gates(cfg: Any, metrics: dict) -> list[tuple[str, float, float, str]]:
    """The parity gates of an fp32 export against PyTorch (the recipe's verify section `cfg`): the largest diff
    relative to its row's scale, max |diff| where the recipe bounds it, and the smallest cosine."""
    gates = [("max_rel_diff", metrics["max_rel_diff"], cfg.fp32_max_rel_diff, "<=")]
    if cfg.fp32_max_abs_diff is not None:
        gates.append(("max_abs_diff", metrics["max_abs_diff"], cfg.fp32_max_abs_diff, "<="))
    return [*gates, ("min_cosine", metrics["min_cosine"], cfg.fp32_min_cosine, ">=")]


def holds(value: float, threshold: float, op: str) -> bool:
    """A gate (name, value, threshold, op) as a task's `checks` returns it: op is '<=' or '>='."""
    if op not in ("<=", ">="):
        raise ValueError(f"unknown gate operator {op!r}")
    return bool(value <= threshold if op == "<=" else value >= threshold)
