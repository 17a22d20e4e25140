"""Adapters kept apart from the base, in two stages. train-adapters trains each task of the recipe's adapters:
list (keeping an adapter whose data and settings are unchanged), apart from the finetune stage, so that adding a
task neither retrains the recipe's own adapter nor rebuilds the merged model. adapters builds the base model once
(int4) with a LoRA input at each adapted projection, and each task as an `.onnx_adapter` file over it, each
verified against its own PyTorch model (the base, rounded to int4 where the adapter trained against that, with
the adapter merged in float) with the int4 gates of a merged build."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from edgetune.build import BaseStage, BuildContext, Key, TaskData
from edgetune.core.artifacts import (
    Adapter,
    AdapterSet,
    Check,
    ShippedAdapter,
    TrainedAdapters,
    Verification,
    from_json,
    to_json,
)
from edgetune.core.memory import release_memory
from edgetune.core.rundir import atomic_write_json
from edgetune.engines.adapters import base_with_adapters, merged_with
from edgetune.engines.builder import BUILD_OPTIONS
from edgetune.engines.finetune import finetune, run_key
from edgetune.engines.int4 import int4_block_of, int4_training_block
from edgetune.engines.onnxfile import describe_onnx
from edgetune.engines.quantize import genai_options
from edgetune.engines.training import is_rank0
from edgetune.engines.verify import against_reference, holds
from edgetune.runtime.cpu import cpu_isa


class TrainAdapters(BaseStage):
    """Train each task of the recipe's adapters: list into out/NAME/, each from its own data; with
    training.int4_aware_epochs against the int4-rounded base (what the device computes: the int4 base file's
    rounding, the adapter in float on top), the recipe's own dataset too. Without, the entry of the recipe's own
    dataset is the finetune stage's adapter and is not trained here. An adapter whose key (data, lora, training,
    int4 block, base) is the same as in this stage's last output is kept from it."""

    name = "train-adapters"
    record = TrainedAdapters
    distributed = True  # every process of a launch trains; rank 0 writes

    def skip(self, ctx: BuildContext, inputs: dict) -> str | None:
        return None if ctx.recipe.adapters else ""  # "": the recipe does not ask for it

    def key(self, ctx: BuildContext) -> Key:
        r = ctx.recipe
        return Key([r.task, r.model.source, [[name, key] for name, key in self._keys(ctx).items()]], [])

    def _keys(self, ctx: BuildContext) -> dict[str, str]:
        """The entries this stage trains, each with the key of its training."""
        r = ctx.recipe
        block = int4_training_block(r)
        return {
            a.name: run_key(r.lora, r.training, _data(ctx, a.name).fingerprint, block, ctx.source.fingerprint())
            for a in r.adapters
            if a.dataset is not None or block is not None
        }

    def run(self, ctx: BuildContext, inputs: dict, out: Path) -> TrainedAdapters:
        import json
        import shutil

        r, keys, block = ctx.recipe, self._keys(ctx), int4_training_block(ctx.recipe)
        before, ckpt_root = ctx.run.stage_dir(self.name), ctx.run.root / f"{self.name}.ckpt"
        trained = []
        for name, key in keys.items():
            folder, old = out / name, before / name
            try:
                kept = json.loads((old / "adapter.json").read_text())
                record = from_json(Adapter, kept["record"], folder) if kept.get("key") == key else None
            except (OSError, ValueError, KeyError, TypeError):  # none, or written by an older edgetune
                record = None
            if record is not None:
                ctx.log(f"train-adapters: {name}: trained before with the same settings and data; kept")
                if is_rank0():
                    shutil.copytree(old, folder)
            else:
                ctx.log(f"train-adapters: {name}: training" + (" against the int4 base" if block else ""))
                record = finetune(
                    ctx.base(),
                    _data(ctx, name),
                    r.lora,
                    ctx.adapter,
                    r.training,
                    ctx.task,
                    folder,
                    ckpt_root / key,
                    r.model.trust_remote_code,
                    ctx.progress,
                    ctx.log,
                    None,
                    int4_base=block,
                    label=f"train-adapters: {name}",
                )
                if is_rank0():
                    atomic_write_json(folder / "adapter.json", {"key": key, "record": to_json(record, folder)})
            trained.append(dataclasses.replace(record, name=name))
        if is_rank0():
            shutil.rmtree(ckpt_root, ignore_errors=True)
        return TrainedAdapters(trained)


class ShipAdapters(BaseStage):
    """The int4 base plus one .onnx_adapter per task (the recipe's adapters: list), each verified."""

    name = "adapters"
    needs = ("finetune", "train-adapters")
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
        apart = {a.name: a for a in inputs["train-adapters"].adapters}
        own_name = r.own_adapter() or ""
        # in the recipe's order; the own dataset's entry is finetune's adapter unless it trained apart
        trained: dict[str, Adapter] = {a.name: apart.get(a.name) or inputs["finetune"] for a in r.adapters}
        own = trained[own_name]
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
            ShippedAdapter(name, files[name], files[name].stat().st_size, trained[name].int4_base, trained[name].path)
            for name in files
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
        merged = merged_with(task.load_model, ctx.base().path, adapter.path, adapter.int4_base)
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
