"""Held-out JSON exact match, size and decode speed of int4 variants of one run's merged model.

Usage: python benchmarks/int4_candidates.py RUN_DIR RECIPE [--only NAME ...] [--speed] [--smoke]

Each candidate is an onnxruntime-genai model-builder int4 export of RUN_DIR/merge/model with some extra
options (see CANDIDATES), optionally followed by edgetune's fp16 embedding table. For each it prints exact
match on the recipe's eval split (greedy, as verify measures it), perplexity and file size; with --speed,
edgetune's LLM benchmark of PyTorch eager fp32 and every candidate in one run (each in a fresh process,
2 threads, 64-token prompt, 64 new tokens, 5 runs), with decode ratios to PyTorch.

--smoke: the same path on a tiny run in seconds (CI, tests/test_benchmarks.py): the candidates in SMOKE_CANDIDATES
(unless --only names others: the one with extra builder options and the fp16 embedding table) and --speed
at 1 thread, a 16-token prompt, 8 new tokens, 1 round of 1 timed run. Its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

CANDIDATES: dict[str, tuple[dict, bool]] = {  # name: (builder extra options, fp16 embedding table)
    "plain": ({}, False),
    "plain_block64": ({"block_size": 64}, False),
    "plain_block128": ({"block_size": 128, "shared_embeddings": "false"}, False),
    "asymmetric": ({"shared_embeddings": "false", "is_symmetric": "false"}, False),
    "k_quant": ({"shared_embeddings": "false", "algo_config": "k_quant"}, False),
    "mixed_layers_int8": ({"matmul_mixed_precision": "mixed_layers:int8"}, False),
    "lm_head_int8": ({"shared_embeddings": "false", "matmul_mixed_precision": "last_matmul:int8"}, False),
    "lm_head_and_mixed_int8": (
        {"shared_embeddings": "false", "matmul_mixed_precision": "last_matmul:int8,mixed_layers:int8"},
        False,
    ),
    "lm_head_and_mixed_int8_fp16_embeddings": (
        {"shared_embeddings": "false", "matmul_mixed_precision": "last_matmul:int8,mixed_layers:int8"},
        True,
    ),
}
SMOKE_CANDIDATES = ("lm_head_and_mixed_int8_fp16_embeddings",)  # extra builder options and the fp16 table


def main() -> None:
    from edgetune.core.artifacts import MergedModel
    from edgetune.core.recipe import BenchmarkConfig, load_recipe
    from edgetune.engines.bench.run import bench_decode
    from edgetune.engines.builder import build_genai, half_embeddings
    from edgetune.engines.onnxfile import describe_onnx
    from edgetune.pipeline import prepare
    from edgetune.report.format import format_benchmark
    from edgetune.runtime.genai import GenaiLM

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("recipe", type=Path)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--speed", action="store_true")
    ap.add_argument(
        "--smoke", action="store_true", help="SMOKE_CANDIDATES (unless --only) and a tiny --speed run, for CI"
    )
    args = ap.parse_args()
    if args.smoke:
        args.only = args.only or list(SMOKE_CANDIDATES)
        args.speed = True
    recipe = load_recipe(args.recipe)
    p = prepare(recipe)
    merged = args.run_dir / "merge" / "model"
    tok = p.task.load_tokenizer(merged)
    fp32 = sum(f.stat().st_size for f in (args.run_dir / "export").glob("model.onnx*"))
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (extra, fp16) in CANDIDATES.items():
            if args.only and name not in args.only:
                continue
            folder = Path(tmp) / name
            folder.mkdir()
            build_genai(merged, folder, "int4", {"block_size": 32, "accuracy_level": 4} | extra)
            if fp16 and not half_embeddings(folder / "model.onnx"):
                print(f"{name}: no float32 token-embedding table of its own to halve; left as built", flush=True)
            _, m = p.task.evaluate(
                GenaiLM(folder, 2), tok, p.data.eval, 32, recipe.training.max_length, recipe.verify.greedy_tokens
            )
            size = sum(f.stat().st_size for f in folder.glob("model.onnx*"))
            rows[name] = {
                "exact_match": round(m["json_exact_match"], 3),
                "perplexity": round(m["perplexity"], 4),
                "MB": round(size / 1e6, 1),
                "of_fp32": round(size / fp32, 3),
            }
            print(name, rows[name], flush=True)
        if args.speed:
            models = [describe_onnx(Path(tmp) / name / "model.onnx", name) for name in rows]
            if args.smoke:
                cfg = BenchmarkConfig(threads=1, sequence_lengths=[16], new_tokens=8, warmup=1, runs=1, rounds=1)
            else:
                cfg = BenchmarkConfig(threads=2, sequence_lengths=[64], new_tokens=64, warmup=1, runs=5)
            size = sum(f.stat().st_size for f in merged.glob("*.safetensors"))
            base = MergedModel(path=merged, size_bytes=size)
            print(format_benchmark(bench_decode(models, cfg, None, base, p.task.load_model, print)))
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
