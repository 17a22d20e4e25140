"""How far an ONNX model's outputs are from PyTorch's, and whether a gate holds: the one definition verify and
quantize.auto both use."""

from __future__ import annotations

import numpy as np


def compare(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """How far ONNX outputs are from PyTorch's: max/mean abs diff, cosine per row, top-1 agreement."""
    a, b = got.reshape(len(got), -1).astype(np.float64), ref.reshape(len(ref), -1).astype(np.float64)
    cos = (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)
    return {
        "max_abs_diff": float(np.abs(got - ref).max()),
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


def holds(value: float, threshold: float, op: str) -> bool:
    """A gate (name, value, threshold, op) as a task's `checks` returns it: op is '<=' or '>='."""
    if op not in ("<=", ">="):
        raise ValueError(f"unknown gate operator {op!r}")
    return bool(value <= threshold if op == "<=" else value >= threshold)
