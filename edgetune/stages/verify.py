"""The parity gate: PyTorch merged vs every ONNX model on the held-out split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..artifacts import Check, MergedModel, OnnxModel, Verification
from ..errors import EdgetuneError
from ..recipe import VerifyConfig
from ..rundir import atomic_write_json
from ..tasks.base import Task, TaskData


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
    ref, ref_metrics = task.evaluate(torch_model, tokenizer, data.eval, batch_size, max_length)
    results: dict[str, dict[str, Any]] = {"pytorch_fp32": dict(ref_metrics)}
    checks: list[Check] = []
    for m in models:
        name = f"onnx_{m.precision}"
        runner = task.load_onnx(m.path, threads)
        got, metrics = task.evaluate(runner, tokenizer, data.eval, batch_size, max_length)
        if got.shape != ref.shape:
            raise EdgetuneError(f"verify: {m.path.name} outputs have shape {got.shape}, PyTorch's {ref.shape}")
        r = {**metrics, **task.compare(ref, got)}
        for key in ref_metrics.keys() & metrics.keys():
            if key != "tokens":
                r[f"{key}_drop"] = float(ref_metrics[key] - metrics[key])
        results[name] = r
        for check_name, value, threshold, op in task.checks(m.precision, cfg, ref_metrics, r):
            ok = value <= threshold if op == "<=" else value >= threshold
            checks.append(Check(f"verify[{name}]", check_name, float(value), float(threshold), op, bool(ok)))
    path = out / "diff.json"
    atomic_write_json(path, {"rows": len(data.eval), "models": results, "checks": [c.__dict__ for c in checks]})
    return Verification(passed=all(c.passed for c in checks), checks=checks, models=results,
                        rows=len(data.eval), details_path=path)
