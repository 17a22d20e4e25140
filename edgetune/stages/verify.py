"""The parity gate: PyTorch merged vs every ONNX model on the held-out split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import Check, MergedModel, OnnxModel, Verification
from ..errors import EdgetuneError
from ..recipe import VerifyConfig
from ..runtime import ort_session
from ..rundir import atomic_write_json
from ..tasks.base import Task, TaskData


def _ort_outputs(model: OnnxModel, batches: list[dict], task: Task, threads: int) -> np.ndarray:
    try:
        sess = ort_session(model.path, threads)
    except Exception as e:
        raise EdgetuneError(f"verify: onnxruntime cannot load {model.path}: {str(e).splitlines()[0][:200]}") from None
    wanted = [i.name for i in sess.get_inputs()]
    outs = []
    for b in batches:
        feeds = {k: v.numpy() for k, v in task.model_inputs(b).items()}
        missing = [n for n in wanted if n not in feeds]
        if missing:
            raise EdgetuneError(
                f"verify: {model.path.name} wants inputs {missing} that the task does not produce (has {sorted(feeds)})"
            )
        try:
            outs.append(sess.run(None, {n: feeds[n] for n in wanted})[0].astype(np.float32))
        except Exception as e:
            raise EdgetuneError(f"verify: onnxruntime failed on {model.path.name}: {str(e).splitlines()[0][:200]}") from None
    return np.concatenate(outs)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a2, b2 = a.reshape(len(a), -1), b.reshape(len(b), -1)
    num = (a2 * b2).sum(-1)
    den = np.linalg.norm(a2, axis=-1) * np.linalg.norm(b2, axis=-1)
    return num / np.maximum(den, 1e-12)


def _check(stage: str, name: str, value: float, threshold: float, op: str) -> Check:
    ok = value <= threshold if op == "<=" else value >= threshold
    return Check(stage=stage, name=name, value=float(value), threshold=float(threshold), op=op, passed=bool(ok))


def verify(
    merged: MergedModel,
    models: list[OnnxModel],
    cfg: VerifyConfig,
    data: TaskData,
    task: Task,
    out: Path,
    max_length: int = 128,
    batch_size: int = 32,
    threads: int = 0,
) -> Verification:
    """Compare each ONNX model's outputs and task metrics to the PyTorch merged model; never raises on a failed gate."""
    tokenizer = task.load_tokenizer(merged.path)
    torch_model = task.load_model(merged.path, data)
    batches = list(task.batches(data.eval, tokenizer, batch_size, max_length))
    ref = np.concatenate([task.logits(torch_model, b) for b in batches])
    ref_metrics = task.score(ref, data.eval)
    results: dict[str, dict[str, Any]] = {"pytorch_fp32": {**ref_metrics}}
    checks: list[Check] = []
    details: dict[str, Any] = {"rows": len(data.eval), "models": {}}
    for m in models:
        name = f"onnx_{m.precision}"
        got = _ort_outputs(m, batches, task, threads)
        if got.shape != ref.shape:
            raise EdgetuneError(f"verify: {m.path.name} output shape {got.shape} != PyTorch {ref.shape}")
        absdiff = np.abs(got - ref).reshape(len(ref), -1).max(-1)
        cos = _cosine(got, ref)
        agree = float((got.argmax(-1) == ref.argmax(-1)).mean())
        metrics = task.score(got, data.eval)
        acc_key = next(iter(metrics))
        r = {
            **metrics,
            "max_abs_diff": float(absdiff.max()),
            "mean_abs_diff": float(np.abs(got - ref).mean()),
            "min_cosine": float(cos.min()),
            "mean_cosine": float(cos.mean()),
            "top1_agreement": agree,
            f"{acc_key}_drop": float(ref_metrics[acc_key] - metrics[acc_key]),
        }
        results[name] = r
        stage = f"verify[{name}]"
        if m.precision == "fp32":
            checks.append(_check(stage, "max_abs_diff", r["max_abs_diff"], cfg.fp32_max_abs_diff, "<="))
            checks.append(_check(stage, "min_cosine", r["min_cosine"], cfg.fp32_min_cosine, ">="))
        else:
            checks.append(_check(stage, "top1_agreement", agree, cfg.int8_min_top1_agreement, ">="))
            checks.append(_check(stage, f"{acc_key}_drop", r[f"{acc_key}_drop"], cfg.int8_max_accuracy_drop, "<="))
            checks.append(_check(stage, "mean_cosine", r["mean_cosine"], cfg.int8_min_cosine, ">="))
        worst = np.argsort(-absdiff)[:20]
        details["models"][name] = {
            "metrics": r,
            "worst_rows": [
                {"where": data.eval[i].get("where"), "max_abs_diff": float(absdiff[i]), "cosine": float(cos[i]),
                 "torch_top1": int(ref[i].argmax()), "onnx_top1": int(got[i].argmax())}
                for i in worst
            ],
        }
    details["checks"] = [c.__dict__ for c in checks]
    path = out / "diff.json"
    atomic_write_json(path, details)
    return Verification(passed=all(c.passed for c in checks), checks=checks, models=results,
                        rows=len(data.eval), details_path=path)
