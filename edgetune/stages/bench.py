"""Latency benchmark: PyTorch eager fp32 baseline and each ONNX model, each in its own fresh process."""

from __future__ import annotations

from pathlib import Path

from edgetune.build import BaseStage, BuildContext, Key, trained_model
from edgetune.core.artifacts import Benchmark
from edgetune.engines.bench.inputs import encoder_inputs
from edgetune.engines.bench.run import bench, bench_decode


class EncoderBench(BaseStage):
    """Latency of PyTorch eager fp32 (the baseline) and each ONNX model on the same token ids, at each sequence
    length, each model in a fresh process."""

    name = "bench"
    needs = ("merge", "compress", "export", "quantize")
    after_failure = ("merge", "export", "quantize")  # timed even when a later stage (package) failed
    record = Benchmark

    def key(self, ctx: BuildContext) -> Key:
        return Key(ctx.recipe.benchmark.model_dump())

    def run(self, ctx: BuildContext, inputs: dict, out: Path) -> Benchmark:
        merged, cfg = trained_model(inputs), ctx.recipe.benchmark
        tok = ctx.task.load_tokenizer(merged.path)
        feeds = {seq: encoder_inputs(tok, cfg.batch_size, seq) for seq in cfg.sequence_lengths}
        return bench(
            [inputs["export"], *inputs["quantize"].models],
            cfg,
            out,
            merged,
            ctx.task.load_model,
            ctx.data.labels,
            ctx.log,
            feeds,
        )


class DecodeBench(BaseStage):
    """Time to first token, prefill and decode tokens/s of PyTorch eager fp32 (the baseline) and each ONNX
    model in onnxruntime-genai, at each thread count, each model in a fresh process."""

    name = "bench"
    needs = ("merge", "compress", "export", "quantize", "adapters")
    after_failure = ("merge", "export", "quantize")  # timed even when a later stage (package) failed
    record = Benchmark

    def key(self, ctx: BuildContext) -> Key:
        return Key(ctx.recipe.benchmark.model_dump())

    def run(self, ctx: BuildContext, inputs: dict, out: Path) -> Benchmark:
        shipped = inputs.get("adapters")
        own = ctx.recipe.own_adapter()
        adapter = None
        if shipped is not None:  # the adapter of the recipe's own dataset: the merged int4 model's twin
            file = next(a.path for a in shipped.adapters if a.name == own)
            adapter = (shipped.model, own, file)
        return bench_decode(
            [inputs["export"], *inputs["quantize"].models],
            ctx.recipe.benchmark,
            out,
            trained_model(inputs),
            ctx.task.load_model,
            ctx.log,
            adapter,
        )
