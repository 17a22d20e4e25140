"""Latency benchmark: PyTorch eager fp32 baseline and each ONNX model, each in its own fresh process."""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import platform
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import Benchmark, MergedModel, OnnxModel
from ..errors import EdgetuneError, RecipeError
from ..noise import MIN_SPREAD_MS, Probe, spread, verdict
from ..recipe import BenchmarkConfig
from ..rundir import atomic_write_json
from ..runtime import cpu_isa, int8_saturates, machine_line
from .base import BaseStage, BuildContext, Key, trained_model

BASELINE = "pytorch_fp32"
# The domain of onnxruntime-extensions' custom ops (BertTokenizer: the package stage's tokenizer inside the graph).
EXTENSIONS_DOMAIN = "ai.onnx.contrib"
# Words for a text input when the graph's tokenizer has no vocabulary to take them from.
PLAIN_WORDS = "the quick brown fox jumps over a lazy dog and then runs back home again".split()


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
            ctx.recipe.task,
            ctx.data.labels,
            ctx.log,
            feeds,
        )


class DecodeBench(BaseStage):
    """Time to first token, prefill and decode tokens/s of PyTorch eager fp32 (the baseline) and each ONNX
    model in onnxruntime-genai, at each thread count, each model in a fresh process."""

    name = "bench"
    needs = ("merge", "compress", "export", "quantize")
    after_failure = ("merge", "export", "quantize")  # timed even when a later stage (package) failed
    record = Benchmark

    def key(self, ctx: BuildContext) -> Key:
        return Key(ctx.recipe.benchmark.model_dump())

    def run(self, ctx: BuildContext, inputs: dict, out: Path) -> Benchmark:
        return bench_decode(
            [inputs["export"], *inputs["quantize"].models],
            ctx.recipe.benchmark,
            out,
            trained_model(inputs),
            ctx.recipe.task,
            ctx.log,
        )


def encoder_inputs(tokenizer: Any, batch_size: int, seq_len: int) -> dict[str, np.ndarray]:
    """Token ids of a given shape (seeded by the length), with the inputs this model's tokenizer gives it."""
    rng = np.random.default_rng(seq_len)
    vocab = int(tokenizer.vocab_size)
    ids = rng.integers(min(1000, vocab // 2), vocab, size=(batch_size, seq_len), dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    # what the tokenizer gives this model (DistilBERT, MPNet, RoBERTa take no token_type_ids)
    return {k: v for k, v in feeds.items() if k in tokenizer.model_input_names}


def timed_calls(fn: Callable[[], Any], warmup: int, runs: int) -> list[float]:
    """`warmup` untimed calls of `fn`, then the seconds each of `runs` calls took (benchmarks/peers.py times its
    builds with this too)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def _stats(times_s: list[float], batch: int) -> dict:
    ms = np.array(times_s) * 1000
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "throughput_per_s": float(batch * 1000 / ms.mean()),
    }


def _index_bounds(path: str) -> dict[str, int]:
    """For graph inputs used as indices into a weight table (token ids), the table's row count."""
    import onnx

    graph = onnx.load(path, load_external_data=False).graph
    tables = {t.name: t.dims[0] for t in graph.initializer if len(t.dims) >= 2}
    inputs = {i.name for i in graph.input}
    bounds: dict[str, int] = {}
    for node in graph.node:
        used = [x for x in node.input if x in inputs]
        rows = [tables[x] for x in node.input if x in tables]
        for name in used:
            if rows:
                bounds[name] = min(bounds.get(name, rows[0]), *rows)
    return bounds


def _generated_inputs(
    sess: Any, batch: int, seq: int, bounds: dict[str, int], texts: dict[int, str] | None = None
) -> dict[str, np.ndarray]:
    """Inputs for any ONNX model from its metadata: symbolic dims become batch, then sequence; a string input
    gets texts[seq]."""
    rng = np.random.default_rng(seq)
    feeds = {}
    for i in sess.get_inputs():
        dims, sym_seen = [], 0
        for d in i.shape:
            if isinstance(d, int) and d > 0:
                dims.append(d)
            else:
                dims.append(batch if sym_seen == 0 else seq)
                sym_seen += 1
        name = i.name.lower()
        if "int" in i.type:
            dtype = np.int64 if "int64" in i.type else np.int32
            if "mask" in name:
                feeds[i.name] = np.ones(dims, dtype=dtype)
            elif "type" in name or "position" in name:
                feeds[i.name] = np.zeros(dims, dtype=dtype)
            else:
                high = bounds.get(i.name, 100)
                feeds[i.name] = rng.integers(min(1000, high // 2), high, size=dims).astype(dtype)
        elif "bool" in i.type:
            feeds[i.name] = np.ones(dims, dtype=bool)
        elif "string" in i.type:
            text = (texts or {}).get(seq) or " ".join(PLAIN_WORDS[k % len(PLAIN_WORDS)] for k in range(seq))
            feeds[i.name] = np.full(dims, text, dtype=object)
        else:
            dtype = np.float16 if "float16" in i.type else np.float32
            feeds[i.name] = rng.standard_normal(dims).astype(dtype)
    return feeds


def _peak_rss_mb() -> float:
    """This process's peak resident set size. VmHWM, because ru_maxrss survives fork+exec on Linux
    and would report the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _worker(job: dict) -> dict:
    """Runs in a fresh process so load time and peak RSS belong to one model."""
    threads, batch = job["threads"], job["batch"]
    t0 = time.perf_counter()
    given = job.get("inputs")  # {seq_len: feeds}, the same arrays for every model in a run
    if job["kind"] == "torch":
        import torch

        torch.set_num_threads(threads)
        from ..tasks import get_task

        model = get_task(job["task"]).load_model(Path(job["path"]), job["labels"])

        def make(seq: int) -> Any:
            feeds = {k: torch.from_numpy(v) for k, v in given[seq].items()}
            return lambda: model(**feeds)

        ctx = torch.inference_mode()
    else:
        import contextlib

        from ..runtime import ort_session

        sess = ort_session(job["path"], threads, job.get("custom_ops"))
        wanted = [i.name for i in sess.get_inputs()]
        bounds = {} if given else _index_bounds(job["path"])

        def make(seq: int) -> Any:
            if given:
                feeds = {n: given[seq][n] for n in wanted}
            else:
                feeds = _generated_inputs(sess, batch, seq, bounds, job.get("texts"))
            return lambda: sess.run(None, feeds)

        ctx = contextlib.nullcontext()
    load_s = time.perf_counter() - t0
    per_seq = []
    with ctx:
        for seq in job["seqs"]:
            fn = make(seq)
            t = time.perf_counter()
            fn()
            first_ms = (time.perf_counter() - t) * 1000
            times = timed_calls(fn, job["warmup"], job["runs"])
            per_seq.append({"seq_len": seq, "first_ms": first_ms, **_stats(times, batch)})
    return {"load_seconds": load_s, "peak_rss_mb": _peak_rss_mb(), "per_seq": per_seq}


def _llm_worker(job: dict) -> dict:
    """Time to first token, prefill and decode speed of one causal LM, in a fresh process."""
    threads, seq, new = job["threads"], job["seqs"][0], job["new_tokens"]
    prompt = np.random.default_rng(seq).integers(100, job["vocab"] - 1, size=seq).tolist()
    t0 = time.perf_counter()
    if job["kind"] == "torch":
        import torch

        from ..tasks import get_task

        torch.set_num_threads(threads)
        model = get_task(job["task"]).load_model(Path(job["path"]))

        def run() -> list[float]:
            stamps = [time.perf_counter()]
            with torch.inference_mode():
                out = model(input_ids=torch.tensor([prompt]), use_cache=True)
                for _ in range(new):
                    tok = out.logits[:, -1:].argmax(-1)
                    stamps.append(time.perf_counter())
                    out = model(input_ids=tok, past_key_values=out.past_key_values, use_cache=True)
            return stamps
    else:
        from ..tasks.causal_lm import GenaiLM

        lm = GenaiLM(Path(job["path"]).parent, threads)
        og, model = lm.og, lm.model

        def run() -> list[float]:
            params = og.GeneratorParams(model)
            # min_length = max_length: every run decodes exactly `new` tokens, end token or not
            params.set_search_options(do_sample=False, max_length=seq + new, min_length=seq + new)
            gen = og.Generator(model, params)
            stamps = [time.perf_counter()]
            gen.append_tokens([prompt])
            while not gen.is_done():
                gen.generate_next_token()
                gen.get_next_tokens()
                stamps.append(time.perf_counter())
            return stamps

    load_s = time.perf_counter() - t0
    for _ in range(job["warmup"]):
        run()
    ttft, decode = [], []
    for _ in range(job["runs"]):
        st = run()
        ttft.append(st[1] - st[0])
        decode.append((len(st) - 2) / (st[-1] - st[1]))
    ttft_ms = float(np.median(ttft) * 1000)
    return {
        "load_seconds": load_s,
        "peak_rss_mb": _peak_rss_mb(),
        "per_seq": [
            {
                "seq_len": seq,
                "threads": threads,
                "new_tokens": new,
                "ttft_ms": ttft_ms,
                "prefill_tokens_per_s": seq / (ttft_ms / 1000),
                "decode_tokens_per_s": float(np.median(decode)),
                "p50_ms": float(1000 / np.median(decode)),
                "p90_ms": float(1000 / np.percentile(decode, 10)),
                "p99_ms": float(1000 / np.percentile(decode, 1)),
                "mean_ms": float(1000 / np.mean(decode)),
                "throughput_per_s": float(np.median(decode)),
                "first_ms": ttft_ms,
            }
        ],
    }


def _child(job: dict, conn: Any) -> None:
    """Process entry point: run the job's worker and send its result, or a one-line error, to the parent."""
    try:
        conn.send({"ok": True, **(_llm_worker if job.get("llm") else _worker)(job)})
    except Exception as e:  # the parent raises it as a one-line error
        conn.send({"ok": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
    finally:
        conn.close()


def _run_job(job: dict) -> dict:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_child, args=(job, child), daemon=True)
    p.start()
    child.close()
    try:
        msg = parent.recv()
    except EOFError:
        p.join()
        raise EdgetuneError(f"bench: worker for {job['name']} died (exit code {p.exitcode})") from None
    p.join()
    if not msg["ok"]:
        raise EdgetuneError(f"bench: {job['name']} ({job['path']}): {msg['error']}")
    return msg


def machine_info(threads: int) -> dict:
    import onnxruntime

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        # what the figures were measured on: int8 kernels (and so int8 speed and, without VNNI, results) differ
        "isa": cpu_isa(),
        "int8_saturates": int8_saturates(),
        "cores": os.cpu_count(),
        "threads": threads,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
    }
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
    return info


def bench(
    models: list[OnnxModel],
    cfg: BenchmarkConfig,
    out: Path | None = None,
    merged: MergedModel | None = None,
    task_name: str | None = None,
    labels: list[str] | None = None,
    log: Any = lambda s: None,
    inputs: dict[int, dict[str, np.ndarray]] | None = None,
    texts: dict[int, str] | None = None,
    custom_ops: str | None = None,
) -> Benchmark:
    """Time every model at batch cfg.batch_size for each sequence length; the PyTorch merged model (of task
    `task_name`) is the baseline. `inputs` ({seq_len: feeds}) go to every model; without them, each ONNX
    model gets inputs made from its own metadata, and `texts` ({seq_len: text}) for its string inputs.
    `custom_ops`: a custom-op library every ONNX session registers."""
    common = {
        "threads": cfg.threads,
        "batch": cfg.batch_size,
        "seqs": list(cfg.sequence_lengths),
        "warmup": cfg.warmup,
        "runs": _runs_per_round(cfg),
        "task": task_name,
        "inputs": inputs,
        "texts": texts,
        "custom_ops": custom_ops,
    }
    jobs = []
    if merged is not None:
        jobs.append(
            {
                **common,
                "name": BASELINE,
                "kind": "torch",
                "path": str(merged.path),
                "labels": labels,
                "size_bytes": merged.size_bytes,
            }
        )
    for m in models:
        jobs.append(
            {
                **common,
                "name": f"onnx_{m.precision}" if task_name else m.path.name,
                "kind": "onnx",
                "path": str(m.path),
                "size_bytes": m.size_bytes,
            }
        )
    probe = Probe.start()
    results, summary = [], {}
    for job, msgs in _interleaved(jobs, cfg.rounds, log).items():
        summary[job["name"]] = _model_summary(job, msgs)
        for i, row in enumerate(msgs[0]["per_seq"]):
            rounds = [m["per_seq"][i] for m in msgs]
            results.append({"model": job["name"], "batch_size": cfg.batch_size, **_merge_rounds(row, rounds)})
    base = {r["seq_len"]: r for r in results if r["model"] == BASELINE}
    for r in results:
        b = base.get(r["seq_len"])
        if b:
            r["p50_ratio_to_baseline"] = r["p50_ms"] / b["p50_ms"]
            r["speedup_vs_baseline"] = b["p50_ms"] / r["p50_ms"]
    noise = probe.finish(_spreads(results))
    return _record("latency", results, summary, cfg, out, BASELINE if merged is not None else "", noise)


def bench_file(path: Path, cfg: BenchmarkConfig, log: Any = lambda s: None) -> Benchmark:
    """`edgetune bench MODEL.onnx`: inputs made from the model's metadata. A graph with onnxruntime-extensions
    ops runs with that library registered, and a string input (the package stage's model: the tokenizer inside
    the graph) gets a text of each sequence length's tokens."""
    import onnx

    from .common import describe_onnx

    model = describe_onnx(path, "onnx")
    graph = onnx.load(str(path), load_external_data=False).graph
    custom = sorted({n.op_type for n in graph.node if n.domain == EXTENSIONS_DOMAIN})
    library = None
    if custom:
        try:
            from onnxruntime_extensions import get_library_path
        except ImportError:
            raise RecipeError(
                f"{path}: its graph uses onnxruntime-extensions ops ({', '.join(custom)}): "
                f"pip install onnxruntime-extensions"
            ) from None
        library = get_library_path()
    texts = None
    strings = [i for i in graph.input if i.type.tensor_type.elem_type == onnx.TensorProto.STRING]
    if strings:
        one = [i.name for i in strings if [d.dim_value for d in i.type.tensor_type.shape.dim[:1]] == [1]]
        if cfg.batch_size > 1 and one:
            raise RecipeError(f"--batch: {path} takes one text per run (its input '{one[0]}' has size 1)")
        cfg, texts = _texts(graph, cfg, log)
    return bench([model], cfg, log=log, texts=texts, custom_ops=library)


def _texts(graph: Any, cfg: BenchmarkConfig, log: Any) -> tuple[BenchmarkConfig, dict[int, str]]:
    """A text for each sequence length, and the config with the lengths the model sees. With a BertTokenizer in
    the graph: words its vocabulary keeps whole, as many as make that many tokens with [CLS] and [SEP], capped
    at its max_length. Otherwise: plain English words, one per token, roughly."""
    from onnx import helper

    tok = next((n for n in graph.node if n.op_type == "BertTokenizer"), None)
    attrs = {a.name: helper.get_attribute_value(a) for a in tok.attribute} if tok is not None else {}
    vocab = attrs.get("vocab_file", b"").decode("utf-8", "replace").splitlines()
    words = [w for w in vocab if re.fullmatch(r"[a-z]{2,}", w)][:64] or PLAIN_WORDS
    special = 2 if tok is not None else 0
    cap = int(attrs.get("max_length", 0))
    texts: dict[int, str] = {}
    for seq in cfg.sequence_lengths:
        n = min(seq, cap) if cap > 0 else seq
        if n != seq:
            log(f"bench: the graph's tokenizer keeps at most {cap} tokens: seq {seq} is measured at {n}")
        texts[n] = " ".join(words[k % len(words)] for k in range(max(1, n - special)))
    return cfg.model_copy(update={"sequence_lengths": list(texts)}), texts


def bench_decode(
    models: list[OnnxModel],
    cfg: BenchmarkConfig,
    out: Path | None,
    merged: MergedModel,
    task_name: str,
    log: Any = lambda s: None,
) -> Benchmark:
    """Decode benchmark: PyTorch eager fp32 and each ONNX model (onnxruntime-genai), at each thread count."""
    import json as _json

    vocab = _json.loads((merged.path / "config.json").read_text())["vocab_size"]
    probe = Probe.start()
    jobs = []
    for threads in sorted({*cfg.threads_sweep, cfg.threads}):
        at = [
            {
                "name": BASELINE,
                "kind": "torch",
                "path": str(merged.path),
                "size_bytes": merged.size_bytes,
                "task": task_name,
            }
        ]
        at += [
            {"name": f"onnx_{m.precision}", "kind": "genai", "path": str(m.path), "size_bytes": m.size_bytes}
            for m in models
        ]
        for job in at:
            job.update(
                llm=True,
                threads=threads,
                seqs=list(cfg.sequence_lengths)[:1],
                new_tokens=cfg.new_tokens,
                warmup=cfg.warmup,
                runs=_runs_per_round(cfg),
                vocab=vocab,
            )
            if threads != cfg.threads:
                job["name"] = f"{job['name']}@{threads}t"
        jobs += at
    results, summary = [], {}
    for job, msgs in _interleaved(jobs, cfg.rounds, log).items():
        summary[job["name"]] = {**_model_summary(job, msgs), "threads": job["threads"]}
        row, rounds = msgs[0]["per_seq"][0], [m["per_seq"][0] for m in msgs]
        results.append({"model": job["name"], "batch_size": 1, **_merge_rounds(row, rounds)})
    for r in results:
        base = next(b for b in results if b["model"].split("@")[0] == BASELINE and b["threads"] == r["threads"])
        r["decode_speedup_vs_baseline"] = r["decode_tokens_per_s"] / base["decode_tokens_per_s"]
        r["p50_ratio_to_baseline"] = r["p50_ms"] / base["p50_ms"]
        r["speedup_vs_baseline"] = r["decode_speedup_vs_baseline"]
    return _record("decode", results, summary, cfg, out, BASELINE, probe.finish(_spreads(results)))


def _runs_per_round(cfg: BenchmarkConfig) -> int:
    """benchmark.runs is the number of timed runs in all, split over the rounds."""
    return max(1, -(-cfg.runs // cfg.rounds))


def _interleaved(jobs: list[dict], rounds: int, log: Any) -> dict:
    """Run every job once per round, each in a fresh process, the order rotated each round, so that a burst of
    load from elsewhere falls on different models in different rounds. {job: [its result per round]}."""
    out: dict[int, list[dict]] = {i: [] for i in range(len(jobs))}
    for r in range(rounds):
        order = list(range(len(jobs)))
        order = order[r % len(order) :] + order[: r % len(order)]
        for i in order:
            job = jobs[i]
            where = f" at {job['threads']} thread(s)" if job.get("llm") else ""
            log(f"bench: round {r + 1}/{rounds}: {job['name']}{where} ...")
            out[i].append(_run_job(job))
    return {_Key(jobs[i]): msgs for i, msgs in out.items()}


class _Key(dict):
    """A job dict usable as a dictionary key (by identity), so results stay in the jobs' order."""

    __hash__ = object.__hash__
    __eq__ = object.__eq__


def _merge_rounds(first: dict, rounds: list[dict]) -> dict:
    """One row from each round's row of the same model and length: the median of the round figures (p50 is the
    median of the round p50s), the round p50s themselves and their spread; first_ms from the first round."""
    row = dict(first)
    for k, v in first.items():
        if isinstance(v, float) and k not in ("first_ms",):
            row[k] = float(np.median([r[k] for r in rounds]))
    p50s = [r["p50_ms"] for r in rounds]
    row["round_p50_ms"] = p50s
    row["spread"] = spread(p50s)
    return row


def _model_summary(job: dict, msgs: list[dict]) -> dict:
    return {
        "load_seconds": float(np.median([m["load_seconds"] for m in msgs])),
        "peak_rss_mb": max(m["peak_rss_mb"] for m in msgs),
        "size_bytes": job["size_bytes"],
        "path": job["path"],
    }


def _spreads(results: list[dict]) -> dict[str, float]:
    """Round spreads of the rows slow enough for a spread to mean load rather than timer jitter."""
    return {f"{r['model']} seq {r['seq_len']}": r["spread"] for r in results if r["p50_ms"] >= MIN_SPREAD_MS}


def _record(
    kind: str,
    results: list[dict],
    models: dict,
    cfg: BenchmarkConfig,
    out: Path | None,
    baseline: str,
    noise: dict | None = None,
) -> Benchmark:
    """The Benchmark record of a run, also written to out/bench.json when `out` is given."""
    record = Benchmark(
        kind=kind,
        results=results,
        models=models,
        settings=cfg.model_dump(),
        machine=machine_info(cfg.threads),
        baseline=baseline,
        noise=noise or {},
    )
    if out is not None:
        atomic_write_json(out / "bench.json", dataclasses.asdict(record))
    return record


def format_benchmark(b: Benchmark) -> str:
    """A fixed-width table of a Benchmark, as the CLI prints it."""
    if b.kind == "decode":
        head = f"{'model':<22}{'threads':>8}{'prompt':>7}{'TTFT ms':>9}{'prefill t/s':>12}{'decode t/s':>11}{'x base':>8}{'RSS MB':>8}{'size MB':>9}"
        lines = [f"machine: {machine_line(b.machine)}", head, "-" * len(head)]
        for r in b.results:
            m = b.models[r["model"]]
            lines.append(
                f"{r['model']:<22}{r['threads']:>8}{r['seq_len']:>7}{r['ttft_ms']:>9.1f}{r['prefill_tokens_per_s']:>12.1f}"
                f"{r['decode_tokens_per_s']:>11.1f}{r['decode_speedup_vs_baseline']:>8.2f}{m['peak_rss_mb']:>8.0f}{m['size_bytes'] / 1e6:>9.1f}"
            )
        return "\n".join(lines + _noise_lines(b))
    head = f"{'model':<22}{'seq':>5}{'p50 ms':>9}{'spread':>8}{'p90 ms':>9}{'p99 ms':>9}{'items/s':>9}{'p50/base':>9}{'RSS MB':>8}{'size MB':>9}"
    lines = [
        f"machine: {machine_line(b.machine)} | threads {b.settings.get('threads')} | batch {b.settings.get('batch_size')}",
        head,
        "-" * len(head),
    ]
    for r in b.results:
        m = b.models[r["model"]]
        ratio = f"{r['p50_ratio_to_baseline']:.2f}" if "p50_ratio_to_baseline" in r else "-"
        spread_cell = f"{r['spread']:.0%}" if "spread" in r else "-"
        lines.append(
            f"{r['model']:<22}{r['seq_len']:>5}{r['p50_ms']:>9.2f}{spread_cell:>8}{r['p90_ms']:>9.2f}{r['p99_ms']:>9.2f}"
            f"{r['throughput_per_s']:>9.1f}{ratio:>9}{m['peak_rss_mb']:>8.0f}{m['size_bytes'] / 1e6:>9.1f}"
        )
    return "\n".join(lines + _noise_lines(b))


def _noise_lines(b: Benchmark) -> list[str]:
    if not b.noise:
        return []
    rounds = b.settings.get("rounds", 1)
    return [
        f"p50: the median of {rounds} rounds' p50s, each round every model in a fresh process, order rotated; "
        f"spread: (max - min) / median of the round p50s",
        verdict(b.noise),
    ]
