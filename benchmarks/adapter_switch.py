"""What shipping one int4 base plus LoRA adapters costs against one merged int4 model per task.

Usage: python benchmarks/adapter_switch.py RUN_DIR [--threads 2] [--rounds 5] [--runs 3] [--work DIR] [--smoke]

RUN_DIR is a finished `edgetune build` of a causal-lm recipe with int4 in quantize.precisions (LoRA). Builds into
--work (default RUN_DIR/adapter-switch/, kept for the next run): the base model the adapter was trained on
(RUN_DIR/base for a GGUF source) through the same builder with the run's int4 options, a float LoRA branch at every
projection the run's adapter trains (edgetune/engines/adapters.py), and that adapter as an .onnx_adapter file.
Prints:
- size on disk for 1, 2 and 4 tasks: N merged int4 folders against the base plus N adapter files (the run's
  adapter stands for each task: adapters of one rank and targets have one size);
- memory: one process's RSS after loading the base, then after loading the adapter under 4 names;
- switch time: making a generator with another adapter active, and its first prefill, against the same with the
  adapter already active before (median of 20 switches between 2 loaded adapters);
- speed: prefill ms and decode tokens/s of the merged int4 model and of base + adapter, in --rounds interleaved
  rounds, each in a fresh process (64-token prompt, 64 new tokens, as benchmarks/chat_peers.py);
- accuracy: JSON exact match and perplexity of base + adapter on the recipe's held-out split, beside verify's
  figures for the merged int4 model.

--smoke: the same path on a tiny run in seconds (CI, tests/test_benchmarks.py). Its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

from chat_peers import edgetune_int4_options, folder_size  # benchmarks/chat_peers.py, beside this script

SMOKE = {"threads": 1, "rounds": 1, "runs": 1, "prompt": 16, "new": 8, "switches": 2, "examples": 2}


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def worker(job: dict) -> dict:
    """In a fresh process: time one model (merged, or base with `adapter` active), or measure memory/switching."""
    from edgetune.runner import genai_stamps
    from edgetune.runtime.genai import GenaiLM

    before = rss_mb()
    lm = GenaiLM(Path(job["model"]), job["threads"])
    loaded = rss_mb()
    if job["cmd"] == "memory":
        steps = []
        for i in range(4):
            lm.load_adapter(f"task{i}", Path(job["adapter"]))
            lm.use_adapter(f"task{i}")
            lm.logits(job["prompt"][:8])  # touch its weights
            steps.append(rss_mb())
        # switching: a generator per request, as the app makes one; prefill of the prompt with the adapter on
        switch, same = [], []
        for i in range(job["switches"]):
            for name, out in ((f"task{i % 2}", switch), (f"task{i % 2}", same)):
                lm.use_adapter(name)
                t = time.perf_counter()
                lm.logits(job["prompt"], len(job["prompt"]) - 1)
                out.append((time.perf_counter() - t) * 1000)
        return {"before": before, "base": loaded, "adapters": steps, "switch_ms": switch, "same_ms": same}
    if job.get("adapter"):
        lm.load_adapter("task", Path(job["adapter"]))
        lm.use_adapter("task")
    runs = []
    for i in range(job["runs"] + 1):
        st = genai_stamps(lm.og, lm.model, job["prompt"], job["new"], lm.adapters, lm.active)
        if i:  # the first is a warmup
            runs.append({"prefill_ms": (st[1] - st[0]) * 1000, "decode": (len(st) - 2) / (st[-1] - st[1])})
    return {"runs": runs}


def call(job: dict) -> dict:
    done = subprocess.run([sys.executable, __file__, "--worker"], input=json.dumps(job), capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"worker failed: {done.stderr.strip()[-800:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def build_base(run_dir: Path, work: Path) -> tuple[Path, Path]:
    """The base with LoRA inputs, and the run's adapter as an .onnx_adapter (both kept in `work`)."""
    from transformers import AutoConfig

    from edgetune.engines.adapters import adapter_values, add_lora_inputs, peft_state, write_adapter
    from edgetune.engines.builder import build_genai

    folder, adapter = work / "base-int4", work / "task.onnx_adapter"
    if (folder / "model.onnx").exists() and adapter.exists():
        return folder, adapter
    options = edgetune_int4_options(run_dir)
    built = work / "built"
    shutil.rmtree(built, ignore_errors=True)
    built.mkdir(parents=True)
    source = base_model(run_dir)
    build_genai(source, built, "int4", options)
    state, scaling = peft_state(run_dir / "finetune" / "adapter")
    cfg = AutoConfig.from_pretrained(source)
    linears = _linears(cfg)
    slots = add_lora_inputs(built / "model.onnx", folder, linears, set(state))
    for f in built.iterdir():
        if not f.name.startswith("model.onnx"):
            shutil.copy2(f, folder / f.name)
    for f in (run_dir / "quantize" / "int4").iterdir():  # the merged build's config and tokenizer (end tokens)
        if not f.name.startswith("model.onnx"):
            shutil.copy2(f, folder / f.name)
    shutil.rmtree(built)
    write_adapter(adapter_values(slots, state, scaling), adapter)
    return folder, adapter


def base_model(run_dir: Path) -> Path:
    """The transformers folder the run's adapter was trained on (RUN_DIR/base for a GGUF source)."""
    adapter = run_dir / "finetune" / "adapter"
    path = Path(json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"])
    if not (path / "config.json").exists():
        sys.exit(f"{adapter}: its base model {path} is not a local folder")
    return path


def _linears(cfg) -> dict[str, tuple[int, int]]:  # noqa: ANN001
    """A LLaMA-style decoder's projections, {module: (in, out)}, from its config (no weights loaded)."""
    h, inter = cfg.hidden_size, cfg.intermediate_size
    head = getattr(cfg, "head_dim", None) or h // cfg.num_attention_heads
    q, kv = cfg.num_attention_heads * head, cfg.num_key_value_heads * head
    shapes = {
        "self_attn.q_proj": (h, q),
        "self_attn.k_proj": (h, kv),
        "self_attn.v_proj": (h, kv),
        "self_attn.o_proj": (q, h),
        "mlp.gate_proj": (h, inter),
        "mlp.up_proj": (h, inter),
        "mlp.down_proj": (inter, h),
    }
    return {f"model.layers.{i}.{k}": v for i in range(cfg.num_hidden_layers) for k, v in shapes.items()}


def main() -> None:
    if sys.argv[1:] == ["--worker"]:
        print(json.dumps(worker(json.load(sys.stdin))))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--switches", type=int, default=20)
    ap.add_argument("--examples", type=int, default=None, help="score the first N held-out prompts only")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--smoke", action="store_true", help="tiny settings, for CI: " + str(SMOKE))
    args = ap.parse_args()
    if args.smoke:
        vars(args).update(SMOKE)
    run_dir = args.run_dir
    work = args.work or run_dir / "adapter-switch"
    work.mkdir(parents=True, exist_ok=True)
    base, adapter = build_base(run_dir, work)
    merged = run_dir / "quantize" / "int4"
    sizes = {
        n: {
            "merged_MB": round(n * folder_size(merged) / 1e6, 1),
            "base_plus_adapters_MB": round((folder_size(base) + n * folder_size(adapter)) / 1e6, 1),
        }
        for n in (1, 2, 4)
    }
    print(
        f"adapter file: {folder_size(adapter) / 1e6:.2f} MB; base: {folder_size(base) / 1e6:.1f} MB; merged int4: {folder_size(merged) / 1e6:.1f} MB"
    )
    for n, s in sizes.items():
        print(f"{n} task(s): merged {s['merged_MB']} MB, base + adapters {s['base_plus_adapters_MB']} MB")
    vocab = json.loads((run_dir / "merge" / "model" / "config.json").read_text())["vocab_size"]
    prompt = random.Random(args.prompt).sample(range(100, vocab - 1), args.prompt)
    mem = call(
        {
            "cmd": "memory",
            "model": str(base),
            "adapter": str(adapter),
            "threads": args.threads,
            "prompt": prompt,
            "switches": args.switches,
        }
    )
    growth = [b - a for a, b in zip([mem["base"], *mem["adapters"]], mem["adapters"])]
    print(f"RSS: base loaded {mem['base']:.0f} MB; growth per adapter load: {', '.join(f'{g:.1f}' for g in growth)} MB")
    print(
        f"switch: prefill after switching {median(mem['switch_ms']):.1f} ms vs {median(mem['same_ms']):.1f} ms on the same adapter"
    )
    job = {"cmd": "time", "threads": args.threads, "prompt": prompt, "new": args.new, "runs": args.runs}
    models = {"merged-int4": {"model": str(merged)}, "base+adapter": {"model": str(base), "adapter": str(adapter)}}
    rows: dict[str, list] = {k: [] for k in models}
    for r in range(args.rounds):
        for name in list(models)[r % 2 :] + list(models)[: r % 2]:
            res = call({**job, **models[name]})
            rows[name].append({k: median(x[k] for x in res["runs"]) for k in ("prefill_ms", "decode")})
    speed = {
        name: {
            "prefill_ms": round(median(x["prefill_ms"] for x in v), 1),
            "decode_tokens_per_s": round(median(x["decode"] for x in v), 1),
        }
        for name, v in rows.items()
    }
    for name, s in speed.items():
        print(f"{name}: prefill {s['prefill_ms']} ms, decode {s['decode_tokens_per_s']} tok/s ({args.rounds} rounds)")
    accuracy = score(run_dir, base, adapter, args.threads, args.examples)
    print(f"accuracy, base + adapter: {accuracy}")
    result = {
        "sizes": sizes,
        "memory": mem,
        "growth_mb": growth,
        "adapter_mb": folder_size(adapter) / 1e6,
        "speed": speed,
        "accuracy": accuracy,
    }
    (work / "results.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({"sizes": sizes, "speed": speed, "accuracy": accuracy}))


def score(run_dir: Path, base: Path, adapter: Path, threads: int, examples: int | None) -> dict:
    """Held-out JSON exact match and perplexity of base + adapter, beside verify's figures for the merged int4."""
    from edgetune.api import recipe_and_run
    from edgetune.pipeline import prepare
    from edgetune.runtime.genai import GenaiLM

    recipe, _ = recipe_and_run(run_dir, None)
    p = prepare(recipe)
    tok = p.task.load_tokenizer(run_dir / "merge" / "model")
    lm = GenaiLM(base, threads)
    lm.load_adapter("task", adapter)
    lm.use_adapter("task")
    data = p.data.eval[:examples]
    _, m = p.task.evaluate(lm, tok, data, 32, recipe.training.max_length, recipe.verify.greedy_tokens)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    merged = manifest["stages"].get("verify", {}).get("record", {}).get("models", {}).get("onnx_int4", {})
    return {
        "base_plus_adapter": {k: m.get(k) for k in ("json_exact_match", "perplexity")},
        "merged_int4_verify": {k: merged.get(k) for k in ("json_exact_match", "perplexity")},
        "examples": len(data),
    }


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
