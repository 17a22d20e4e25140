"""Export the merged model to ONNX: for encoders, optimum-onnx (transformers 4.57 line) or torch's exporter
(transformers 5 line), then ONNX Runtime's transformer fusions; for decoders, onnxruntime-genai's model builder
(KV cache, GroupQueryAttention). The task picks one; the library line installed picks the encoder exporter."""

from __future__ import annotations

import shutil
from pathlib import Path

from edgetune.build import BaseStage, BuildContext, Key, trained_model
from edgetune.core.artifacts import MergedModel, OnnxModel
from edgetune.core.errors import EdgetuneError
from edgetune.core.families import ModelInfo, check_encoder_exportable, check_genai_exportable
from edgetune.core.lines import OPTIMUM, TORCH, encoder_exporter, exporter_id, genai_builder_line, version
from edgetune.core.recipe import ExportConfig, Recipe
from edgetune.engines.builder import BUILD_OPTIONS, MODEL_NAME, build_genai
from edgetune.engines.encoder_export import export_encoder
from edgetune.engines.fusions import optimize_encoder
from edgetune.engines.onnxfile import describe_onnx, quiet

FP32_NAME = "model.onnx"


class EncoderExport(BaseStage):
    """The encoder to ONNX for `onnx_task`, with dynamic batch and sequence axes, then ONNX Runtime's portable
    fusions. The exporter is the line's (core/lines.py): optimum-onnx's `main_export` where it is installed
    (transformers 4.57), else torch's TorchScript exporter called by edgetune. Both give the same graph (the same
    fused operators and inputs; tests/test_encoder_export.py); the key names the exporter, so that a run
    directory moved to the other line exports again."""

    name = "export"
    needs = ("merge", "compress")
    record = OnnxModel

    def __init__(self, onnx_task: str) -> None:
        self.onnx_task = onnx_task

    def check(self, recipe: Recipe, info: ModelInfo) -> None:
        check_encoder_exportable(info, self.onnx_task, encoder_exporter())

    def key(self, ctx: BuildContext) -> Key:
        return Key({**ctx.recipe.export.model_dump(), "exporter": encoder_exporter()})

    def run(self, ctx: BuildContext, inputs: dict, out: Path) -> OnnxModel:
        merged: MergedModel = trained_model(inputs)
        if encoder_exporter() == OPTIMUM:
            return export_optimum(merged, ctx.recipe.export, self.onnx_task, out)
        return export_torch(ctx, merged, ctx.recipe.export, out)


class GenaiExport(BaseStage):
    """onnxruntime-genai's model builder at fp32: the folder (genai_config.json, tokenizer) also runs in
    onnxruntime-genai's Python, Java and Android APIs."""

    name = "export"
    needs = ("merge", "compress")
    record = OnnxModel

    def check(self, recipe: Recipe, info: ModelInfo) -> None:
        check_genai_exportable(info)

    def key(self, ctx: BuildContext) -> Key:
        # the builder's release line: a run directory moved to the other line exports again
        return Key({**ctx.recipe.export.model_dump(), "builder": genai_builder_line(), "options": BUILD_OPTIONS})

    def run(self, ctx: BuildContext, inputs: dict, out: Path) -> OnnxModel:
        merged: MergedModel = trained_model(inputs)
        build_genai(merged.path, out, "fp32")
        notes = {
            "exporter": f"onnxruntime-genai {version('onnxruntime-genai')} model builder",
            "precision": "fp32",
        }
        return describe_onnx(out / MODEL_NAME, "fp32", notes)


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
    return _finish(raw, merged, cfg, out, f"{exporter_id(OPTIMUM)} main_export")


def export_torch(ctx: BuildContext, merged: MergedModel, cfg: ExportConfig, out: Path) -> OnnxModel:
    """Export `merged` to `out/model.onnx` with torch's TorchScript exporter and return its record."""
    labels = ctx.data.labels
    model = ctx.task.load_model(merged.path, labels, ctx.recipe.model.trust_remote_code)
    tokenizer = ctx.task.load_tokenizer(merged.path, ctx.recipe.model.trust_remote_code)
    raw = out / "raw"
    raw.mkdir(parents=True)
    export_encoder(model, list(tokenizer.model_input_names), raw / FP32_NAME, cfg.opset)
    del model
    for f in Path(merged.path).iterdir():  # tokenizer and config files travel with the model, as optimum's do
        if f.is_file() and f.suffix not in WEIGHT_SUFFIXES:
            shutil.copy2(f, raw / f.name)
    return _finish(raw, merged, cfg, out, f"{exporter_id(TORCH)} (TorchScript)")


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".data")


def _finish(raw: Path, merged: MergedModel, cfg: ExportConfig, out: Path, exporter: str) -> OnnxModel:
    """The raw export in `raw`, fused (export.optimize) into `out` with its tokenizer and config files."""
    if not (raw / FP32_NAME).exists():
        raise EdgetuneError(f"export: {exporter} wrote no {FP32_NAME} into {raw}")
    notes = {"exporter": exporter, "opset": cfg.opset, "fusions": {}}
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
