"""The finetune stage: the recipe's adapter, trained with edgetune's loop (engines/finetune.py), resumable from
its checkpoint in finetune.ckpt/."""

from __future__ import annotations

from pathlib import Path

from edgetune.build import BaseStage, BuildContext, Key
from edgetune.core.artifacts import Adapter
from edgetune.core.errors import RecipeError
from edgetune.core.families import ModelInfo
from edgetune.core.recipe import Recipe
from edgetune.engines.finetune import finetune, run_key, training_key
from edgetune.engines.int4 import int4_training_block
from edgetune.engines.training import is_rank0, resolve_device


class Finetune(BaseStage):
    """Train the recipe's adapter on the base model (resumable from its checkpoint in finetune.ckpt/)."""

    name = "finetune"
    record = Adapter
    distributed = True  # every process of a launch trains; rank 0 writes

    def check(self, recipe: Recipe, info: ModelInfo) -> None:
        tr = recipe.training
        if tr.strategy != "fsdp":
            return
        if resolve_device(tr.device) == "cpu":
            # accelerate 1.16 (state.py) turns an FSDP plugin into FSDP on accelerators only; on CPU it keeps
            # MULTI_CPU, i.e. DDP with a whole model per process
            raise RecipeError(
                "training.strategy: fsdp needs CUDA GPUs (accelerate shards models on accelerators only; on CPU "
                "it would run DDP, a whole model per process); use strategy: ddp here"
            )
        if recipe.lora.method == "adalora":
            raise RecipeError(
                "training.strategy: fsdp cannot train lora.method: adalora (its rank allocator reads whole "
                "gradients, FSDP keeps shards); use ddp or another method"
            )

    def key(self, ctx: BuildContext) -> Key:
        r = ctx.recipe
        # int4-aware epochs train against the int4 rounding of this block size
        return Key(
            [r.task, r.model.source, r.lora.model_dump(), training_key(r.training), int4_training_block(r)],
            [ctx.data.fingerprint, ctx.source.fingerprint()],
        )

    def run(self, ctx: BuildContext, inputs: dict, out: Path) -> Adapter:
        import shutil

        r, tr = ctx.recipe, ctx.recipe.training
        block = int4_training_block(r)
        root = ctx.run.root / "finetune.ckpt"
        ckpt = root / run_key(r.lora, tr, ctx.data.fingerprint, block)
        record = finetune(
            ctx.base(),
            ctx.data,
            r.lora,
            ctx.adapter,
            tr,
            ctx.task,
            out,
            ckpt,
            r.model.trust_remote_code,
            ctx.progress,
            ctx.log,
            block,
        )
        if is_rank0():
            shutil.rmtree(root, ignore_errors=True)
        return record
