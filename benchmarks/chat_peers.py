"""edgetune's int4 chat model side by side with a plain onnxruntime-genai builder export and llama.cpp.

Usage: python benchmarks/chat_peers.py RUN_DIR [--llama-python PY] [--threads 2] [--prompt 64] [--new 64]
                                       [--rounds 5] [--runs 3] [--also NAME:opt=val,...] [--no-exact]
                                       [--no-llama] [--work DIR]
       python benchmarks/chat_peers.py RUN_DIR --smoke [--no-llama] [--work DIR]

RUN_DIR is a finished `edgetune build` of a causal-lm recipe with int4 in quantize.precisions. Compared, from
RUN_DIR/merge/model (the merged fine-tuned model):
- edgetune-int4: RUN_DIR/quantize/int4, as the build made it;
- builder-int4: `python -m onnxruntime_genai.models.builder -p int4 -e cpu`, no extra options (the installed
  builder, so the same version as edgetune's);
- llama.cpp-Q4_0: convert_hf_to_gguf.py (f16), then llama.cpp's quantizer to Q4_0 (its defaults);
- with --also NAME:opt=val,...: edgetune's int4 layout (its recipe options and edgetune's builder options)
  with those builder options changed, e.g. `--also unpruned:prune_lm_head=false` (one lever at a time).
The exports are kept in --work (default RUN_DIR/chat-peers/) for the next run. llama.cpp comes from llama-cpp-python, built by
benchmarks/setup_llama_cpp.sh into a venv of its own (not edgetune's dependencies, not in CI).

Timing: --rounds interleaved rounds, each model in a fresh process per round, the order rotated each round;
in each, 1 untimed generation then --runs timed ones of exactly --new tokens after the same --prompt random
token ids, greedy. Prefill: the time to the first token (the whole prompt in one call, then the first token
chosen); decode tokens/s excludes the first token. A round's figure is the median of its runs; the table
shows the median over rounds, the spread (min-max over rounds), and in how many rounds each model's prefill
was at or below llama.cpp's.
Accuracy (unless --no-exact): greedy generations on the recipe's held-out split, scored as verify scores them
(JSON exact match for JSON responses), with the prompts tokenized once by the run's tokenizer for every model.

--smoke: the same path on a tiny run in seconds (CI, tests/test_benchmarks.py): SMOKE's settings and the first 4
held-out prompts. Its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from statistics import median

SMOKE = {"threads": 1, "prompt": 16, "new": 8, "rounds": 2, "runs": 1, "examples": 4}
HERE = Path(__file__).resolve().parent
LLAMA_PY = (
    Path(os.environ.get("EDGETUNE_CACHE", Path.home() / ".cache" / "edgetune"))
    / "llama-cpp"
    / "venv"
    / "bin"
    / "python"
)


def genai_worker(job: dict) -> dict:
    """`time` and `greedy` for an onnxruntime-genai folder, in this (fresh) process: llama_cpp_worker.py's protocol."""
    import time

    from edgetune.runner import genai_stamps, peak_rss_mb
    from edgetune.runtime.genai import GenaiLM

    t0 = time.perf_counter()
    lm = GenaiLM(Path(job["model"]), job["threads"])
    load_s = time.perf_counter() - t0
    if job["cmd"] == "greedy":
        eos = set(job["eos"])
        return {"generations": [lm.greedy(p, b, eos) for p, b in zip(job["prompts"], job["budgets"])]}
    for _ in range(job["warmup"]):
        genai_stamps(lm.og, lm.model, job["prompt"], job["new"])
    runs = []
    for _ in range(job["runs"]):
        st = genai_stamps(lm.og, lm.model, job["prompt"], job["new"])
        runs.append({"prefill_ms": (st[1] - st[0]) * 1000, "decode_tokens_per_s": (len(st) - 2) / (st[-1] - st[1])})
    return {"load_s": load_s, "peak_rss_mb": peak_rss_mb(), "runs": runs}


def run_worker(kind: str, job: dict, llama_py: Path) -> dict:
    """One job in a fresh process: llama.cpp's in its own venv, genai's in this Python."""
    if kind == "llama":
        cmd = [str(llama_py), str(HERE / "llama_cpp_worker.py"), job["cmd"]]
    else:
        cmd = [sys.executable, __file__, "--worker"]
    done = subprocess.run(cmd, input=json.dumps(job), capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{kind} worker failed on {job['model']}: {done.stderr.strip()[-800:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def folder_size(path: Path) -> int:
    files = [path] if path.is_file() else [f for f in path.iterdir() if f.name.startswith("model.onnx")]
    return sum(f.stat().st_size for f in files)


def gguf_q4_0(merged: Path, work: Path, llama_py: Path) -> Path:
    """The merged model as llama.cpp's Q4_0 GGUF: f16 from convert_hf_to_gguf.py, then llama.cpp's quantizer."""
    out = work / "model-Q4_0.gguf"
    if out.exists():
        return out
    src = llama_py.parent.parent.parent / "src" / "vendor" / "llama.cpp"
    f16 = work / "model-f16.gguf"
    env = {**os.environ, "PYTHONPATH": str(src / "gguf-py")}
    cmd = [str(llama_py), str(src / "convert_hf_to_gguf.py"), str(merged), "--outtype", "f16", "--outfile", str(f16)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"convert_hf_to_gguf.py failed: {done.stderr.strip()[-800:]}")
    tmp = out.with_suffix(".tmp")
    cmd = [str(llama_py), str(HERE / "llama_cpp_worker.py"), "quantize", str(f16), str(tmp), "Q4_0"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"llama.cpp's quantizer failed: {(done.stderr or done.stdout).strip()[-800:]}")
    tmp.rename(out)
    f16.unlink()
    return out


def builder_export(merged: Path, folder: Path, extra: dict, plain: bool) -> Path:
    """An int4 builder export of `merged` into `folder` (kept: reused by the next run)."""
    import shutil

    from edgetune.engines.builder import build_genai

    if not (folder / "model.onnx").exists():
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        build_genai(merged, tmp, "int4", extra, plain=plain)
        tmp.rename(folder)
    return folder


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return "unknown CPU"
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8") if f in flags]
    name = fields.get("Model name", "?").strip()
    return f"{name} (family {fields.get('CPU family', '?').strip()} model {fields.get('Model', '?').strip()}; {' '.join(isa)})"


def edgetune_int4_options(run_dir: Path) -> dict:
    """The builder options edgetune's int4 export used (its record in the manifest)."""
    manifest = json.loads((run_dir / "manifest.json").read_text())
    for model in manifest["stages"]["quantize"]["record"]["models"]:
        if model["precision"] == "int4":
            notes = dict(model.get("notes", {}))
            return {k: v for k, v in notes.items() if k not in ("quantizer", "embeddings")}
    sys.exit(f"{run_dir}: no int4 model in its quantize stage")


def exact_match(run_dir: Path, models: dict, llama_py: Path, threads: int, examples: int | None) -> dict:
    from edgetune.api import recipe_and_run
    from edgetune.pipeline import prepare
    from edgetune.runtime.decoding import end_ids
    from edgetune.tasks.causal_lm import IGNORE, json_exact_match

    recipe, _ = recipe_and_run(run_dir, None)
    p = prepare(recipe)
    tok = p.task.load_tokenizer(run_dir / "merge" / "model")
    examples, prompts, budgets = p.data.eval[:examples], [], []
    for ex in examples:
        ids, labels = ex["ids"][: recipe.training.max_length], ex["labels"][: recipe.training.max_length]
        start = next(i for i, lab in enumerate(labels) if lab != IGNORE)
        prompts.append(ids[:start])
        budgets.append(max(recipe.verify.greedy_tokens, len(ids) - start + 8))
    eos = sorted(end_ids(tok))
    out = {}
    for name, (kind, path) in models.items():
        job = {"cmd": "greedy", "model": str(path), "threads": threads, "prompts": prompts, "budgets": budgets}
        gens = run_worker(kind, {**job, "eos": eos}, llama_py)["generations"]
        texts = [tok.decode([t for t in g if t not in eos], skip_special_tokens=True) for g in gens]
        score = json_exact_match(texts, examples) if all(ex.get("score_json") for ex in examples) else None
        out[name] = score
        print(f"exact match: {name}: {score}", flush=True)
    return out


def main() -> None:
    if sys.argv[1:] == ["--worker"]:
        print(json.dumps(genai_worker(json.load(sys.stdin))))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--llama-python", type=Path, default=LLAMA_PY, help="default: setup_llama_cpp.sh's venv")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=3, help="timed runs per model per round")
    ap.add_argument("--also", action="append", default=[], help="NAME:opt=val,... (edgetune's layout, changed)")
    ap.add_argument("--no-exact", action="store_true")
    ap.add_argument("--no-llama", action="store_true", help="leave llama.cpp out")
    ap.add_argument("--work", type=Path, default=None, help="where exports are kept [default: RUN_DIR/chat-peers]")
    ap.add_argument("--examples", type=int, default=None, help="score the first N held-out prompts only")
    ap.add_argument("--smoke", action="store_true", help="tiny settings, for CI: " + str(SMOKE))
    args = ap.parse_args()
    if args.smoke:
        vars(args).update(SMOKE)
    run_dir, merged = args.run_dir, args.run_dir / "merge" / "model"
    work = args.work or run_dir / "chat-peers"
    work.mkdir(parents=True, exist_ok=True)
    models: dict[str, tuple[str, Path]] = {"edgetune-int4": ("genai", run_dir / "quantize" / "int4")}
    options = edgetune_int4_options(run_dir)
    for spec in args.also:
        name, _, opts = spec.partition(":")
        changed = dict(kv.split("=", 1) for kv in opts.split(",") if kv)
        from edgetune.engines.builder import BUILD_OPTIONS

        layout = {**BUILD_OPTIONS, **options, **changed}
        models[f"edgetune-int4-{name}"] = ("genai", builder_export(merged, work / f"int4-{name}", layout, plain=True))
    models["builder-int4"] = ("genai", builder_export(merged, work / "builder-int4", {}, plain=True))
    if not args.no_llama:
        if not args.llama_python.exists():
            sys.exit(f"{args.llama_python}: no llama-cpp-python there; run benchmarks/setup_llama_cpp.sh")
        models["llama.cpp-Q4_0"] = ("llama", gguf_q4_0(merged, work, args.llama_python))
    vocab = json.loads((merged / "config.json").read_text())["vocab_size"]
    prompt = random.Random(args.prompt).sample(range(100, vocab - 1), args.prompt)
    job = {"cmd": "time", "threads": args.threads, "prompt": prompt, "new": args.new, "warmup": 1, "runs": args.runs}
    rounds: dict[str, list[dict]] = {name: [] for name in models}
    order = list(models)
    for r in range(args.rounds):
        for name in order[r % len(order) :] + order[: r % len(order)]:
            kind, path = models[name]
            res = run_worker(kind, {**job, "model": str(path)}, args.llama_python)
            row = {
                "prefill_ms": median(x["prefill_ms"] for x in res["runs"]),
                "decode_tokens_per_s": median(x["decode_tokens_per_s"] for x in res["runs"]),
                "peak_rss_mb": res["peak_rss_mb"],
            }
            rounds[name].append(row)
            print(
                f"round {r + 1}/{args.rounds} {name}: {json.dumps({k: round(v, 1) for k, v in row.items()})}",
                flush=True,
            )
    exact = {} if args.no_exact else exact_match(run_dir, models, args.llama_python, args.threads, args.examples)
    base = "builder-int4"
    ref = rounds.get("llama.cpp-Q4_0")
    table = {}
    for name, rows in rounds.items():
        pre = [x["prefill_ms"] for x in rows]
        dec = [x["decode_tokens_per_s"] for x in rows]
        table[name] = {
            "prefill_ms": round(median(pre), 1),
            "prefill_spread": [round(min(pre), 1), round(max(pre), 1)],
            "decode_tokens_per_s": round(median(dec), 1),
            "decode_spread": [round(min(dec), 1), round(max(dec), 1)],
            "decode_vs_builder": round(median(dec) / median(x["decode_tokens_per_s"] for x in rounds[base]), 3),
            "rounds_prefill_le_llama_cpp": sum(a["prefill_ms"] <= b["prefill_ms"] for a, b in zip(rows, ref))
            if ref
            else None,
            "MB": round(folder_size(models[name][1]) / 1e6, 1),
            "peak_rss_mb": round(median(x["peak_rss_mb"] for x in rows)),
            "exact_match": exact.get(name),
        }
    print(
        f"\n{cpu_name()}: {args.rounds} rounds, {args.threads} threads, {args.prompt}-token prompt, {args.new} new tokens"
    )
    print(
        "| model | prefill ms (min-max) | decode tok/s (min-max) | decode vs builder | prefill <= llama.cpp | MB | RSS MB | exact match |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, t in table.items():
        print(
            f"| {name} | {t['prefill_ms']} ({t['prefill_spread'][0]}-{t['prefill_spread'][1]}) "
            f"| {t['decode_tokens_per_s']} ({t['decode_spread'][0]}-{t['decode_spread'][1]}) "
            f"| {t['decode_vs_builder']}x | {t['rounds_prefill_le_llama_cpp']}/{args.rounds} | {t['MB']} "
            f"| {t['peak_rss_mb']} | {t['exact_match']} |"
        )
    (work / "results.json").write_text(json.dumps({"rounds": rounds, "table": table}, indent=1))
    print(json.dumps(table))


if __name__ == "__main__":
    main()
