"""The parity gate: PyTorch merged vs every ONNX model on the held-out split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgetune.build import BaseStage, BuildContext, Key, Task, TaskData, trained_model
from edgetune.core.artifacts import Check, MergedModel, OnnxModel, Verification
from edgetune.core.errors import EdgetuneError
from edgetune.core.memory import release_memory
from edgetune.core.recipe import VerifyConfig
from edgetune.core.rundir import atomic_write_json
from edgetune.engines.verify import against_reference, holds
from edgetune.runtime.cpu import cpu_isa

EVAL_BATCH = 32  # PyTorch's batch in verify (float results do not depend on it)


class Verify(BaseStage):
    """PyTorch merged vs every ONNX model on the held-out split; with `generate`, greedy decoding compared too."""

    name = "verify"
    needs = ("merge", "compress", "export", "quantize")
    record = Verification

    def __init__(self, generate: bool = False, deployed_batch: bool = False) -> None:
        """`deployed_batch`: run the ONNX models at benchmark.batch_size, the batch the app and the benchmark run
        them at, instead of 32: dynamic int8 quantizes a call's activations with one scale, so in a batch of 32
        padded texts each text's result depends on the others (measured on the 3-layer student: 0.939 at batch
        32, 0.950 = fp32 at batch 1)."""
        self.generate, self.deployed_batch = generate, deployed_batch

    def onnx_batch(self, ctx: BuildContext) -> int:
        return ctx.recipe.benchmark.batch_size if self.deployed_batch else EVAL_BATCH

    def key(self, ctx: BuildContext) -> Key:
        # benchmark.threads is read too (ONNX Runtime sessions), for speed: results do not depend on it
        r = ctx.recipe
        return Key([r.verify.model_dump(), r.training.max_length, self.onnx_batch(ctx)], [ctx.data.fingerprint])

    def run(self, ctx: BuildContext, inputs: dict, out: Path) -> Verification:
        r = ctx.recipe
        models = [inputs["export"], *inputs["quantize"].models]
        generate = r.verify.greedy_tokens if self.generate else 0
        return verify(
            trained_model(inputs),
            models,
            r.verify,
            ctx.data,
            ctx.task,
            out,
            r.training.max_length,
            threads=r.benchmark.threads,
            base=ctx.base().path,
            generate=generate,
            onnx_batch_size=self.onnx_batch(ctx),
        )


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
    base: Path | None = None,
    generate: int = 0,
    onnx_batch_size: int | None = None,
) -> Verification:
    """Compare each ONNX model's outputs and task metrics to the PyTorch merged model; never raises on a failed gate.

    With `base` (the model before fine-tuning) its task metrics are measured too, for the report. With
    `generate`, each model also decodes greedily, and its first `generate` tokens are compared with PyTorch's.
    PyTorch runs at `batch_size`, the ONNX models at `onnx_batch_size` (default: the same)."""
    # One model in memory at a time: PyTorch's reference first, freed before the base model loads, and each ONNX
    # model freed before the next one loads.
    tokenizer = task.load_tokenizer(merged.path)
    torch_model = task.load_model(merged.path, data.labels)
    ref, ref_metrics = task.evaluate(torch_model, tokenizer, data.eval, batch_size, max_length, generate)
    del torch_model
    release_memory()
    results: dict[str, dict[str, Any]] = {"pytorch_fp32": dict(ref_metrics)}
    if base is not None:
        import torch

        with torch.random.fork_rng():  # a classifier's new head is random: the same one in every run
            torch.manual_seed(0)
            base_model = task.load_model(base, data.labels)
        _, base_metrics = task.evaluate(base_model, tokenizer, data.eval, batch_size, max_length, generate)
        del base_model
        release_memory()
        results["pytorch_base"] = base_metrics
    checks: list[Check] = []
    for m in models:
        name = f"onnx_{m.precision}"
        runner = task.load_onnx(m.path, threads)
        got, metrics = task.evaluate(runner, tokenizer, data.eval, onnx_batch_size or batch_size, max_length, generate)
        del runner
        release_memory()
        if got.shape != ref.shape:
            raise EdgetuneError(f"verify: {m.path.name} outputs have shape {got.shape}, PyTorch's {ref.shape}")
        r = against_reference(ref, ref_metrics, got, metrics, generate)
        results[name] = r
        for check_name, value, threshold, op in task.checks(m.precision, cfg, ref_metrics, r):
            ok = holds(value, threshold, op)
            checks.append(Check(f"verify[{name}]", check_name, float(value), float(threshold), op, ok))
    path = out / "diff.json"
    atomic_write_json(path, {"rows": len(data.eval), "models": results, "checks": [c.__dict__ for c in checks]})
    # Generated token lists stay in diff.json; the record (and report) keeps the figures.
    figures = {n: {k: v for k, v in m.items() if not isinstance(v, list)} for n, m in results.items()}
    return Verification(
        passed=all(c.passed for c in checks),
        checks=checks,
        models=figures,
        rows=len(data.eval),
        details_path=path,
        isa=cpu_isa(),
    )
