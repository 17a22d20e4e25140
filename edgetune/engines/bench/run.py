"""Latency benchmarks: every model in interleaved rounds, each in a fresh process, merged with the runner's
statistics and judged by its noise probe (edgetune/runner.py)."""

from __future__ import annotations

import dataclasses
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgetune.core.artifacts import Benchmark, MergedModel, OnnxModel
from edgetune.core.errors import RecipeError
from edgetune.core.recipe import BenchmarkConfig
from edgetune.core.rundir import atomic_write_json
from edgetune.engines.bench.inputs import EXTENSIONS_DOMAIN, _texts
from edgetune.engines.bench.workers import _run_job
from edgetune.runner import Probe, merge_rounds, row_spreads
from edgetune.runtime.cpu import cpu_isa, int8_saturates

BASELINE = "pytorch_fp32"


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
    load_model: Callable[..., Any] | None = None,
    labels: list[str] | None = None,
    log: Any = lambda s: None,
    inputs: dict[int, dict[str, np.ndarray]] | None = None,
    texts: dict[int, str] | None = None,
    custom_ops: str | None = None,
) -> Benchmark:
    """Time every model at batch cfg.batch_size for each sequence length; the PyTorch merged model (loaded in
    the worker by `load_model(path, labels)`, a task's loader) is the baseline. `inputs` ({seq_len: feeds}) go to every model; without them, each ONNX
    model gets inputs made from its own metadata, and `texts` ({seq_len: text}) for its string inputs.
    `custom_ops`: a custom-op library every ONNX session registers."""
    common = {
        "threads": cfg.threads,
        "batch": cfg.batch_size,
        "seqs": list(cfg.sequence_lengths),
        "warmup": cfg.warmup,
        "runs": _runs_per_round(cfg),
        "load": load_model,
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
                "name": f"onnx_{m.precision}" if merged is not None else m.path.name,
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
            results.append({"model": job["name"], "batch_size": cfg.batch_size, **merge_rounds(row, rounds)})
    base = {r["seq_len"]: r for r in results if r["model"] == BASELINE}
    for r in results:
        b = base.get(r["seq_len"])
        if b:
            r["p50_ratio_to_baseline"] = r["p50_ms"] / b["p50_ms"]
            r["speedup_vs_baseline"] = b["p50_ms"] / r["p50_ms"]
    noise = probe.finish(row_spreads(results))
    return _record("latency", results, summary, cfg, out, BASELINE if merged is not None else "", noise)


def bench_file(path: Path, cfg: BenchmarkConfig, log: Any = lambda s: None) -> Benchmark:
    """`edgetune bench MODEL.onnx`: inputs made from the model's metadata. A graph with onnxruntime-extensions
    ops runs with that library registered, and a string input (the package stage's model: the tokenizer inside
    the graph) gets a text of each sequence length's tokens."""
    import onnx

    from edgetune.engines.onnxfile import describe_onnx

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


def bench_decode(
    models: list[OnnxModel],
    cfg: BenchmarkConfig,
    out: Path | None,
    merged: MergedModel,
    load_model: Callable[..., Any],
    log: Any = lambda s: None,
    adapter: tuple[OnnxModel, str, Path] | None = None,
) -> Benchmark:
    """Decode benchmark: PyTorch eager fp32 (loaded in the worker by `load_model(path)`) and each ONNX model
    (onnxruntime-genai), at each thread count. `adapter`: (base model, name, .onnx_adapter file), timed too as
    onnx_int4+adapter: the unmerged path's cost next to the merged int4 model's."""
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
                "load": load_model,
            }
        ]
        at += [
            {"name": f"onnx_{m.precision}", "kind": "genai", "path": str(m.path), "size_bytes": m.size_bytes}
            for m in models
        ]
        if adapter is not None:
            base, name, file = adapter
            size = base.size_bytes + file.stat().st_size
            at.append(
                {
                    "name": "onnx_int4+adapter",
                    "kind": "genai",
                    "path": str(base.path),
                    "size_bytes": size,
                    "adapter": [name, str(file)],
                }
            )
        for job in at:
            job.update(_decode_fields(cfg, threads, vocab))
            if threads != cfg.threads:
                job["name"] = f"{job['name']}@{threads}t"
        jobs += at
    results, summary = [], {}
    for job, msgs in _interleaved(jobs, cfg.rounds, log).items():
        summary[job["name"]] = {**_model_summary(job, msgs), "threads": job["threads"]}
        row, rounds = msgs[0]["per_seq"][0], [m["per_seq"][0] for m in msgs]
        results.append({"model": job["name"], "batch_size": 1, **merge_rounds(row, rounds)})
    for r in results:
        base = next(b for b in results if b["model"].split("@")[0] == BASELINE and b["threads"] == r["threads"])
        r["decode_speedup_vs_baseline"] = r["decode_tokens_per_s"] / base["decode_tokens_per_s"]
        r["p50_ratio_to_baseline"] = r["p50_ms"] / base["p50_ms"]
        r["speedup_vs_baseline"] = r["decode_speedup_vs_baseline"]
    return _record("decode", results, summary, cfg, out, BASELINE, probe.finish(row_spreads(results)))


def time_decoders(
    models: list[tuple[str, Path, int]], cfg: BenchmarkConfig, vocab: int, log: Any = lambda s: None
) -> list[dict]:
    """(name, model.onnx path, size) of onnxruntime-genai decoders, each generating cfg.new_tokens after a prompt
    of cfg.sequence_lengths[0] random ids, at cfg.threads, each in a fresh process, in cfg.rounds interleaved
    rounds (quantize.auto's timing of int4 layouts): a row per model as bench_decode has them, in order."""
    jobs = [
        {
            "name": name,
            "kind": "genai",
            "path": str(path),
            "size_bytes": size,
            **_decode_fields(cfg, cfg.threads, vocab),
        }
        for name, path, size in models
    ]
    rows = []
    for job, msgs in _interleaved(jobs, cfg.rounds, log).items():
        row, rounds = msgs[0]["per_seq"][0], [m["per_seq"][0] for m in msgs]
        rows.append({"model": job["name"], **merge_rounds(row, rounds)})
    return rows


def _decode_fields(cfg: BenchmarkConfig, threads: int, vocab: int) -> dict:
    """What a decoder's timing job reads besides its model: prompt length, new tokens, runs, at `threads`."""
    return {
        "llm": True,
        "threads": threads,
        "seqs": list(cfg.sequence_lengths)[:1],
        "new_tokens": cfg.new_tokens,
        "warmup": cfg.warmup,
        "runs": _runs_per_round(cfg),
        "vocab": vocab,
    }


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


def _model_summary(job: dict, msgs: list[dict]) -> dict:
    return {
        "load_seconds": float(np.median([m["load_seconds"] for m in msgs])),
        "peak_rss_mb": max(m["peak_rss_mb"] for m in msgs),
        "size_bytes": job["size_bytes"],
        "path": job["path"],
    }


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
