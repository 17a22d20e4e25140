"""edgetune's int4 model against a plain onnxruntime-genai model-builder int4 export of the same merged model.

Usage: python benchmarks/int4_vs_builder.py RUN_DIR [--threads 2] [--prompt 64] [--new 64] [--runs 5] [--rounds 3]
       python benchmarks/int4_vs_builder.py RUN_DIR --smoke

RUN_DIR is a finished `edgetune build` of a causal-lm recipe with int4 in quantize.precisions. Builds
`python -m onnxruntime_genai.models.builder -p int4 -e cpu` (no extra options) from RUN_DIR/merge/model into a
temp folder, then times PyTorch eager fp32, edgetune's int4 (RUN_DIR/quantize/int4) and the plain builder int4
in one run (edgetune's decode benchmark: each model in a fresh process, in interleaved rounds), with the same
prompt. Prints decode tokens/s and ratios.

--smoke: the same path on a tiny run in seconds (CI, tests/test_benchmarks.py): 1 thread, a 16-token prompt,
8 new tokens, 1 round of 1 timed run. Its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from edgetune.core.artifacts import MergedModel
from edgetune.core.recipe import BenchmarkConfig
from edgetune.engines.bench.run import bench_decode
from edgetune.engines.builder import build_genai
from edgetune.engines.onnxfile import describe_onnx
from edgetune.report.format import format_benchmark
from edgetune.tasks import get_task

SMOKE = {"threads": 1, "prompt": 16, "new": 8, "runs": 1, "rounds": 1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--runs", type=int, default=5, help="timed runs in all, split over the rounds")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="tiny settings, for CI: " + str(SMOKE))
    args = ap.parse_args()
    if args.smoke:
        vars(args).update(SMOKE)
    merged = args.run_dir / "merge" / "model"
    ours = describe_onnx(args.run_dir / "quantize" / "int4" / "model.onnx", "int4")
    with tempfile.TemporaryDirectory() as d:
        plain_dir = Path(d) / "plain-int4"
        plain_dir.mkdir()
        build_genai(merged, plain_dir, "int4", plain=True)
        plain = describe_onnx(plain_dir / "model.onnx", "int4-plain-builder")
        size = sum(f.stat().st_size for f in merged.glob("*.safetensors"))
        cfg = BenchmarkConfig(
            threads=args.threads,
            sequence_lengths=[args.prompt],
            new_tokens=args.new,
            warmup=1,
            runs=args.runs,  # in all, split over the rounds (as benchmark.runs)
            rounds=args.rounds,
        )
        result = bench_decode(
            [ours, plain],
            cfg,
            None,
            MergedModel(path=merged, size_bytes=size),
            get_task("causal-lm").load_model,
            print,
        )
    print(format_benchmark(result))
    print(json.dumps({r["model"]: round(r["decode_tokens_per_s"], 1) for r in result.results}))


if __name__ == "__main__":
    main()
