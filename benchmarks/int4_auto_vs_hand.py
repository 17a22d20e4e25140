"""The int4 layout quantize.auto kept against the layout the README found by hand, in one interleaved run.

Usage: python benchmarks/int4_auto_vs_hand.py RUN_DIR RECIPE [--rounds 7] [--threads 2] [--prompt 64] [--new 64]
       python benchmarks/int4_auto_vs_hand.py RUN_DIR RECIPE --smoke

RUN_DIR is a finished build of RECIPE (causal-lm, `quantize.auto: true`). The hand-found layout (README, "Why
int4-aware training": lm_head and the builder's sensitive 'mixed_layers' in int8, blocks of 32, accuracy level 4,
an fp16 embedding table of its own) is built from RUN_DIR/merge/model with the same code quantize.auto builds its
layouts with. Both are scored on RECIPE's held-out split (greedy JSON exact match and perplexity, as verify scores
them) and timed in interleaved rounds, each model in a fresh process per round, the same random prompt: decode
tokens/s, prefill ms, and the ratio auto/hand within each round.

--smoke: the same path on a tiny run in seconds (CI, tests/test_benchmarks.py): 1 thread, a 16-token prompt,
8 new tokens, 1 round. Its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

HAND = {"block": 32, "head": "int8", "mixed": True}  # the README's hand-found layout, as an int4_auto.Layout


def main() -> None:
    from edgetune.core.recipe import BenchmarkConfig, load_recipe
    from edgetune.engines.bench.run import time_decoders
    from edgetune.engines.builder import MODEL_NAME, build_genai, half_embeddings
    from edgetune.engines.int4_auto import Layout, builder_options
    from edgetune.pipeline import prepare
    from edgetune.runtime.genai import GenaiLM

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("recipe", type=Path)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    if args.smoke:
        args.rounds, args.threads, args.prompt, args.new = 1, 1, 16, 8
    recipe = load_recipe(args.recipe)
    p = prepare(recipe)
    merged = args.run_dir / "merge" / "model"
    tok = p.task.load_tokenizer(merged)
    auto = args.run_dir / "quantize" / "int4"
    record = json.loads((args.run_dir / "manifest.json").read_text())["stages"]["quantize"]["record"]
    chosen = next((m["notes"]["auto"]["chosen"] for m in record["models"] if m["notes"].get("auto")), "(not auto)")
    with tempfile.TemporaryDirectory() as tmp:
        hand = Path(tmp) / "hand"
        hand.mkdir()
        extra, target = builder_options(Layout(**HAND), {}, [])
        build_genai(merged, hand, "int4", extra, target=target)
        half_embeddings(hand / MODEL_NAME)
        models = {f"auto ({chosen})": auto, "hand (README)": hand}
        figures = {}
        for name, folder in models.items():
            _, m = p.task.evaluate(
                GenaiLM(folder, args.threads),
                tok,
                p.data.eval,
                recipe.benchmark.batch_size,
                recipe.training.max_length,
                recipe.verify.greedy_tokens,
            )
            size = sum(f.stat().st_size for f in folder.glob("model.onnx*"))
            figures[name] = {
                "exact_match": m.get("json_exact_match"),
                "perplexity": m["perplexity"],
                "MB": size / 1e6,
            }
            print(name, {k: v for k, v in figures[name].items()}, flush=True)
        cfg = BenchmarkConfig(
            threads=args.threads,
            sequence_lengths=[args.prompt],
            new_tokens=args.new,
            warmup=1,
            runs=2 * args.rounds,
            rounds=args.rounds,
        )
        vocab = json.loads((merged / "config.json").read_text())["vocab_size"]
        rows = time_decoders(
            [(n, f / MODEL_NAME, int(figures[n]["MB"] * 1e6)) for n, f in models.items()], cfg, vocab, print
        )
    a, h = rows
    per_round = [(1000 / x) / (1000 / y) for x, y in zip(a["round_p50_ms"], h["round_p50_ms"])]
    print(
        f"\n{'model':40s} {'exact match':>11s} {'perplexity':>10s} {'MB':>6s} {'decode tok/s':>12s} {'prefill ms':>10s}"
    )
    for r in rows:
        f = figures[r["model"]]
        em = "-" if f["exact_match"] is None else f"{f['exact_match']:.3f}"
        print(
            f"{r['model']:40s} {em:>11s} {f['perplexity']:10.4f} {f['MB']:6.1f} "
            f"{r['decode_tokens_per_s']:12.1f} {r['ttft_ms']:10.1f}"
        )
    print("decode auto/hand per round: " + " ".join(f"{x:.2f}" for x in per_round))
    print(
        json.dumps(
            {
                r["model"]: {
                    **figures[r["model"]],
                    "decode_tokens_per_s": r["decode_tokens_per_s"],
                    "prefill_ms": r["ttft_ms"],
                    "round_decode_ratio": per_round,
                }
                for r in rows
            }
        )
    )


if __name__ == "__main__":
    main()
