"""Quantize the exported model: int8 with ONNX Runtime's quantizers (dynamic, or static with calibration) for
encoders; weight-only int4/int8 (MatMulNBits) with onnxruntime-genai's model builder for decoders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgetune.build import BaseStage, BuildContext, Key, trained_model
from edgetune.core.artifacts import MergedModel, Quantized
from edgetune.core.errors import RecipeError
from edgetune.core.families import ModelInfo
from edgetune.core.recipe import Recipe
from edgetune.engines import autoquant, gptq, int4_auto
from edgetune.engines.autoquant import SELECT_COPIES, SEQ, Selection, search, selection_split
from edgetune.engines.bench.inputs import encoder_inputs
from edgetune.engines.builder import BUILD_OPTIONS
from edgetune.engines.int4 import int4_block_of, int4_training_block
from edgetune.engines.int4_auto import LMSelection, search_int4
from edgetune.engines.int8 import reduce_range
from edgetune.engines.quantize import calibration_feeds, quantize_genai, quantize_int8


class OrtInt8(BaseStage):
    """int8 weights (and activations, static QDQ with calibration) with onnxruntime.quantization."""

    name = "quantize"
    needs = ("merge", "compress", "export")
    record = Quantized

    def check(self, recipe: Recipe, info: ModelInfo) -> None:
        if recipe.quantize.precisions != ["int8"]:
            raise RecipeError(f"quantize.precisions: the {recipe.task} task supports [int8] only")

    def key(self, ctx: BuildContext) -> Key:
        r = ctx.recipe
        # the weight range this machine (and the package's boards) need: a run moved to another CPU requantizes
        weights = reduce_range(r.quantize.reduce_range, r.package.linux)[0]
        if not r.quantize.auto:
            return Key([r.quantize.model_dump(), ctx.data.fingerprint, weights])
        # the search reads verify's int8 budgets and times on the benchmark's threads
        budgets = {k: v for k, v in r.verify.model_dump().items() if k.startswith("int8_")}
        return Key([r.quantize.model_dump(), ctx.data.fingerprint, budgets, r.benchmark.threads, weights])

    def run(self, ctx: BuildContext, inputs: dict, out: Path) -> Quantized:
        r, merged = ctx.recipe, trained_model(inputs)
        reduced, why = reduce_range(r.quantize.reduce_range, r.package.linux)
        ctx.log(f"quantize: int8 weights in {7 if reduced else 8} bits: {why}")
        if r.quantize.auto:
            selection = _selection(ctx, merged)
            model = search(
                inputs["export"],
                out,
                selection,
                r.quantize,
                r.benchmark.threads,
                r.benchmark.runs,
                (reduced, why),
                ctx.log,
            )
            return Quantized([model])
        tok = ctx.task.load_tokenizer(merged.path) if r.quantize.mode == "static" else None
        model = inputs["export"]
        return Quantized([quantize_int8(model, r.quantize, out, _calibration(ctx, tok), (reduced, why))])


class GenaiQuantize(BaseStage):
    """Weight-only int4 and/or int8 (MatMulNBits) with onnxruntime-genai's model builder, one folder per
    precision in quantize.precisions."""

    name = "quantize"
    needs = ("merge", "compress", "export")
    record = Quantized

    def check(self, recipe: Recipe, info: ModelInfo) -> None:
        if not recipe.quantize.auto:
            return
        if "int4" not in recipe.quantize.precisions:
            raise RecipeError(
                "quantize.auto: for causal-lm it searches int4 layouts, so quantize.precisions must have int4"
            )
        if recipe.adapters:
            raise RecipeError(
                "quantize.auto: not with adapters: (each adapter is trained against the shared base's int4 "
                "rounding, so its layout is the recipe's)"
            )

    def key(self, ctx: BuildContext) -> Key:
        r = ctx.recipe
        block = int4_block_of(r)[0]  # auto: this machine's choice
        parts = [r.quantize.model_dump(), ctx.data.fingerprint, BUILD_OPTIONS, block]
        if r.quantize.auto:  # the search reads verify's int4 budgets, times as the benchmark does, and the rounding
            budgets = {k: getattr(r.verify, k) for k in ("int4_max_accuracy_drop", "max_perplexity_ratio")}
            timing = [r.benchmark.threads, r.benchmark.sequence_lengths[0], r.benchmark.new_tokens]
            parts += [budgets, timing, int4_training_block(r), r.training.seed, r.verify.greedy_tokens]
            parts.append(gptq.available())  # installing Olive later adds the GPTQ layouts: search again
        return Key(parts)

    def run(self, ctx: BuildContext, inputs: dict, out: Path) -> Quantized:
        r, merged = ctx.recipe, trained_model(inputs)
        block, why = int4_block_of(r)
        if not r.quantize.auto:
            if "int4" in r.quantize.precisions:
                ctx.log(f"quantize: int4 in blocks of {block}: {why}")
            return quantize_genai(merged, r.quantize, out, block)
        rest = [p for p in r.quantize.precisions if p != "int4"]
        models = quantize_genai(merged, r.quantize.model_copy(update={"precisions": rest}), out, block).models
        int4 = search_int4(
            merged.path,
            inputs["export"].path.parent,
            out,
            _lm_selection(ctx, merged),
            r.quantize.embeddings,
            int4_training_block(r),
            ctx.log,
            ctx.run.root / AUTO_FIGURES,
        )
        (ctx.run.root / AUTO_FIGURES).unlink(missing_ok=True)  # a failed search's, now superseded
        by_precision = {m.precision: m for m in [*models, int4]}
        return Quantized([by_precision[p] for p in r.quantize.precisions])  # in the recipe's order


AUTO_FIGURES = "quantize-auto.json"  # in the run directory: every layout's figures when no int4 layout passed


def _calibration(ctx: BuildContext, tokenizer: Any) -> list[dict] | None:
    """Static int8's calibration inputs: the first training examples (None for dynamic int8)."""
    r = ctx.recipe
    if r.quantize.mode != "static":
        return None
    examples = ctx.data.train[: r.quantize.calibration_samples]
    return calibration_feeds(ctx.task.batches, examples, tokenizer, r.training.max_length)


def _selection(ctx: BuildContext, merged: MergedModel) -> Selection:
    """quantize.auto's measuring kit: the selection split carved from the training set, the held-out split
    (reported only), the task's evaluation at verify's int8 batch and its int8 gates."""
    r, task, data = ctx.recipe, ctx.task, ctx.data
    tok = task.load_tokenizer(merged.path)
    batch, max_length = r.benchmark.batch_size, r.training.max_length  # the batch verify runs int8 at

    def evaluate(path: Path, examples: list[dict]) -> tuple[Any, dict]:
        return task.evaluate(task.load_onnx(path), tok, examples, batch, max_length)

    def gates(ref_metrics: dict, metrics: dict) -> list[tuple[str, float, float, str]]:
        return task.checks("int8", r.verify, ref_metrics, metrics)

    examples = data.train[: r.quantize.calibration_samples]
    return Selection(
        examples=selection_split(data.train, r.training.seed, getattr(tok, "mask_token", None)),
        heldout=data.eval,
        evaluate=evaluate,
        gates=gates,
        calibration=calibration_feeds(task.batches, examples, tok, max_length),
        timing_feeds=encoder_inputs(tok, 1, SEQ),
        what=f"{SELECT_COPIES} altered copies of each training text (seed {r.training.seed + autoquant.SELECT_SEED})",
    )


def _lm_selection(ctx: BuildContext, merged: MergedModel) -> LMSelection:
    """quantize.auto's measuring kit for decoders: the rows carved from the training set before finetune, the
    task's evaluation (as verify runs it) and its int4 gates, and the benchmark's decode timing."""
    import json

    from edgetune.core.recipe import BenchmarkConfig
    from edgetune.engines.builder import MODEL_NAME

    r, task, rows = ctx.recipe, ctx.task, ctx.data.selection
    tok = task.load_tokenizer(merged.path)
    loaded: dict[Path, Any] = {}

    def evaluate(folder: Path, examples: list[dict], generate: bool) -> dict:
        if folder not in loaded:  # one layout at a time: the last one loaded is kept for its next chunk
            loaded.clear()
            loaded[folder] = task.load_onnx(folder / MODEL_NAME)
        greedy = r.verify.greedy_tokens if generate else 0
        return task.evaluate(loaded[folder], tok, examples, r.benchmark.batch_size, r.training.max_length, greedy)[1]

    def gates(ref_metrics: dict, metrics: dict) -> list[tuple[str, float, float, str]]:
        return task.checks("int4", r.verify, ref_metrics, metrics)

    config = json.loads((merged.path / "config.json").read_text())
    b = r.benchmark
    timing = BenchmarkConfig(
        threads=b.threads, sequence_lengths=b.sequence_lengths[:1], new_tokens=b.new_tokens, warmup=1, runs=6, rounds=3
    )
    return LMSelection(
        examples=rows,
        evaluate=evaluate,
        gates=gates,
        load_torch=lambda: task.load_model(merged.path),
        timing=timing,
        vocab=int(config["vocab_size"]),
        what=f"{len(rows)} rows carved from the training set (seed training.seed + {int4_auto.SELECT_SEED}), not trained on",
        num_layers=int(config["num_hidden_layers"]),
        metric="json_exact_match" if rows and all(ex.get("score_json") for ex in rows) else None,
        budget={"max_drop": r.verify.int4_max_accuracy_drop, "max_perplexity_ratio": r.verify.max_perplexity_ratio},
        calibration=[tok.decode(ex["ids"]) for ex in ctx.data.train],  # what finetune trained on
        # sequences of the training length, or shorter where the rows are few (at least 16 sequences)
        calibration_len=min(r.training.max_length, max(16, sum(len(ex["ids"]) for ex in ctx.data.train) // 16)),
    )
