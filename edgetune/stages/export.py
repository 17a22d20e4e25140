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
    """Export `merged` to `out/model.onnx` and return its record.

    Encoders go through optimum-onnx (dynamic batch and sequence axes) and ONNX Runtime's fusions; decoders
    through onnxruntime-genai's model builder (KV cache, GroupQueryAttention), which also writes
    genai_config.json so the folder runs in onnxruntime-genai (Python, Java, Android).
    """
    if task.exporter == "genai-builder":
        build_genai(merged.path, out, "fp32")
        return describe_onnx(out / FP32_NAME, "fp32", {"exporter": "onnxruntime-genai model builder", "precision": "fp32"})
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


def build_genai(merged: Path, out: Path, precision: str, extra: dict | None = None) -> None:
    """Run onnxruntime-genai's model builder on a transformers folder; raise EdgetuneError with its last words."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(dir=out) as cache:
        cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(merged), "-o", str(out),
               "-p", precision, "-e", "cpu", "-c", cache]
        if extra:
            cmd += ["--extra_options", *[f"{k}={v}" for k, v in extra.items()]]
        done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not (out / FP32_NAME).exists():
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise EdgetuneError(f"onnxruntime-genai model builder failed ({precision}): {tail[:400]}")
