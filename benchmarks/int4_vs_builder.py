"""edgetune's int4 model against a plain onnxruntime-genai model-builder int4 export of the same merged model.

Usage: python benchmarks/int4_vs_builder.py RUN_DIR [--threads 2] [--prompt 64] [--new 64] [--runs 5]

Builds `python -m onnxruntime_genai.models.builder -p int4 -e cpu` (no extra options) from RUN_DIR/merge/model
into a temp folder, then times PyTorch eager fp32, edgetune's int4 (RUN_DIR/quantize/int4) and the plain
builder int4 in one run, each in a fresh process, with the same prompt. Prints decode tokens/s and ratios.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from edgetune.core.artifacts import MergedModel
from edgetune.core.recipe import BenchmarkConfig
from edgetune.engines.builder import build_genai
from edgetune.engines.onnxfile import describe_onnx
from edgetune.stages.bench import _bench_llm, format_benchmark


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    merged = args.run_dir / "merge" / "model"
    ours = describe_onnx(args.run_dir / "quantize" / "int4" / "model.onnx", "int4")
    with tempfile.TemporaryDirectory() as d:
        plain_dir = Path(d) / "plain-int4"
        plain_dir.mkdir()
        build_genai(merged, plain_dir, "int4")
        plain = describe_onnx(plain_dir / "model.onnx", "int4-plain-builder")
        size = sum(f.stat().st_size for f in merged.glob("*.safetensors"))
        cfg = BenchmarkConfig(
            threads=args.threads, sequence_lengths=[args.prompt], new_tokens=args.new, warmup=1, runs=args.runs
        )
        result = _bench_llm([ours, plain], cfg, None, MergedModel(path=merged, size_bytes=size), print)
    print(format_benchmark(result))
    print(json.dumps({r["model"]: round(r["decode_tokens_per_s"], 1) for r in result.results}))


if __name__ == "__main__":
    main()
