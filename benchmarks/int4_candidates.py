"""Held-out JSON exact match, size and decode speed of int4 variants of one run's merged model.

Usage: python benchmarks/int4_candidates.py RUN_DIR RECIPE [--only NAME ...] [--speed]

Each candidate is an onnxruntime-genai model-builder int4 export of RUN_DIR/merge/model with some extra
options (see CANDIDATES), optionally followed by edgetune's fp16 embedding table. For each it prints exact
match on the recipe's eval split (greedy, as verify measures it), perplexity and file size; with --speed,
edgetune's LLM benchmark of PyTorch eager fp32 and every candidate in one run (each in a fresh process,
2 threads, 64-token prompt, 64 new tokens, 5 runs), with decode ratios to PyTorch.
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


def main() -> None:
    from edgetune.core.artifacts import MergedModel
    from edgetune.core.recipe import BenchmarkConfig, load_recipe
    from edgetune.engines.builder import build_genai, half_embeddings
    from edgetune.engines.onnxfile import describe_onnx
    from edgetune.pipeline import prepare
    from edgetune.stages.bench import _bench_llm, format_benchmark
    from edgetune.runtime.genai import GenaiLM

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("recipe", type=Path)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--speed", action="store_true")
    args = ap.parse_args()
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
            if fp16:
                half_embeddings(folder / "model.onnx")
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
            cfg = BenchmarkConfig(threads=2, sequence_lengths=[64], new_tokens=64, warmup=1, runs=5)
            size = sum(f.stat().st_size for f in merged.glob("*.safetensors"))
            print(format_benchmark(_bench_llm(models, cfg, None, MergedModel(path=merged, size_bytes=size), print)))
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
