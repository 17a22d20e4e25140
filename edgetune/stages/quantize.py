"""Quantize the exported model: int8 with ONNX Runtime's quantizers (dynamic, or static with calibration) for
encoders; weight-only int4/int8 (MatMulNBits) with onnxruntime-genai's model builder for decoders."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ..artifacts import MergedModel, OnnxModel, Quantized
from ..errors import RecipeError
from ..families import ModelInfo
from ..genai import MODEL_NAME, build_genai, half_embeddings
from ..int8 import reduce_range
from ..recipe import QuantizeConfig, Recipe
from ..tasks.base import Task
from .base import BaseStage, BuildContext, Key, trained_model
from .common import describe_onnx, quiet

INT8_NAME = "model_int8.onnx"


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
            return Key([r.quantize.model_dump(exclude={"auto"}), ctx.data.fingerprint, weights])
        # the search reads verify's int8 budgets and times on the benchmark's threads
        budgets = {k: v for k, v in r.verify.model_dump().items() if k.startswith("int8_")}
        return Key([r.quantize.model_dump(), ctx.data.fingerprint, budgets, r.benchmark.threads, weights])

    def run(self, ctx: BuildContext, inputs: dict, out: Path) -> Quantized:
        r, merged = ctx.recipe, trained_model(inputs)
        reduced, why = reduce_range(r.quantize.reduce_range, r.package.linux)
        ctx.log(f"quantize: int8 weights in {7 if reduced else 8} bits: {why}")
        if r.quantize.auto:
            from ..autoquant import search

            return Quantized([search(ctx, inputs["export"], merged, out, (reduced, why))])
        tok = ctx.task.load_tokenizer(merged.path) if r.quantize.mode == "static" else None
        model = inputs["export"]
        return Quantized(
            [
                quantize_int8(
                    model, r.quantize, ctx.task, out, ctx.data.train, tok, r.training.max_length, (reduced, why)
                )
            ]
        )


class GenaiQuantize(BaseStage):
    """Weight-only int4 and/or int8 (MatMulNBits) with onnxruntime-genai's model builder, one folder per
    precision in quantize.precisions."""

    name = "quantize"
    needs = ("merge", "compress", "export")
    record = Quantized

    def key(self, ctx: BuildContext) -> Key:
        return Key([ctx.recipe.quantize.model_dump(), ctx.data.fingerprint])

    def run(self, ctx: BuildContext, inputs: dict, out: Path) -> Quantized:
        return quantize_genai(trained_model(inputs), ctx.recipe.quantize, out)


def quantize_genai(merged: MergedModel, cfg: QuantizeConfig, out: Path) -> Quantized:
    models = []
    for precision in cfg.precisions:
        folder = out / precision
        folder.mkdir()
        extra: dict = {"block_size": cfg.int4_block_size, "accuracy_level": cfg.int4_accuracy_level}
        head_int4 = precision == "int4" and not cfg.int4_keep_lm_head
        # The builder shares a tied embedding table with an int4 lm_head (GatherBlockQuantized); the 0.15
        # builder breaks that sharing when the lm_head is int8, so the table is kept apart then.
        if not (head_int4 and cfg.embeddings == "auto"):
            extra["shared_embeddings"] = "false"
        mixed = [
            g
            for g, on in (("last_matmul:int8", cfg.int4_keep_lm_head), ("mixed_layers:int8", cfg.int4_int8_layers))
            if on
        ]
        if precision == "int4" and mixed:
            extra["matmul_mixed_precision"] = ",".join(mixed)
        build_genai(merged.path, folder, precision, extra)
        notes = {"quantizer": "onnxruntime-genai model builder (MatMulNBits)", **extra}
        if cfg.embeddings != "fp32" and half_embeddings(folder / MODEL_NAME):
            notes["embeddings"] = "fp16"
        models.append(describe_onnx(folder / MODEL_NAME, precision, notes))
    return Quantized(models)


def quantize_int8(
    model: OnnxModel,
    cfg: QuantizeConfig,
    task: Task,
    out: Path,
    calibration: list[dict] | None,
    tokenizer: Any,
    max_length: int,
    weights: tuple[bool, str],
    exclude: list[str] | None = None,
) -> OnnxModel:
    """int8 weights (and activations, for static) into `out/model_int8.onnx` with onnxruntime.quantization;
    `weights`: (reduce_range, why: edgetune.int8.reduce_range's answer); the nodes named in `exclude` stay in
    float."""
    import onnx

    target = out / INT8_NAME
    # Fused contrib ops (Attention, BiasGelu) defeat ONNX shape inference; their outputs are float.
    extra = {"DefaultTensorType": onnx.TensorProto.FLOAT}
    reduced, why = weights
    with quiet():
        _run(cfg, model, target, task, calibration, tokenizer, max_length, extra, exclude or [], reduced)
    for f in model.path.parent.iterdir():  # tokenizer and config travel with the model
        if f.is_file() and f.suffix != ".onnx" and not f.name.endswith(".data"):
            shutil.copy2(f, out / f.name)
    notes = {
        "quantizer": f"onnxruntime.quantization.quantize_{cfg.mode}",
        "per_channel": cfg.per_channel,
        "weights": "int8, 7-bit range (reduce_range)" if reduced else "int8",
        "reduce_range": reduced,
        "reduce_range_why": why,
        "activations": "uint8 (dynamic, per batch)" if cfg.mode == "dynamic" else "uint8 (calibrated, QDQ)",
    }
    return describe_onnx(target, "int8", notes)


def _run(
    cfg: QuantizeConfig,
    model: OnnxModel,
    target: Path,
    task: Task,
    calibration: list[dict] | None,
    tokenizer: Any,
    max_length: int,
    extra: dict,
    exclude: list[str],
    reduced: bool,
) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    if cfg.mode == "dynamic":
        quantize_dynamic(
            model.path,
            target,
            weight_type=QuantType.QInt8,
            per_channel=cfg.per_channel,
            reduce_range=reduced,
            extra_options=extra,
            nodes_to_exclude=exclude,
        )
    else:
        examples = (calibration or [])[: cfg.calibration_samples]
        if not examples:
            raise ValueError("static quantization needs calibration examples")
        # the batches the task trains on, without the training targets: what the exported graph takes
        feeds = [
            {k: v.numpy() for k, v in b.items() if k != "labels"}
            for b in task.batches(examples, tokenizer, 1, max_length)
        ]

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self._it = iter(feeds)

            def get_next(self) -> dict | None:
                return next(self._it, None)

        # QDQ: QOperator static quantization fails on graphs with fused Attention (onnxruntime 1.32), and QDQ
        # is the form mobile execution providers (XNNPACK, NNAPI) consume.
        quantize_static(
            model.path,
            target,
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=cfg.per_channel,
            reduce_range=reduced,
            extra_options=extra,
            nodes_to_exclude=exclude,
        )
