"""Export the merged model to ONNX with optimum-onnx, then apply ONNX Runtime's transformer fusions."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..artifacts import MergedModel, OnnxModel
from ..errors import EdgetuneError
from ..recipe import ExportConfig
from ..tasks.base import Task
from .common import describe_onnx, quiet

FP32_NAME = "model.onnx"


def export(merged: MergedModel, cfg: ExportConfig, task: Task, out: Path) -> OnnxModel:
    """Export `merged` to `out/model.onnx` (dynamic batch and sequence axes) and return its record."""
    from optimum.exporters.onnx import main_export

    raw = out / "raw"
    with quiet():
        main_export(
            str(merged.path), raw, task=task.onnx_task, opset=cfg.opset, do_validation=False,
            library_name="transformers",
        )
    if not (raw / FP32_NAME).exists():
        raise EdgetuneError(f"export: optimum-onnx wrote no {FP32_NAME} into {raw}")
    notes = {"exporter": "optimum-onnx main_export", "opset": cfg.opset, "fusions": {}}
    if cfg.optimize:
        notes["fusions"] = _optimize(raw, out)
    else:
        shutil.copy2(raw / FP32_NAME, out / FP32_NAME)
    for f in raw.iterdir():  # tokenizer and config files travel with the model
        if f.suffix != ".onnx" and f.is_file():
            shutil.copy2(f, out / f.name)
    shutil.rmtree(raw)
    return describe_onnx(out / FP32_NAME, "fp32", notes)


def _optimize(raw: Path, out: Path) -> dict:
    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import OptimizationConfig

    # Level 1 keeps the graph portable (no CPU-layout-specific nodes). SkipLayerNormalization is left unfused:
    # measured slower than Add + LayerNormalization on CPU (see edgetune/runtime.py).
    config = OptimizationConfig(optimization_level=1, disable_skip_layer_norm_fusion=True,
                                disable_bias_skip_layer_norm_fusion=True)
    with quiet():
        optimizer = ORTOptimizer.from_pretrained(raw, file_names=[FP32_NAME])
        optimizer.optimize(config, save_dir=out / "opt", file_suffix=None)
    produced = out / "opt" / FP32_NAME
    if not produced.exists():
        raise EdgetuneError(f"export: ONNX Runtime optimizer wrote no {FP32_NAME} into {out / 'opt'}")
    produced.replace(out / FP32_NAME)
    shutil.rmtree(out / "opt")
    import onnx
    from collections import Counter

    ops = Counter(n.op_type for n in onnx.load(out / FP32_NAME, load_external_data=False).graph.node)
    return {k: v for k, v in ops.items() if k in {"Attention", "MultiHeadAttention", "EmbedLayerNormalization",
                                                    "BiasGelu", "FastGelu", "Gelu", "SkipLayerNormalization",
                                                    "LayerNormalization"}}
