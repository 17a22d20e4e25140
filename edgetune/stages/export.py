"""Export the merged model to ONNX: optimum-onnx plus ONNX Runtime's transformer fusions for encoders,
onnxruntime-genai's model builder (KV cache, GroupQueryAttention) for decoders. The task picks one."""

from __future__ import annotations

import shutil
from pathlib import Path

from edgetune.build import BaseStage, BuildContext, Key, trained_model
from edgetune.core.artifacts import MergedModel, OnnxModel
from edgetune.core.errors import EdgetuneError
from edgetune.core.families import ModelInfo, check_genai_exportable, check_optimum_exportable
from edgetune.core.recipe import ExportConfig, Recipe
from edgetune.engines.builder import MODEL_NAME, build_genai
from edgetune.engines.fusions import optimize_encoder
from edgetune.engines.onnxfile import describe_onnx, quiet

FP32_NAME = "model.onnx"


class OptimumExport(BaseStage):
    """optimum-onnx's `main_export` for `onnx_task` (dynamic batch and sequence axes), then ONNX Runtime's
    portable fusions."""

    name = "export"
    needs = ("merge", "compress")
    record = OnnxModel

    def __init__(self, onnx_task: str) -> None:
        self.onnx_task = onnx_task

    def check(self, recipe: Recipe, info: ModelInfo) -> None:
        check_optimum_exportable(info, self.onnx_task)

    def key(self, ctx: BuildContext) -> Key:
        return Key(ctx.recipe.export.model_dump())

    def run(self, ctx: BuildContext, inputs: dict, out: Path) -> OnnxModel:
        return export_optimum(trained_model(inputs), ctx.recipe.export, self.onnx_task, out)


class GenaiExport(BaseStage):
    """onnxruntime-genai's model builder at fp32: the folder (genai_config.json, tokenizer) also runs in
    onnxruntime-genai's Python, Java and Android APIs."""

    name = "export"
    needs = ("merge", "compress")
    record = OnnxModel

    def check(self, recipe: Recipe, info: ModelInfo) -> None:
        check_genai_exportable(info)

    def key(self, ctx: BuildContext) -> Key:
        return Key(ctx.recipe.export.model_dump())

    def run(self, ctx: BuildContext, inputs: dict, out: Path) -> OnnxModel:
        merged: MergedModel = trained_model(inputs)
        build_genai(merged.path, out, "fp32")
        return describe_onnx(
            out / MODEL_NAME, "fp32", {"exporter": "onnxruntime-genai model builder", "precision": "fp32"}
        )


def export_optimum(merged: MergedModel, cfg: ExportConfig, onnx_task: str, out: Path) -> OnnxModel:
    """Export `merged` to `out/model.onnx` with optimum-onnx and return its record."""
    from optimum.exporters.onnx import main_export

    raw = out / "raw"
    with quiet():
        main_export(
            str(merged.path),
            raw,
            task=onnx_task,
            opset=cfg.opset,
            do_validation=False,
            library_name="transformers",
        )
    if not (raw / FP32_NAME).exists():
        raise EdgetuneError(f"export: optimum-onnx wrote no {FP32_NAME} into {raw}")
    notes = {"exporter": "optimum-onnx main_export", "opset": cfg.opset, "fusions": {}}
    if cfg.optimize:
        from transformers import AutoConfig

        notes["fusions"] = optimize_encoder(raw / FP32_NAME, out / FP32_NAME, AutoConfig.from_pretrained(merged.path))
    else:
        shutil.copy2(raw / FP32_NAME, out / FP32_NAME)
    for f in raw.iterdir():  # tokenizer and config files travel with the model
        if f.suffix != ".onnx" and f.is_file():
            shutil.copy2(f, out / f.name)
    shutil.rmtree(raw)
    return describe_onnx(out / FP32_NAME, "fp32", notes)
