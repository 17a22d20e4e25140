"""The benchmark's workers: one model timed in a fresh process (PyTorch, ONNX Runtime or onnxruntime-genai),
with the runner's statistics (edgetune/runner.py)."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgetune.core.errors import EdgetuneError
from edgetune.engines.bench.inputs import _generated_inputs, _index_bounds
from edgetune.runner import decode_row, genai_stamps, peak_rss_mb, stats, timed_calls


def _worker(job: dict) -> dict:
    """Runs in a fresh process so load time and peak RSS belong to one model."""
    threads, batch = job["threads"], job["batch"]
    t0 = time.perf_counter()
    given = job.get("inputs")  # {seq_len: feeds}, the same arrays for every model in a run
    if job["kind"] == "torch":
        import torch

        torch.set_num_threads(threads)
        model = job["load"](Path(job["path"]), job["labels"])

        def make(seq: int) -> Any:
            feeds = {k: torch.from_numpy(v) for k, v in given[seq].items()}
            return lambda: model(**feeds)

        ctx = torch.inference_mode()
    else:
        import contextlib

        from edgetune.runtime.ort import ort_session

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
            per_seq.append({"seq_len": seq, "first_ms": first_ms, **stats(times, batch)})
    return {"load_seconds": load_s, "peak_rss_mb": peak_rss_mb(), "per_seq": per_seq}


def _llm_worker(job: dict) -> dict:
    """Time to first token, prefill and decode speed of one causal LM, in a fresh process."""
    threads, seq, new = job["threads"], job["seqs"][0], job["new_tokens"]
    prompt = np.random.default_rng(seq).integers(100, job["vocab"] - 1, size=seq).tolist()
    t0 = time.perf_counter()
    if job["kind"] == "torch":
        import torch

        torch.set_num_threads(threads)
        model = job["load"](Path(job["path"]))

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
        from edgetune.runtime.genai import GenaiLM

        lm = GenaiLM(Path(job["path"]).parent, threads)
        og, model = lm.og, lm.model
        name = None
        if job.get("adapter"):  # [name, file]: the base with that .onnx_adapter active
            name = job["adapter"][0]
            lm.load_adapter(name, Path(job["adapter"][1]))

        def run() -> list[float]:
            return genai_stamps(og, model, prompt, new, lm.adapters, name)

    load_s = time.perf_counter() - t0
    row = decode_row(run, job["warmup"], job["runs"], seq, threads, new)
    return {"load_seconds": load_s, "peak_rss_mb": peak_rss_mb(), "per_seq": [row]}


def _child(job: dict, conn: Any) -> None:
    """Process entry point: run the job's worker and send its result, or a one-line error, to the parent."""
    try:
        from edgetune.core.progress import quiet_library_bars

        quiet_library_bars()  # a worker's "Loading checkpoint shards" would only fill the build's log
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
