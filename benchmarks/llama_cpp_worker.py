"""llama.cpp's side of benchmarks/chat_peers.py. It runs with the Python that has llama-cpp-python, a venv of its
own (benchmarks/setup_llama_cpp.sh builds it), and imports nothing from edgetune.

Usage: PY llama_cpp_worker.py quantize IN.gguf OUT.gguf [TYPE]   (TYPE: a llama_ftype name, default Q4_0)
       PY llama_cpp_worker.py time|greedy < job.json              (prints one JSON object)

time:   {"model", "threads", "prompt": [ids], "new", "warmup", "runs"}
        -> {"load_s", "peak_rss_mb", "runs": [{"prefill_ms", "decode_tokens_per_s"}, ...]}
        Each run: the prompt in one llama_decode call (logits for its last position only, llama.cpp's default),
        the first token picked, then `new` - 1 more tokens, one call each; greedy (argmax), no early stop.
        prefill_ms is the time to the first token; decode tokens/s excludes it, as edgetune's benchmark does.
greedy: {"model", "threads", "prompts": [[ids]], "budgets": [n], "eos": [ids]}
        -> {"generations": [[ids]]}: greedy tokens after each prompt, up to its budget or the first end token.
"""

from __future__ import annotations

import json
import resource
import sys
import time


def peak_rss_mb() -> float:
    """VmHWM: ru_maxrss survives fork+exec on Linux, so a worker would report its parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _load(job: dict, n_ctx: int):  # noqa: ANN202
    from llama_cpp import Llama

    return Llama(
        model_path=job["model"],
        n_ctx=n_ctx,
        n_batch=max(512, n_ctx),
        n_ubatch=max(512, n_ctx),
        n_threads=job["threads"],
        n_threads_batch=job["threads"],
        # llama.cpp's own default is "auto", which turns flash attention on for the CPU; llama-cpp-python's
        # Llama() turns it off unless asked. On: 37-45 ms against 43-63 ms for a 64-token prefill here.
        flash_attn=True,
        verbose=False,
    )


def _next(llm) -> int:  # noqa: ANN001
    """Greedy: the argmax of the last decoded position's logits (llama.cpp computes no others)."""
    import numpy as np

    return int(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).argmax())


def time_job(job: dict) -> dict:
    prompt, new = job["prompt"], job["new"]
    t0 = time.perf_counter()
    llm = _load(job, len(prompt) + new + 8)
    load_s = time.perf_counter() - t0

    def run() -> list[float]:
        llm.reset()
        stamps = [time.perf_counter()]
        llm.eval(prompt)
        tok = _next(llm)
        stamps.append(time.perf_counter())
        for _ in range(new - 1):
            llm.eval([tok])
            tok = _next(llm)
            stamps.append(time.perf_counter())
        return stamps

    for _ in range(job["warmup"]):
        run()
    runs = []
    for _ in range(job["runs"]):
        st = run()
        runs.append({"prefill_ms": (st[1] - st[0]) * 1000, "decode_tokens_per_s": (len(st) - 2) / (st[-1] - st[1])})
    return {"load_s": load_s, "peak_rss_mb": peak_rss_mb(), "runs": runs}


def greedy_job(job: dict) -> dict:
    longest = max(len(p) + b for p, b in zip(job["prompts"], job["budgets"]))
    llm = _load(job, longest + 8)
    eos, out = set(job["eos"]), []
    for prompt, budget in zip(job["prompts"], job["budgets"]):
        llm.reset()
        llm.eval(prompt)
        toks: list[int] = []
        while len(toks) < budget:
            tok = _next(llm)
            toks.append(tok)
            if tok in eos:
                break
            llm.eval([tok])
        out.append(toks)
    return {"generations": out}


def quantize(src: str, dst: str, kind: str = "Q4_0") -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{kind}")
    params.nthread = 0
    params.allow_requantize = True  # e.g. a Q4_1 GGUF to Q4_0 (tests/test_benchmarks.py), not only f16 to Q4_0
    if llama_cpp.llama_model_quantize(src.encode(), dst.encode(), params) != 0:
        sys.exit(f"llama_model_quantize failed: {src} -> {dst} ({kind})")


def main() -> None:
    cmd = sys.argv[1]
    if cmd == "quantize":
        quantize(*sys.argv[2:])
        return
    job = json.load(sys.stdin)
    print(json.dumps({"time": time_job, "greedy": greedy_job}[cmd](job)))


if __name__ == "__main__":
    main()
