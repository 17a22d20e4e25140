"""Quantizers: onnxruntime.quantization's int8 for encoders, the genai model builder's int8/int4 for decoders."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from edgetune.core.artifacts import MergedModel, OnnxModel, Quantized
from edgetune.core.recipe import QuantizeConfig
from edgetune.engines.builder import MODEL_NAME, build_genai, half_embeddings
from edgetune.engines.onnxfile import describe_onnx, quiet

INT8_NAME = "model_int8.onnx"


def genai_options(cfg: QuantizeConfig, precision: str, block: int) -> dict:
    """The model builder's options for one precision of the recipe's quantize section (on top of BUILD_OPTIONS);
    `block`: the int4 block size (edgetune.engines.int4.int4_block resolves the recipe's)."""
    extra: dict = {"block_size": block, "accuracy_level": cfg.int4_accuracy_level}
    head_int4 = precision == "int4" and not cfg.int4_keep_lm_head
    # The builder shares a tied embedding table with an int4 lm_head (GatherBlockQuantized); the 0.15
    # builder breaks that sharing when the lm_head is int8, so the table is kept apart then.
    if not (head_int4 and cfg.embeddings == "auto"):
        extra["shared_embeddings"] = "false"
    mixed = [
        g for g, on in (("last_matmul:int8", cfg.int4_keep_lm_head), ("mixed_layers:int8", cfg.int4_int8_layers)) if on
    ]
    if precision == "int4" and mixed:
        extra["matmul_mixed_precision"] = ",".join(mixed)
    return extra


def quantize_genai(merged: MergedModel, cfg: QuantizeConfig, out: Path, block: int) -> Quantized:
    models = []
    for precision in cfg.precisions:
        folder = out / precision
        folder.mkdir()
        extra = genai_options(cfg, precision, block)
        build_genai(merged.path, folder, precision, extra)
        notes = {"quantizer": "onnxruntime-genai model builder (MatMulNBits)", **extra}
        if cfg.embeddings != "fp32" and half_embeddings(folder / MODEL_NAME):
            notes["embeddings"] = "fp16"
        models.append(describe_onnx(folder / MODEL_NAME, precision, notes))
    return Quantized(models)


def quantize_int8(
    model: OnnxModel,
    cfg: QuantizeConfig,
    out: Path,
    calibration: list[dict[str, Any]] | None,
    weights: tuple[bool, str],
    exclude: list[str] | None = None,
) -> OnnxModel:
    """int8 weights (and activations, for static) into `out/model_int8.onnx` with onnxruntime.quantization;
    `calibration`: the graph's inputs for static int8 (calibration_feeds); `weights`: (reduce_range, why:
    edgetune.engines.int8.reduce_range's answer); the nodes named in `exclude` stay in float."""
    import onnx

    target = out / INT8_NAME
    # Fused contrib ops (Attention, BiasGelu) defeat ONNX shape inference; their outputs are float.
    extra = {"DefaultTensorType": onnx.TensorProto.FLOAT}
    reduced, why = weights
    with quiet():
        _run(cfg, model, target, calibration, extra, exclude or [], reduced)
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
    calibration: list[dict[str, Any]] | None,
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
        feeds = list(calibration or [])
        if not feeds:
            raise ValueError("static quantization needs calibration examples")

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


def calibration_feeds(
    batches: Callable[..., Iterator[dict[str, Any]]], examples: list[dict], tokenizer: Any, max_length: int
) -> list[dict[str, Any]]:
    """What the exported graph takes for each example: the batches the task trains on (`batches`: the task's
    method), one example each, without the training targets."""
    return [{k: v.numpy() for k, v in b.items() if k != "labels"} for b in batches(examples, tokenizer, 1, max_length)]
