"""The compress stage: a smaller student made from the merged model (layers dropped, optionally heads and FFN
neurons pruned) and distilled from it on the training data (edgetune/engines/compress/). Later stages export,
quantize, verify and time the student in place of the merged model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from edgetune.build import BaseStage, BuildContext, Key
from edgetune.core.artifacts import Student
from edgetune.core.errors import RecipeError
from edgetune.core.families import ModelInfo
from edgetune.core.lines import release, version
from edgetune.core.recipe import Recipe
from edgetune.engines.int8 import reduce_range


class Compress(BaseStage):
    name = "compress"
    needs = ("merge",)
    record = Student

    def skip(self, ctx: BuildContext, inputs: dict) -> str | None:
        if ctx.recipe.compress is None:  # not asked for: say nothing, unless asked by `edgetune compress`
            return "the recipe has no compress: section" if ctx.until == self.name else ""
        return None

    def check(self, recipe: Recipe, info: ModelInfo) -> None:
        c = recipe.compress
        if c is not None and c.prune_heads and release(version("transformers")) >= (5, 0):
            raise RecipeError(
                f"compress.prune_heads: transformers {version('transformers')} has no head pruning (transformers 5 "
                f"removed prune_heads and config.pruned_heads, which reload a pruned model); drop it, prune FFN "
                f"neurons (compress.prune_ffn) instead, or build on the transformers 4.57 line"
            )

    def key(self, ctx: BuildContext) -> Key:
        c = ctx.recipe.compress
        return Key(
            [c.model_dump() if c else None, ctx.recipe.training.max_length, ctx.recipe.training.seed, *_int8(ctx)],
            [ctx.data.fingerprint],
        )

    def run(self, ctx: BuildContext, inputs: dict, out: Path) -> Student:
        from edgetune.engines.compress.step import build_student

        c, tr, data = ctx.recipe.compress, ctx.recipe.training, ctx.data
        assert c is not None
        folder = out / "model"
        int8 = _int8(ctx)
        rep = build_student(
            inputs["merge"].path,
            ctx.task,
            data.train,
            data.eval,
            data.labels,
            folder,
            keep_layers=c.keep_layers,
            every=None if c.keep_layers else c.every,
            prune_heads=c.prune_heads,
            prune_ffn=c.prune_ffn,
            epochs=c.epochs,
            lr=c.learning_rate,
            temperature=c.temperature,
            alpha=c.alpha,
            hidden_weight=c.hidden_weight,
            augment=c.augment,
            batch_size=c.batch_size,
            max_length=tr.max_length,
            seed=tr.seed,
            log=ctx.log,
            progress_seconds=tr.progress_seconds,
            int8_aware_epochs=c.int8_aware_epochs,
            int8_reduced=bool(int8 and int8[0]["reduce_range"]),
            int8_per_channel=bool(int8 and int8[0]["per_channel"]),
            device=tr.device,
        )
        ctx.log(
            f"compress: student {rep.student_parameters:,} parameters (teacher {rep.teacher_parameters:,}), "
            f"held-out accuracy {rep.student_accuracy:.4f} (teacher {rep.teacher_accuracy:.4f})"
        )
        return Student(
            path=folder,
            eval_metrics={"accuracy": rep.student_accuracy},
            size_bytes=sum(p.stat().st_size for p in folder.glob("*.safetensors")),
            kept_layers=list(rep.kept_layers),
            teacher_layers=rep.teacher_layers,
            teacher_parameters=rep.teacher_parameters,
            student_parameters=rep.student_parameters,
            teacher_accuracy=rep.teacher_accuracy,
            epochs=[dataclasses.asdict(e) for e in rep.history],
            settings={**rep.settings, "seconds": rep.seconds},
        )


def _int8(ctx: BuildContext) -> list[dict]:
    """With int8-aware epochs, the int8 rounding they train against: the weight range quantize will choose for
    this machine and the package's boards, and quantize.per_channel (a part of the key: another CPU that needs
    another range distils again). Empty without them."""
    c, q = ctx.recipe.compress, ctx.recipe.quantize
    if c is None or not c.int8_aware_epochs:
        return []
    return [{"reduce_range": reduce_range(q.reduce_range, ctx.recipe.package.linux)[0], "per_channel": q.per_channel}]
