"""Merge the adapter (LoRA, DoRA, AdaLoRA, IA3) into the base weights and prove the merged model computes the
same outputs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from edgetune.build import BaseStage, BuildContext, Key, Task, TaskData
from edgetune.core.artifacts import Adapter, MergedModel
from edgetune.core.errors import CheckFailed, EdgetuneError
from edgetune.core.sources import ModelSource


class Merge(BaseStage):
    """Merge the adapter into the base weights and prove, in float64, that nothing changed."""

    name = "merge"
    needs = ("finetune",)
    record = MergedModel

    def key(self, ctx: BuildContext) -> Key:
        v, tr = ctx.recipe.verify, ctx.recipe.training
        return Key([v.merge_max_abs_diff, v.merge_check_rows, tr.max_length], [ctx.data.fingerprint])

    def run(self, ctx: BuildContext, inputs: dict, out: Path) -> MergedModel:
        r = ctx.recipe
        return merge(
            inputs["finetune"],
            ctx.base(),
            ctx.data,
            ctx.task,
            out,
            r.verify.merge_max_abs_diff,
            r.training.batch_size * 2,
            r.training.max_length,
            r.model.trust_remote_code,
            r.verify.merge_check_rows,
        )


def merge(
    adapter: Adapter,
    base: ModelSource,
    data: TaskData,
    task: Task,
    out: Path,
    max_abs_diff: float = 1e-5,
    batch_size: int = 32,
    max_length: int = 128,
    trust_remote_code: bool = False,
    check_rows: int = 0,
) -> MergedModel:
    """`merge_and_unload` the adapter; fail if merged outputs differ from the adapter model's by > max_abs_diff
    on the first `check_rows` eval rows (0: all; every row runs through every weight, so a few rows prove the
    merge, and float64 is slow). The saved float32 model is then evaluated on all rows."""
    from peft import PeftModel

    tokenizer = task.load_tokenizer(adapter.path, trust_remote_code)
    model = task.load_model(base.path, data.labels, trust_remote_code)
    try:
        with warnings.catch_warnings():
            # peft 0.21 checks an AdaLoRA rank_pattern (keys of lora_E parameters) as if it named modules and warns
            # that it matched none; AdaLoRA then applies it itself (resize_modules_by_rank_pattern).
            warnings.filterwarnings("ignore", "The following rank_pattern keys did not match", RuntimeWarning)
            peft_model = PeftModel.from_pretrained(model, adapter.path)
    except Exception as e:  # a mismatched adapter surfaces as shape or key errors deep in peft
        raise EdgetuneError(
            f"merge: cannot load adapter {adapter.path} onto {base.spec}: {str(e).splitlines()[0]}"
        ) from None
    if adapter.int4_block_size:  # trained int4-aware: on a base whose untrained linears were rounded to int4
        from edgetune.engines.int4 import round_frozen_for_int4

        round_frozen_for_int4(peft_model, adapter.int4_block_size)
    # The equality check runs in float64 so that it measures the merge, not float32 summation-order noise
    # (adapter and merged models add the same numbers in a different order). The merged weights are then
    # rounded to float32 once, and the verify stage compares that float32 model against ONNX Runtime.
    rows = data.eval[:check_rows] if check_rows else data.eval
    peft_model.eval().double()
    before, _ = task.evaluate(peft_model, tokenizer, rows, batch_size, max_length)
    if peft_model.peft_type == "IA3":
        _unwrap_trained_in_full(peft_model)
    merged = peft_model.merge_and_unload().eval()
    after, _ = task.evaluate(merged, tokenizer, rows, batch_size, max_length)
    diff = float(np.max(np.abs(after - before)))
    if not diff <= max_abs_diff:
        raise CheckFailed(f"merge: max |merged - adapter| = {diff:.3g} > {max_abs_diff:g} on {len(rows)} eval rows")
    merged = merged.float()
    after32, metrics = task.evaluate(merged, tokenizer, data.eval, batch_size, max_length)
    folder = out / "model"
    merged.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    size = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    return MergedModel(
        path=folder,
        merge_max_abs_diff=diff,
        eval_metrics=metrics,
        size_bytes=size,
        fp32_max_abs_diff=float(np.max(np.abs(after32[: len(rows)] - before))),
    )


def _unwrap_trained_in_full(peft_model) -> None:
    """Put each module trained in full (modules_to_save) in place of its wrapper. peft 0.21's IA3 unload fails on
    a wrapped module without a .weight (AttributeError: 'BertPooler' object has no attribute 'weight')."""
    from peft.utils import ModulesToSaveWrapper

    for name, module in list(peft_model.base_model.model.named_modules()):
        if isinstance(module, ModulesToSaveWrapper):
            parent, _, child = name.rpartition(".")
            owner = peft_model.base_model.model.get_submodule(parent) if parent else peft_model.base_model.model
            setattr(
                owner,
                child,
                module.unload_and_optionally_merge_module(merge=True, safe_merge=False, adapter_names=None),
            )
