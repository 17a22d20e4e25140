"""int8 quantization with ONNX Runtime's quantizers (dynamic, or static with calibration)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ..artifacts import MergedModel, OnnxModel, Quantized
from ..recipe import QuantizeConfig
from ..tasks.base import Task
from .common import describe_onnx, quiet

INT8_NAME = "model_int8.onnx"


def quantize(
    model: OnnxModel,
    merged: MergedModel,
    cfg: QuantizeConfig,
    task: Task,
    out: Path,
    calibration: list[dict] | None = None,
    tokenizer: Any = None,
    max_length: int = 128,
) -> Quantized:
    """Quantize to each of cfg.precisions: int8 with ONNX Runtime's quantizers for encoders; weight-only
    int4/int8 (MatMulNBits) with onnxruntime-genai's model builder for decoders, one folder per precision."""
    if task.exporter == "genai-builder":
        from .export import FP32_NAME, build_genai

        models = []
        for precision in cfg.precisions:
            folder = out / precision
            folder.mkdir()
            # The 0.15 builder breaks tied (shared) embeddings when the lm_head is not int4: keep them apart then.
            extra: dict = {"block_size": cfg.int4_block_size, "accuracy_level": cfg.int4_accuracy_level}
            if precision == "int8" or cfg.int4_keep_lm_head:
                extra["shared_embeddings"] = "false"
            mixed = [g for g, on in (("last_matmul:int8", cfg.int4_keep_lm_head),
                                     ("mixed_layers:int8", cfg.int4_int8_layers)) if on]
            if precision == "int4" and mixed:
                extra["matmul_mixed_precision"] = ",".join(mixed)
            build_genai(merged.path, folder, precision, extra)
            models.append(describe_onnx(folder / FP32_NAME, precision, {"quantizer": "onnxruntime-genai model builder (MatMulNBits)", **extra}))
        return Quantized(models)
    return Quantized([_quantize_int8(model, cfg, task, out, calibration, tokenizer, max_length)])


def _quantize_int8(
    model: OnnxModel,
    cfg: QuantizeConfig,
    task: Task,
    out: Path,
    calibration: list[dict] | None,
    tokenizer: Any,
    max_length: int,
) -> OnnxModel:
    """int8 weights (and activations, for static) into `out/model_int8.onnx` with onnxruntime.quantization."""
    import onnx

    target = out / INT8_NAME
    # Fused contrib ops (Attention, BiasGelu) defeat ONNX shape inference; their outputs are float.
    extra = {"DefaultTensorType": onnx.TensorProto.FLOAT}
    with quiet():
        _run(cfg, model, target, task, calibration, tokenizer, max_length, extra)
    for f in model.path.parent.iterdir():  # tokenizer and config travel with the model
        if f.is_file() and f.suffix != ".onnx" and not f.name.endswith(".data"):
            shutil.copy2(f, out / f.name)
    notes = {"quantizer": f"onnxruntime.quantization.quantize_{cfg.mode}", "per_channel": cfg.per_channel,
             "weights": "int8", "activations": "uint8 (dynamic, per batch)" if cfg.mode == "dynamic" else "uint8 (calibrated, QDQ)"}
    return describe_onnx(target, "int8", notes)


def _run(cfg: QuantizeConfig, model: OnnxModel, target: Path, task: Task, calibration: list[dict] | None,
         tokenizer: Any, max_length: int, extra: dict) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

    if cfg.mode == "dynamic":
        quantize_dynamic(model.path, target, weight_type=QuantType.QInt8, per_channel=cfg.per_channel,
                         extra_options=extra)
    else:
        examples = (calibration or [])[: cfg.calibration_samples]
        if not examples:
            raise ValueError("static quantization needs calibration examples")
        feeds = [
            {k: v.numpy() for k, v in task.model_inputs(b).items()}
            for b in task.batches(examples, tokenizer, 1, max_length)
        ]

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self._it = iter(feeds)

            def get_next(self) -> dict | None:
                return next(self._it, None)

        # QDQ: QOperator static quantization fails on graphs with fused Attention (onnxruntime 1.32), and QDQ
        # is the form mobile execution providers (XNNPACK, NNAPI) consume.
        quantize_static(model.path, target, Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=cfg.per_channel, extra_options=extra)
