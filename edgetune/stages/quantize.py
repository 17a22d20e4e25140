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
            extra: dict = {"block_size": cfg.int4_block_size, "accuracy_level": cfg.int4_accuracy_level}
            head_int4 = precision == "int4" and not cfg.int4_keep_lm_head
            # The builder shares a tied embedding table with an int4 lm_head (GatherBlockQuantized); the 0.15
            # builder breaks that sharing when the lm_head is int8, so the table is kept apart then.
            if not (head_int4 and cfg.embeddings == "auto"):
                extra["shared_embeddings"] = "false"
            mixed = [g for g, on in (("last_matmul:int8", cfg.int4_keep_lm_head),
                                     ("mixed_layers:int8", cfg.int4_int8_layers)) if on]
            if precision == "int4" and mixed:
                extra["matmul_mixed_precision"] = ",".join(mixed)
            build_genai(merged.path, folder, precision, extra)
            notes = {"quantizer": "onnxruntime-genai model builder (MatMulNBits)", **extra}
            if cfg.embeddings != "fp32" and half_embeddings(folder / FP32_NAME):
                notes["embeddings"] = "fp16"
            models.append(describe_onnx(folder / FP32_NAME, precision, notes))
        return Quantized(models)
    return Quantized([_quantize_int8(model, cfg, task, out, calibration, tokenizer, max_length)])


def half_embeddings(path: Path) -> bool:
    """Store a decoder's float32 token-embedding table (the Gather on `input_ids`) in float16, with a Cast back
    to float32 after the lookup. Halves the table (113 MB -> 57 MB for SmolLM2-135M); held-out JSON exact match
    unchanged in our measurement. Returns False (and leaves the file alone) when the graph has no such table, when
    the table feeds anything else too, or when a value would not fit in float16."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(path)
    graph = model.graph
    tables = {t.name: t for t in graph.initializer if t.data_type == TensorProto.FLOAT and len(t.dims) == 2}
    gather = next((n for n in graph.node if n.op_type == "Gather" and n.input[0] in tables
                   and n.input[1] == "input_ids"), None)
    if gather is None or sum(gather.input[0] in n.input for n in graph.node) != 1:
        return False
    table = tables[gather.input[0]]
    values = numpy_helper.to_array(table)
    if not np.isfinite(values).all() or np.abs(values).max() > np.finfo(np.float16).max:
        return False
    half = numpy_helper.from_array(values.astype(np.float16), f"{table.name}.fp16")
    graph.initializer.remove(table)
    graph.initializer.append(half)
    out = gather.output[0]
    gather.input[0], gather.output[0] = half.name, f"{out}.fp16"
    cast = helper.make_node("Cast", [gather.output[0]], [out], name=f"{gather.name}/CastToFloat", to=TensorProto.FLOAT)
    graph.node.insert(list(graph.node).index(gather) + 1, cast)
    data = path.with_name(path.name + ".data")
    path.unlink()
    data.unlink(missing_ok=True)
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location=data.name)
    return True


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
