"""Adapters kept apart: the base model built once (int4) with a LoRA input at each adapted projection, and each
task of the recipe's adapters: list as an `.onnx_adapter` file over it, each verified against its own PyTorch
model (base + that adapter, merged in float) with the int4 gates of a merged build."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgetune.build import BaseStage, BuildContext, Key, TaskData
from edgetune.core.artifacts import Adapter, AdapterSet, Check, ShippedAdapter, Verification
from edgetune.core.memory import release_memory
from edgetune.core.rundir import atomic_write_json
from edgetune.engines.adapters import base_with_adapters, merged_with
from edgetune.engines.builder import BUILD_OPTIONS
from edgetune.engines.int4 import int4_block_of
from edgetune.engines.onnxfile import describe_onnx
from edgetune.engines.quantize import genai_options
from edgetune.engines.verify import against_reference, holds
from edgetune.runtime.cpu import cpu_isa


class ShipAdapters(BaseStage):
    """The int4 base plus one .onnx_adapter per task (the recipe's adapters: list), each verified."""

    name = "adapters"
    needs = ("finetune",)
    record = AdapterSet

    def skip(self, ctx: BuildContext, inputs: dict) -> str | None:
        return None if ctx.recipe.adapters else ""  # "": the recipe does not ask for it

    def key(self, ctx: BuildContext) -> Key:
        r = ctx.recipe
        data = [_data(ctx, a.name).fingerprint for a in r.adapters]
        return Key(
            [
                _options(r),
                BUILD_OPTIONS,
                r.verify.model_dump(),
                r.training.max_length,
            ],
            [ctx.source.fingerprint(), *data],
        )

    def run(self, ctx: BuildContext, inputs: dict, out: Path) -> AdapterSet:
        r = ctx.recipe
        trained: dict[str, Adapter] = {a.name: a for a in inputs["finetune"].tasks}
        own = trained[r.own_adapter() or ""]
        ctx.log(f"adapters: building the int4 base once, with a LoRA input for {len(trained)} adapter(s)")
        model, files = base_with_adapters(
            ctx.base().path,
            own.path,
            {name: a.path for name, a in trained.items()},
            out,
            _options(r),
        )
        verification = _verify(ctx, trained, model.parent, files, out)
        shipped = [
            ShippedAdapter(name, files[name], files[name].stat().st_size, trained[name].int4_base) for name in files
        ]
        notes = {"quantizer": "onnxruntime-genai model builder (MatMulNBits)", "lora_inputs": True}
        return AdapterSet(describe_onnx(model, "int4", notes), shipped, verification)


def _options(recipe: Any) -> dict:
    """The builder options of the int4 base: the recipe's int4 layout, as its merged int4 model has."""
    return genai_options(recipe.quantize, "int4", int4_block_of(recipe)[0])


def _data(ctx: BuildContext, name: str) -> TaskData:
    return ctx.adapter_data.get(name, ctx.data)


def _verify(
    ctx: BuildContext, trained: dict[str, Adapter], folder: Path, files: dict[str, Path], out: Path
) -> Verification:
    """Each adapter through the base+adapter ONNX path against its own PyTorch model on its held-out split."""
    r, task = ctx.recipe, ctx.task
    cfg, max_length, generate = r.verify, r.training.max_length, r.verify.greedy_tokens
    lm = task.load_onnx(folder / "model.onnx", r.benchmark.threads)
    for name, path in files.items():
        lm.load_adapter(name, path)
    results: dict[str, dict[str, Any]] = {}
    checks: list[Check] = []
    for name, adapter in trained.items():
        data = _data(ctx, name)
        tokenizer = task.load_tokenizer(adapter.path)
        merged = merged_with(task.load_model, ctx.base().path, adapter.path)
        ref, ref_metrics = task.evaluate(merged, tokenizer, data.eval, 32, max_length, generate)
        del merged
        release_memory()
        lm.use_adapter(name)
        got, metrics = task.evaluate(lm, tokenizer, data.eval, 32, max_length, generate)
        got_all = against_reference(ref, ref_metrics, got, metrics, generate)
        results[f"{name}/pytorch_fp32"], results[f"{name}/onnx_int4+adapter"] = dict(ref_metrics), got_all
        for check, value, threshold, op in task.checks("int4", cfg, ref_metrics, got_all):
            checks.append(
                Check(f"adapters[{name}]", check, float(value), float(threshold), op, holds(value, threshold, op))
            )
            ctx.log(f"adapters: {name}: {checks[-1].describe()}{'' if checks[-1].passed else '  FAILED'}")
    path = out / "diff.json"
    atomic_write_json(path, {"models": results, "checks": [c.__dict__ for c in checks]})
    figures = {n: {k: v for k, v in m.items() if not isinstance(v, list)} for n, m in results.items()}
    rows = sum(len(_data(ctx, n).eval) for n in trained)
    return Verification(all(c.passed for c in checks), checks, figures, rows, path, cpu_isa())
