"""edgetune's int8 build against the peers' builds of the same merged model, timed in one run (issue 13, item 4).

    python benchmarks/peers.py [RUN_DIR] [--data recipes/data/intents/test.jsonl] [--work /tmp/edgetune-peers]
        [--threads 2] [--seq 16 32 128] [--rounds 3] [--warmup 20] [--runs 200] [--eval-batch 1]
        [--out WORK/peers.json] [--smoke]

RUN_DIR (default runs/intent-minilm) is a finished `edgetune build` of a classification recipe: its merged model
(merge/model) is the input of every build, its int8 ONNX (quantize/model_int8.onnx) is edgetune's. Built into
--work from that merged model:
  optimum: `optimum-cli export onnx --task text-classification`, then `optimum-cli onnxruntime quantize` with the
    preset of this CPU (--avx512_vnni, --avx512, --avx2 or --arm64, from /proc/cpuinfo);
  Olive (olive-ai, only where it is installed; skipped with a note otherwise): `olive run` of OnnxConversion,
    OrtTransformersOptimization and OnnxDynamicQuantization, Olive's defaults otherwise;
and, in-process, PyTorch eager fp32 (the baseline) and PyTorch dynamic int8 (quantize_dynamic on nn.Linear).

Held-out accuracy: every build on --data (jsonl with text, label; labels in the merged model's id2label order),
the merged model's tokenizer, max_length 64, at --eval-batch (default 1: the batch every build is timed and
deployed at; dynamic int8 quantizes a call's activations with one scale, so a batch of padded texts changes each
text's int8 result).

Latency (issue 13, item 3's method): batch 1, --threads intra-op threads, the same token ids for every model
(random ids from the vocabulary seeded by the length, attention mask ones, token_type_ids zeros for the models
that take them). --rounds interleaved rounds; each round runs every build once in a fresh process, the order
rotated by one each round; each process does --warmup (20) warmup + --runs timed runs per sequence length and
returns its p50. Reported per build and length: the median of the round p50s, its spread ((max - min) / median of the round
p50s), the ratio to PyTorch eager fp32 and to the best peer (the faster of the optimum and Olive builds). Around
the timing: edgetune's noise probe (edgetune/runner.py, as `edgetune bench` uses it): the 1-minute load average
before and after, the CPU time other processes took, the hypervisor's steal; one warning line with its reasons
when it finds the machine busy (its limits: a row's spread over 20%, other processes over 0.3 cores).

--compare RUN_DIR2 ...: more finished builds of the same recipe whose int8 ONNX is timed beside RUN_DIR's, each
labelled with the exporter and transformers version its manifest records (issue 21: the default recipe built on
each library line, both timed from one venv); --no-peers leaves out the optimum-cli and Olive builds.

Prints a markdown table (for the README) and writes every figure to --out.

--smoke: the same path on a tiny run in about a minute (CI runs it, tests/test_benchmarks.py): every build
(Olive where installed; its skip is printed as a note otherwise), the held-out accuracy, and the timing at
1 thread, seq 8, 1 round of 1 warmup + 3 runs. Its figures mean nothing.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from edgetune.runner import MIN_SPREAD_MS, Probe, spread

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "pytorch_fp32"
PEERS = ("optimum", "olive")
WARMUP = 20
SMOKE = {"threads": 1, "seq": [8], "rounds": 1, "warmup": 1, "runs": 3}


# ---------------------------------------------------------------- machine


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def quantize_preset(flags: set[str]) -> str | None:
    """optimum-cli's `onnxruntime quantize` preset for this CPU."""
    if platform.machine().lower() in ("aarch64", "arm64"):
        return "arm64"
    for flag, preset in (("avx512_vnni", "avx512_vnni"), ("avx512f", "avx512"), ("avx2", "avx2")):
        if flag in flags:
            return preset
    return None


def machine_info(threads: int) -> dict:
    info: dict[str, Any] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        info["cpu"] = fields.get("Model name", info["cpu"]).strip()
        info["cores"] = int(fields.get("CPU(s)", info["cores"]))
        info["hypervisor"] = fields.get("Hypervisor vendor", "").strip() or None
    except (OSError, subprocess.CalledProcessError, ValueError):
        pass
    flags = cpu_flags()
    info["vnni"] = sorted(f for f in flags if "vnni" in f)
    info["amx"] = sorted(f for f in flags if f.startswith("amx"))
    info["threads"] = threads
    info["platform"] = platform.platform()
    info["python"] = platform.python_version()
    for dist in ("onnxruntime", "torch", "transformers", "optimum", "optimum-onnx", "olive-ai"):
        try:
            info[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            info[dist] = None
    return info


def machine_line(m: dict) -> str:
    feats = ", ".join(m["vnni"] + m["amx"]) or "no VNNI/AMX"
    return (
        f"machine: {m['cpu']}, {m['cores']} cores ({feats}), {m['threads']} threads | "
        f"onnxruntime {m['onnxruntime']}, torch {m['torch']}, optimum-onnx {m['optimum-onnx']}, "
        f"olive-ai {m['olive-ai'] or 'not installed'}"
    )


# ---------------------------------------------------------------- builds


def run_step(cmd: list[str], log: Path, env: dict | None = None) -> bool:
    """Run one build command, its output to `log`; on failure print the command and the log's tail."""
    shown = " ".join(str(c) for c in cmd)
    print(f"  $ {shown}", flush=True)
    with log.open("a") as f:
        f.write(f"$ {shown}\n")
        f.flush()
        rc = subprocess.run([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    if rc != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        print(f"  FAILED (exit {rc}): {shown}\n  --- last lines of {log} ---\n{tail}\n  ---", flush=True)
    return rc == 0


def build_optimum(merged: Path, work: Path, preset: str | None, reuse: bool) -> dict:
    out = work / "optimum"
    fp32, int8 = out / "fp32", out / f"int8_{preset}"
    model = int8 / "model_quantized.onnx"
    cli = Path(sys.executable).parent / "optimum-cli"
    cmds = [
        [cli if cli.exists() else "optimum-cli", "export", "onnx", "--model", merged]
        + ["--task", "text-classification", fp32],
        [cli if cli.exists() else "optimum-cli", "onnxruntime", "quantize", "--onnx_model", fp32]
        + [f"--{preset}", "-o", int8],
    ]
    rec = {"commands": [" ".join(map(str, c)) for c in cmds], "preset": preset, "path": str(model)}
    if importlib.util.find_spec("optimum") is None or importlib.util.find_spec("optimum.exporters.onnx") is None:
        return {"skipped": "optimum-onnx is not installed (it installs on the transformers 4.57 line)"}
    if preset is None:
        return {**rec, "error": "no optimum-cli quantize preset for this CPU (no avx512/avx2/arm64)"}
    if reuse and model.exists():
        return {**rec, "build_seconds": None, "reused": True}
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    t = time.perf_counter()
    for cmd in cmds:
        if not run_step(cmd, out / "build.log"):
            return {**rec, "error": f"`{' '.join(map(str, cmd))}` failed, see {out / 'build.log'}"}
    if not model.exists():
        return {**rec, "error": f"optimum-cli wrote no {model}"}
    return {**rec, "build_seconds": round(time.perf_counter() - t, 1)}


def olive_config(merged: Path, out: Path) -> dict:
    """Olive workflow: conversion, transformer optimization, dynamic int8 (Olive's defaults for each pass)."""
    cpu = {"device": "cpu", "execution_providers": ["CPUExecutionProvider"]}
    return {
        "input_model": {"type": "HfModel", "model_path": str(merged), "task": "text-classification"},
        "systems": {"local_system": {"type": "LocalSystem", "accelerators": [cpu]}},
        "passes": {
            "conversion": {"type": "OnnxConversion", "target_opset": 17},
            "transformer_optimization": {"type": "OrtTransformersOptimization", "model_type": "bert"},
            "dynamic_int8": {"type": "OnnxDynamicQuantization"},
        },
        "host": "local_system",
        "target": "local_system",
        "cache_dir": str(out / "cache"),
        "output_dir": str(out / "output"),
    }


def build_olive(merged: Path, work: Path, reuse: bool) -> dict:
    out = work / "olive"
    try:
        importlib.metadata.version("olive-ai")
        found_olive = importlib.util.find_spec("olive") is not None
    except importlib.metadata.PackageNotFoundError:
        found_olive = False
    if not found_olive:
        return {"skipped": "olive-ai is not installed (pip install olive-ai==0.13.0 to include it)"}
    cfg_path = out / "olive.json"
    cmd = [sys.executable, "-m", "olive", "run", "--config", cfg_path, "--disable_telemetry"]
    rec: dict[str, Any] = {"commands": [" ".join(map(str, cmd))], "config": olive_config(merged, out)}
    found = sorted((out / "output").rglob("*.onnx")) if reuse else []
    if found:
        return {**rec, "path": str(found[0]), "build_seconds": None, "reused": True}
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cfg_path.write_text(json.dumps(rec["config"], indent=2))
    env = {**os.environ, "OLIVE_DISABLE_TELEMETRY": "1", "OLIVE_TELEMETRY_CACHE_DIR": str(out / "telemetry")}
    t = time.perf_counter()
    if not run_step(cmd, out / "build.log", env):
        return {**rec, "error": f"`olive run` failed, see {out / 'build.log'}"}
    found = sorted((out / "output").rglob("*.onnx"))
    if not found:
        return {**rec, "error": f"Olive wrote no .onnx under {out / 'output'}"}
    return {**rec, "path": str(found[0]), "build_seconds": round(time.perf_counter() - t, 1)}


# ---------------------------------------------------------------- models (parent and workers)


def load_runner(kind: str, path: str, threads: int) -> tuple[Any, list[str]]:
    """(make, input names): make(feeds) returns a callable running the model on those numpy feeds once."""
    if kind in ("torch", "torch_int8"):
        import inspect

        import torch
        from transformers import AutoModelForSequenceClassification

        torch.set_num_threads(threads)
        model = AutoModelForSequenceClassification.from_pretrained(path).eval()
        if kind == "torch_int8":
            import warnings

            with warnings.catch_warnings():  # torch.ao.quantization's deprecation notices
                warnings.simplefilter("ignore")
                model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        names = [
            n
            for n in ("input_ids", "attention_mask", "token_type_ids")
            if n in inspect.signature(model.forward).parameters
        ]

        def make_torch(feeds: dict[str, np.ndarray]) -> Any:
            t = {k: torch.from_numpy(feeds[k]) for k in names if k in feeds}
            return lambda: model(**t).logits

        return make_torch, names

    import onnxruntime as ort

    if kind == "edgetune":  # the session edgetune runs its models with (its own graph-optimizer choices)
        from edgetune.runtime.ort import ort_session

        sess = ort_session(path, threads)
    else:  # a peer's model in a plain onnxruntime session, as its users would run it
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]

    def make_onnx(feeds: dict[str, np.ndarray]) -> Any:
        f = {n: feeds[n] if n in feeds else np.zeros_like(feeds["input_ids"]) for n in names}
        return lambda: sess.run(None, f)[0]

    return make_onnx, names


def inference_context(kind: str) -> Any:
    if kind.startswith("torch"):
        import torch

        return torch.inference_mode()
    return nullcontext()


def as_numpy(out: Any) -> np.ndarray:
    return out if isinstance(out, np.ndarray) else out.numpy()


def accuracy(cands: list[dict], merged: Path, data: Path, threads: int, batch: int = 1) -> None:
    """Held-out top-1 accuracy of each candidate, in place (cand['accuracy'])."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(merged)
    id2label = json.loads((merged / "config.json").read_text())["id2label"]
    label2id = {v: int(k) for k, v in id2label.items()}
    rows = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
    gold = np.array([label2id[r["label"]] for r in rows])
    texts = [r["text"] for r in rows]
    batches = [
        dict(tok(texts[i : i + batch], padding=True, truncation=True, max_length=64, return_tensors="np"))
        for i in range(0, len(texts), batch)
    ]
    batches = [{k: v.astype(np.int64) for k, v in b.items()} for b in batches]
    for c in cands:
        make, _ = load_runner(c["kind"], c["path"], threads)
        with inference_context(c["kind"]):
            pred = np.concatenate([as_numpy(make(b)()).argmax(-1) for b in batches])
        c["accuracy"] = float((pred == gold).mean())
        c["eval_rows"] = len(gold)
        print(f"  {c['label']}: {c['accuracy']:.3f} on {len(gold)} rows", flush=True)


def make_inputs(merged: Path, seqs: list[int]) -> dict[str, np.ndarray]:
    """Batch-1 token ids per length, seeded by the length, from the merged model's vocabulary (as edgetune's bench)."""
    from transformers import AutoTokenizer

    vocab = int(AutoTokenizer.from_pretrained(merged).vocab_size)
    arrays = {}
    for seq in seqs:
        ids = np.random.default_rng(seq).integers(min(1000, vocab // 2), vocab, size=(1, seq), dtype=np.int64)
        arrays[f"{seq}/input_ids"] = ids
        arrays[f"{seq}/attention_mask"] = np.ones_like(ids)
        arrays[f"{seq}/token_type_ids"] = np.zeros_like(ids)
    return arrays


def worker(job_path: str, out_path: str) -> None:
    """One candidate in a fresh process: warmup + timed runs at each length, p50 per length."""
    from edgetune.runner import timed_calls

    job = json.loads(Path(job_path).read_text())
    t0 = time.perf_counter()
    make, names = load_runner(job["kind"], job["path"], job["threads"])
    load_s = time.perf_counter() - t0
    arrays = np.load(job["inputs"])
    res: dict[str, Any] = {"load_seconds": load_s, "inputs": names, "p50_ms": {}, "p90_ms": {}}
    with inference_context(job["kind"]):
        for seq in job["seqs"]:
            fn = make({k.split("/", 1)[1]: arrays[k] for k in arrays.files if k.startswith(f"{seq}/")})
            ms = np.array(timed_calls(fn, job["warmup"], job["runs"])) * 1000
            res["p50_ms"][str(seq)] = float(np.percentile(ms, 50))
            res["p90_ms"][str(seq)] = float(np.percentile(ms, 90))
    Path(out_path).write_text(json.dumps(res))


def run_worker(c: dict, args: argparse.Namespace, inputs: Path, tmp: Path) -> dict:
    job = tmp / f"{c['name']}.job.json"
    out = tmp / f"{c['name']}.out.json"
    out.unlink(missing_ok=True)
    job.write_text(
        json.dumps(
            {
                "kind": c["kind"],
                "path": c["path"],
                "threads": args.threads,
                "seqs": args.seq,
                "warmup": args.warmup,
                "runs": args.runs,
                "inputs": str(inputs),
            }
        )
    )
    p = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", str(job), str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    if p.returncode != 0 or not out.exists():
        tail = "\n".join(p.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"worker for {c['name']} exited {p.returncode}:\n{tail}")
    return json.loads(out.read_text())


# ---------------------------------------------------------------- report


def summarize(cands: list[dict], seqs: list[int]) -> list[dict]:
    rows = []
    for c in cands:
        for seq in seqs:
            vals = [r[str(seq)] for r in c["round_p50_ms"]]
            med = statistics.median(vals)
            rows.append(
                {"build": c["name"], "seq_len": seq, "p50_ms": med, "spread": spread(vals), "round_p50_ms": vals}
            )
    for seq in seqs:
        at = {r["build"]: r for r in rows if r["seq_len"] == seq}
        base = at.get(BASELINE)
        peers = [at[p]["p50_ms"] for p in PEERS if p in at]
        for r in at.values():
            r["ratio_to_pytorch_fp32"] = r["p50_ms"] / base["p50_ms"] if base else None
            r["ratio_to_best_peer"] = r["p50_ms"] / min(peers) if peers else None
    return rows


def ratio(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.2f}x" if x >= 0.1 else f"{x:.3f}x"


def markdown(cands: list[dict], rows: list[dict], seqs: list[int]) -> str:
    head = ["build of the same merged model"]
    head += [f"seq {s}: p50 · x fp32 · x best peer · spread" for s in seqs]
    head += ["held-out acc.", "size MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in cands:
        cells = [c["label"]]
        for seq in seqs:
            r = next(r for r in rows if r["build"] == c["name"] and r["seq_len"] == seq)
            fp, peer = ratio(r["ratio_to_pytorch_fp32"]), ratio(r["ratio_to_best_peer"])
            cells.append(f"{r['p50_ms']:.2f} ms · {fp} · {peer} · {r['spread']:.0%}")
        cells.append(f"{c['accuracy']:.3f}")
        cells.append(f"{c['size_mb']:.1f}" if c.get("size_mb") else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def exporter(run_dir: Path) -> str:
    """The exporter and transformers version a run's export stage used, from its manifest."""
    try:
        entry = json.loads((run_dir / "manifest.json").read_text())["stages"]["export"]
        return f"{entry['record']['notes']['exporter']}, transformers {entry['versions']['transformers']}"
    except (OSError, KeyError, ValueError):
        return "exporter not recorded"


def size_mb(c: dict) -> float | None:
    p = Path(c["path"])
    if c["kind"] == "torch":
        return sum(f.stat().st_size for f in p.glob("*.safetensors")) / 1e6 or None
    if c["kind"] == "torch_int8":
        return None
    return sum(f.stat().st_size for f in p.parent.iterdir() if f.name.startswith(p.name)) / 1e6  # + external data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path, nargs="?", default=ROOT / "runs" / "intent-minilm")
    ap.add_argument("--data", type=Path, default=ROOT / "recipes" / "data" / "intents" / "test.jsonl")
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgetune-peers"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seq", type=int, nargs="+", default=[16, 32, 128])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=WARMUP)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--eval-batch", type=int, default=1, help="batch of the held-out accuracy runs")
    ap.add_argument("--out", type=Path, default=None, help="JSON of every figure (default WORK/peers.json)")
    ap.add_argument("--no-torch-int8", action="store_true", help="leave out PyTorch dynamic int8")
    ap.add_argument("--reuse", action="store_true", help="reuse the peer builds already in --work")
    ap.add_argument(
        "--compare",
        type=Path,
        nargs="*",
        default=[],
        help="more finished runs of the same recipe (e.g. built on the other library line) whose int8 ONNX is timed "
        "beside RUN_DIR's, named by the exporter their export record names",
    )
    ap.add_argument("--no-peers", action="store_true", help="leave out the optimum-cli and Olive builds")
    ap.add_argument("--smoke", action="store_true", help="tiny settings, for CI: " + str(SMOKE))
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.smoke:
        vars(args).update(SMOKE)
    if args.worker:
        worker(*args.worker)
        return

    merged = args.run_dir / "merge" / "model"
    ours = args.run_dir / "quantize" / "model_int8.onnx"
    for p in (merged / "config.json", ours, args.data):
        if not p.exists():
            sys.exit(f"peers: {p} not found (RUN_DIR must be a finished `edgetune build` of a classification recipe)")
    args.work.mkdir(parents=True, exist_ok=True)
    out_json = args.out or args.work / "peers.json"
    machine = machine_info(args.threads)
    print(machine_line(machine), flush=True)

    preset = quantize_preset(cpu_flags())
    print(f"optimum-cli quantize preset: --{preset} (from the CPU flags in /proc/cpuinfo)", flush=True)
    cands: list[dict] = [
        {"name": BASELINE, "label": "PyTorch eager fp32", "kind": "torch", "path": str(merged)},
    ]
    if not args.no_torch_int8:
        label = "PyTorch dynamic int8 (quantize_dynamic, nn.Linear)"
        cands.append({"name": "pytorch_int8", "label": label, "kind": "torch_int8", "path": str(merged)})
    label = f"edgetune int8 ({exporter(args.run_dir)})" if args.compare else "edgetune int8"
    cands.append({"name": "edgetune_int8", "label": label, "kind": "edgetune", "path": str(ours)})
    for i, other in enumerate(args.compare):
        path = other / "quantize" / "model_int8.onnx"
        if not path.exists():
            sys.exit(f"peers: {path} not found (--compare takes finished builds of a classification recipe)")
        label = f"edgetune int8 ({exporter(other)})"
        cands.append({"name": f"edgetune_int8_{i + 2}", "label": label, "kind": "edgetune", "path": str(path)})
    notes: list[str] = []
    print("build optimum ...", flush=True)
    opt = build_optimum(merged, args.work, preset, args.reuse) if not args.no_peers else {"skipped": "--no-peers"}
    if "skipped" in opt:
        notes.append(f"optimum skipped: {opt['skipped']}")
    elif "error" in opt:
        notes.append(f"optimum build failed: {opt['error']}")
    else:
        label = f"optimum-cli export + `onnxruntime quantize --{preset}`"
        cands.append({"name": "optimum", "label": label, "kind": "onnx", "path": opt["path"], "build": opt})
    print("build Olive ...", flush=True)
    olive = build_olive(merged, args.work, args.reuse) if not args.no_peers else {"skipped": "--no-peers"}
    if "skipped" in olive:
        notes.append(f"Olive skipped: {olive['skipped']}")
    elif "error" in olive:
        notes.append(f"Olive build failed: {olive['error']}")
    else:
        label = f"Olive {machine['olive-ai']} (conversion, transformer optimization, dynamic int8)"
        cands.append({"name": "olive", "label": label, "kind": "onnx", "path": olive["path"], "build": olive})
    for n in notes:
        print(f"  note: {n}", flush=True)
    for c in cands:
        c["size_mb"] = size_mb(c)

    print(f"held-out accuracy ({args.data}, batch {args.eval_batch}) ...", flush=True)
    accuracy(cands, merged, args.data, args.threads, args.eval_batch)

    tmp = args.work / "timing"
    tmp.mkdir(exist_ok=True)
    inputs = tmp / "inputs.npz"
    np.savez(inputs, **make_inputs(merged, args.seq))
    n = len(cands)
    print(
        f"timing: {args.rounds} rounds x {n} builds, each in a fresh process: batch 1, {args.threads} threads, "
        f"seq {' '.join(map(str, args.seq))}, {args.warmup} warmup + {args.runs} runs",
        flush=True,
    )
    for c in cands:
        c["round_p50_ms"], c["round_p90_ms"], c["load_seconds"] = [], [], []
    rounds = []
    probe, t0 = Probe.start(), time.monotonic()
    for r in range(args.rounds):
        order = cands[r % n :] + cands[: r % n]
        rp, r0 = Probe.start(), time.monotonic()
        for c in order:
            res = run_worker(c, args, inputs, tmp)
            c["round_p50_ms"].append(res["p50_ms"])
            c["round_p90_ms"].append(res["p90_ms"])
            c["load_seconds"].append(round(res["load_seconds"], 2))
            c["inputs"] = res["inputs"]
        rounds.append(
            {"order": [c["name"] for c in order], "seconds": round(time.monotonic() - r0, 2), **rp.finish({})}
        )
        rr = rounds[-1]
        print(
            f"  round {r + 1} ({', '.join(rr['order'])}): {rr['seconds']} s, load {rr['load_before']} -> "
            f"{rr['load_after']}, other processes {rr['other_cores'] if rr['other_cores'] is not None else '?'} cores",
            flush=True,
        )
    seconds = round(time.monotonic() - t0, 2)
    rows = summarize(cands, args.seq)
    worst = max(rows, key=lambda r: r["spread"])
    # the noise probe and its limits are edgetune's (edgetune/runner.py), as `edgetune bench` judges its own figures
    noise = probe.finish(
        {f"{r['build']} seq {r['seq_len']}": r["spread"] for r in rows if r["p50_ms"] >= MIN_SPREAD_MS}
    )
    warnings = noise["reasons"]
    table = markdown(cands, rows, args.seq)
    print()
    print(machine_line(machine))
    print(
        f"batch 1, {args.threads} threads, {args.rounds} interleaved rounds (fresh process per build and round, order "
        f"rotated), {args.warmup} warmup + {args.runs} runs per length; cell: median of the round p50s · ratio to PyTorch "
        f"eager fp32 · ratio to the best peer (optimum/Olive) · spread (max-min)/median of the round p50s"
    )
    print()
    print(table)
    print()
    other, steal = noise.get("other_cores"), noise.get("steal")
    print(
        f"load average (1 min) {noise['load_before']} -> {noise['load_after']}; during timing ({seconds} s): "
        f"other processes {'?' if other is None else f'{other:.2f}'} cores, steal "
        f"{'?' if steal is None else f'{steal:.1%}'}; "
        f"max spread {worst['spread']:.0%} ({worst['build']} seq {worst['seq_len']})"
    )
    if warnings:
        print("WARNING: busy machine, figures are noisy: " + "; ".join(warnings))
    for n_ in notes:
        print(f"note: {n_}")

    record = {
        "machine": machine,
        "settings": {
            "run_dir": str(args.run_dir),
            "data": str(args.data),
            "threads": args.threads,
            "batch": 1,
            "seqs": args.seq,
            "rounds": args.rounds,
            "warmup": args.warmup,
            "runs": args.runs,
            "quantize_preset": preset,
        },
        "builds": cands,
        "results": rows,
        "rounds": rounds,
        "noise": {**noise, "seconds": seconds, "warnings": warnings},
        "notes": notes,
        "table_markdown": table,
    }
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(record, indent=2))
    print(f"\nwrote {out_json}")


if __name__ == "__main__":
    main()
