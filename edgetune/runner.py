#!/usr/bin/env python3
"""Check an edgetune device bundle's golden cases on this machine, benchmark it, print one JSON document.

This file is copied into every device bundle as run_device.py. It needs Python 3.9+, numpy and onnxruntime,
plus onnxruntime-extensions (a classifier with its tokenizer inside the graph) or onnxruntime-genai (a chat
model); never torch or edgetune. Run it from anywhere:

    python3 run_device.py [--threads N] [--warmup N] [--runs N] [--seq L ...] [--new-tokens N] [--no-bench]

Exit codes: 0 every golden case passed; 1 a golden case failed, or a model failed to run; 2 this machine cannot
run the bundle (Python version, a missing module, the CPU architecture, a file that differs from the bundle).
The JSON document goes to stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import struct
import subprocess
import sys
import time
from dataclasses import dataclass

SCHEMA_VERSION = 1
HERE = os.path.dirname(os.path.abspath(__file__))
MIN_PYTHON = (3, 9)
# `uname -m` of the machines each bundle target runs on; the Python itself must also be 64-bit.
TARGETS = {"linux-arm64": ("aarch64", "arm64"), "linux-x86_64": ("x86_64", "amd64")}
# CPU features that decide which onnxruntime kernels run (int8 dot products, fp16/bf16, wide vectors).
ML_FEATURES = (
    "asimd",
    "asimddp",
    "asimdhp",
    "fphp",
    "i8mm",
    "bf16",
    "sve",
    "sve2",
    "sme",
    "fma",
    "f16c",
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_bf16",
    "amx_int8",
)
# Problems the owner of the device fixes (exit 2), as opposed to a model that fails its check (exit 1).
ENVIRONMENT_KINDS = ("python", "abi", "missing_module", "import", "runtime_version", "illegal_instruction")


class RunnerError(Exception):
    def __init__(self, kind: str, message: str, **extra: object) -> None:
        super().__init__(message)
        self.kind, self.message, self.extra = kind, message, extra


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- the machine ------------------------------------------------------------------------------------------
def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return None


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def cpuinfo_fields(text: str | None) -> dict:
    """The first value of each key in /proc/cpuinfo (the first CPU's)."""
    out: dict = {}
    for line in (text or "").splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            out.setdefault(key.strip().lower(), value.strip())
    return out


def detect_emulation(machine: str, cpuinfo: dict, proc: str = "/proc") -> tuple:
    """(emulated, evidence): True when this process's instructions are translated by a user-mode emulator
    (qemu-user, box64, FEX), False when the kernel runs this Python directly and /proc/cpuinfo describes a CPU
    of this architecture, None when /proc does not tell.

    The signal: qemu-user answers reads of /proc/self/exe (and /proc/<own pid>/exe) with the guest program,
    but not /proc/thread-self/exe, where the kernel names the binary it really runs: the emulator. A user-mode
    emulator cannot hide that without also faking the per-thread /proc entries. Older qemu also passes the
    host's /proc/cpuinfo through, which then describes an x86 CPU under an arm64 Python.
    """
    self_exe = _readlink(proc + "/self/exe")
    thread_exe = _readlink(proc + "/thread-self/exe")
    if thread_exe is None:
        try:
            import threading

            thread_exe = _readlink("%s/self/task/%d/exe" % (proc, threading.get_native_id()))
        except (AttributeError, OSError):
            thread_exe = None
    if self_exe and thread_exe and self_exe != thread_exe:
        what = "qemu-user" if "qemu" in os.path.basename(thread_exe) else "a user-mode emulator"
        return True, (
            "%s: the kernel runs this process as %s (/proc/thread-self/exe) while /proc/self/exe "
            "claims %s" % (what, thread_exe, self_exe)
        )
    arm = machine in ("aarch64", "arm64") or machine.startswith("arm")
    x86_cpu = cpuinfo.get("vendor_id") in ("GenuineIntel", "AuthenticAMD") or "flags" in cpuinfo
    if arm and x86_cpu:
        return True, (
            "/proc/cpuinfo describes an x86 CPU (%s) while Python runs as %s: the host's cpuinfo seen "
            "through an emulator" % (cpuinfo.get("model name") or cpuinfo.get("vendor_id"), machine)
        )
    if not cpuinfo or self_exe is None or thread_exe is None:
        return None, "cannot tell: /proc/cpuinfo or /proc/thread-self/exe is not readable"
    return False, (
        "the kernel runs %s itself (/proc/thread-self/exe = /proc/self/exe) and /proc/cpuinfo "
        "describes an %s CPU" % (self_exe, "arm" if arm else machine)
    )


def _cpu_name(fields: dict) -> str:
    for key in ("model name", "hardware", "cpu model", "processor"):
        value = fields.get(key, "")
        if value and not value.isdigit():
            return value
    if "cpu implementer" in fields:
        name = _lscpu_model()
        return name or "implementer %s part %s" % (fields.get("cpu implementer"), fields.get("cpu part"))
    return platform.processor() or "unknown"


def _lscpu_model() -> str | None:
    """util-linux's name for an arm core (it keeps the implementer/part table), when lscpu is installed."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip() or None
    return None


def _os_name() -> str:
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        for line in (_read(path) or "").splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    return platform.platform()


def _board() -> str | None:
    for path in ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model", "/sys/class/dmi/id/product_name"):
        text = _read(path)
        if text and text.strip("\0\n "):
            return text.strip("\0\n ")
    return None


def _ram_mb() -> float | None:
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def _version(dist: str) -> str | None:
    """An installed package's version, from its metadata (importing onnxruntime_extensions would import
    transformers and torch when they are installed: seconds and hundreds of MB for a version string)."""
    try:
        from importlib import metadata

        return metadata.version(dist)
    except Exception:
        return None


def extensions_library() -> str:
    """The onnxruntime-extensions custom-op library (what its get_library_path() returns), found without
    importing the package, whose __init__ pulls in its converters and, through them, transformers."""
    import importlib.machinery
    import importlib.util

    spec = importlib.util.find_spec("onnxruntime_extensions")
    if spec is None or not spec.origin:
        raise ImportError("No module named 'onnxruntime_extensions'", name="onnxruntime_extensions")
    folder = os.path.dirname(spec.origin)
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = os.path.join(folder, "_extensions_pydll" + suffix)
        if os.path.isfile(path):
            return path
    raise RuntimeError("no _extensions_pydll library in %s" % folder)


def device_facts() -> dict:
    """What this machine is: architecture, CPU, cores, RAM, OS, versions, and whether it is emulated."""
    machine = platform.machine()
    fields = cpuinfo_fields(_read("/proc/cpuinfo"))
    features = (fields.get("features") or fields.get("flags") or "").split()
    emulated, evidence = detect_emulation(machine, fields)
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = None
    return {
        "arch": machine,
        "bits": struct.calcsize("P") * 8,
        "cpu": _cpu_name(fields),
        "board": _board(),
        "cpu_features": features,
        "ml_features": [f for f in ML_FEATURES if f in features],
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "ram_mb": _ram_mb(),
        "os": _os_name(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "numpy": _version("numpy"),
        "onnxruntime": _version("onnxruntime"),
        "onnxruntime_extensions": _version("onnxruntime-extensions"),
        "onnxruntime_genai": _version("onnxruntime-genai"),
        "emulated": emulated,
        "emulation_evidence": evidence,
    }


def abi_problem(target: str, machine: str, bits: int) -> str | None:
    """Why a bundle for `target` cannot run on a `machine` (uname -m) with a `bits`-bit Python, or None."""
    if target not in TARGETS:
        return "unknown bundle target %r (known: %s)" % (target, ", ".join(sorted(TARGETS)))
    names = TARGETS[target]
    if machine in names and bits == 64:
        return None
    if machine in names:
        return (
            "this Python is %d-bit on a %s kernel (a 32-bit OS or Python on 64-bit hardware); the bundle is "
            "for %s and onnxruntime publishes no 32-bit wheels: install a 64-bit OS" % (bits, machine, target)
        )
    if machine.startswith("arm") and machine not in ("arm64",):
        return (
            "the device is %s (32-bit ARM); the bundle is for %s and onnxruntime publishes no 32-bit ARM "
            "wheels: install a 64-bit OS on the board" % (machine, target)
        )
    other = [t for t, ns in TARGETS.items() if machine in ns]
    hint = (": package for it with `edgetune package RUN_DIR --target %s`" % other[0]) if other else ""
    return "the device is %s; the bundle is for %s%s" % (machine, target, hint)


def pip_line(packages: list) -> str:
    return "python3 -m pip install " + " ".join(packages)


def check_modules(requires: list) -> None:
    """Import each required package (pip names); RunnerError naming the pip line for the missing ones."""
    missing, broken = [], []
    for pkg in requires:
        try:
            if pkg == "onnxruntime-extensions":
                extensions_library()
            else:
                __import__(pkg.replace("-", "_"))
        except ImportError as e:
            (missing if getattr(e, "name", None) == pkg.replace("-", "_") else broken).append((pkg, e))
        except Exception as e:  # a wheel built for another CPU or glibc fails in its own way
            broken.append((pkg, e))
    if missing:
        names = [p for p, _ in missing]
        raise RunnerError(
            "missing_module",
            "%s missing in %s: run `%s` on the device" % (", ".join(names), sys.executable, pip_line(names)),
            packages=names,
        )
    if broken:
        pkg, e = broken[0]
        raise RunnerError(
            "import",
            "%s is installed but does not import in %s (%s: %s): reinstall it with `%s`"
            % (
                pkg,
                sys.executable,
                type(e).__name__,
                str(e).splitlines()[0][:200] if str(e) else "",
                "python3 -m pip install --force-reinstall " + pkg,
            ),
            packages=[pkg],
        )


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_files(folder: str, files: dict) -> None:
    for name, digest in sorted(files.items()):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise RunnerError("corrupt", "%s is missing from the bundle" % name, file=name)
        if sha256_file(path) != digest:
            raise RunnerError("corrupt", "%s differs from the bundle (sha256 mismatch)" % name, file=name)


# -- statistics: the one definition, used by the host benchmark (edgetune/engines/bench) too -----------------
def stats(times_s: list, batch: int = 1) -> dict:
    """p50/p90/p99/mean milliseconds and throughput (items per second) of one model's timed calls."""
    import numpy as np

    ms = np.array(times_s) * 1000
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "throughput_per_s": float(batch * 1000 / ms.mean()),
    }


def peak_rss_mb() -> float | None:
    """This process's peak resident set size. VmHWM, because ru_maxrss survives fork+exec on Linux and would
    report the parent's peak; ru_maxrss where there is no /proc."""
    for line in (_read("/proc/self/status") or "").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    try:
        import resource
    except ImportError:
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def genai_stamps(og, model, prompt: list, new: int, adapters=None, adapter: str | None = None) -> list:
    """One greedy onnxruntime-genai generation of exactly `new` tokens after `prompt` (min_length = max_length:
    an end token does not stop it): the time before the prompt, then after each token. With `adapter`, that
    adapter of `adapters` (og.Adapters) is active."""
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(prompt) + new, min_length=len(prompt) + new)
    gen = og.Generator(model, params)
    if adapter is not None:
        gen.set_active_adapter(adapters, adapter)
    stamps = [time.perf_counter()]
    gen.append_tokens([prompt])
    while not gen.is_done():
        gen.generate_next_token()
        gen.get_next_tokens()
        stamps.append(time.perf_counter())
    return stamps


def decode_row(run, warmup: int, runs: int, seq: int, threads: int, new: int) -> dict:
    """`warmup` untimed calls of `run` (which returns the stamps genai_stamps does), then the time to first token,
    prefill and decode rates of `runs` calls: medians, and per-token latency percentiles from the decode rates."""
    import numpy as np

    for _ in range(warmup):
        run()
    ttft, decode = [], []
    for _ in range(runs):
        st = run()
        ttft.append(st[1] - st[0])
        decode.append((len(st) - 2) / (st[-1] - st[1]))
    ttft_ms = float(np.median(ttft) * 1000)
    return {
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


def timed_calls(fn, warmup: int, runs: int) -> list:
    """`warmup` untimed calls of `fn`, then the seconds each of `runs` calls took."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


# -- classifier: a string in, logits out --------------------------------------------------------------------
def classifier_session(path: str, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.register_custom_ops_library(extensions_library())
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    # the host's session settings (edgetune/runtime/ort.py), so both sides run the same graph
    return ort.InferenceSession(
        path, so, providers=["CPUExecutionProvider"], disabled_optimizers=["SkipLayerNormFusion"]
    )


def classify(sess, text: str):
    import numpy as np

    return sess.run(["logits"], {"text": np.array([text], dtype=object)})[0][0]


def check_classifier_golden(sess, golden: dict, labels: list) -> dict:
    """Each golden text through the packaged graph against PyTorch's logits, with verify's tolerances."""
    import numpy as np

    worst_diff, worst_cos, same, failures = 0.0, 1.0, 0, []
    for i, case in enumerate(golden["cases"]):
        got = np.asarray(classify(sess, case["text"]), dtype=np.float64)
        ref = np.asarray(case["pytorch_logits"], dtype=np.float64)
        diff = float(np.abs(got - ref).max())
        cos = float(got @ ref / (np.linalg.norm(got) * np.linalg.norm(ref) + 1e-12))
        label = labels[int(np.argmax(got))]
        same += label == case["pytorch_label"]
        worst_diff, worst_cos = max(worst_diff, diff), min(worst_cos, cos)
        if (
            diff > golden["max_abs_diff"]
            or cos < golden["min_cosine"]
            or (case["check_label"] and label != case["pytorch_label"])
        ):
            failures.append(
                {
                    "case": i,
                    "text": case["text"][:80],
                    "max_abs_diff": diff,
                    "cosine": cos,
                    "label": label,
                    "pytorch_label": case["pytorch_label"],
                }
            )
    return {
        "passed": not failures,
        "cases": len(golden["cases"]),
        "max_abs_diff": worst_diff,
        "min_cosine": worst_cos,
        "label_agreement": same / max(1, len(golden["cases"])),
        "failures": failures,
    }


def bench_text(bundle: dict, seq: int) -> tuple:
    """A text the packaged tokenizer turns into `seq` tokens (capped at max_length): single-token words
    chosen on the host, plus the special tokens ([CLS], [SEP])."""
    n = max(0, min(seq, bundle["max_length"]) - bundle["special_tokens"])
    words = bundle["bench_words"]
    return " ".join(words[i % len(words)] for i in range(n)), n + bundle["special_tokens"]


def classifier_worker(job: dict) -> dict:
    t0 = time.perf_counter()
    sess = classifier_session(job["path"], job["threads"])
    load_s = time.perf_counter() - t0
    out = {"load_seconds": load_s, "per_seq": []}
    out["golden"] = check_classifier_golden(sess, job["golden"], job["labels"])
    for seq in job["seqs"]:
        text, tokens = bench_text(job["bundle"], seq)
        t = time.perf_counter()
        classify(sess, text)
        first_ms = (time.perf_counter() - t) * 1000
        for _ in range(job["warmup"]):
            classify(sess, text)
        times = []
        for _ in range(job["runs"]):
            t = time.perf_counter()
            classify(sess, text)
            times.append(time.perf_counter() - t)
        out["per_seq"].append({"seq_len": tokens, "first_ms": first_ms, **stats(times)})
    out["peak_rss_mb"] = peak_rss_mb()
    return out


# -- causal LM: onnxruntime-genai ---------------------------------------------------------------------------
def genai_model(folder: str, threads: int):
    import onnxruntime_genai as og

    cfg = og.Config(folder)
    if hasattr(cfg, "clear_providers"):
        cfg.clear_providers()
    if threads:
        cfg.overlay(
            json.dumps(
                {
                    "model": {
                        "decoder": {"session_options": {"intra_op_num_threads": threads, "inter_op_num_threads": 1}}
                    }
                }
            )
        )
    return og, og.Model(cfg)


def chat_prompt(chat: dict, user: str, adapter: str | None = None) -> str:
    """`user` in the package's prompt format, with its system prompt (that of `adapter`, when it has one)."""
    system = chat.get("system_prompt", "")
    for a in chat.get("adapters") or []:
        if a["name"] == adapter and a.get("system_prompt"):
            system = a["system_prompt"]
    return chat["prompt_format"].replace("{system}", system).replace("{user}", user)


def load_adapters(og, model, folder: str, chat: dict):
    """A base model package's .onnx_adapter files (chat["adapters"]) loaded beside `model` once, or None."""
    if not chat.get("adapters"):
        return None
    adapters = og.Adapters(model)
    for a in chat["adapters"]:
        adapters.load(os.path.join(folder, a["file"]), a["name"])
    return adapters


TOP_K = 5  # host logits kept per generated token in golden.json


def decode_steps(og, model, ids: list, n: int, forced: list | None = None, adapters=None, adapter=None) -> tuple:
    """Up to `n` decoding steps after `ids`: the next-token logits at each step and the tokens fed back.
    Greedy when `forced` is None (the argmax is fed back, fewer steps when an end token comes); teacher-forced
    otherwise (`forced[k]` is fed back whatever this model prefers, so one early difference cannot shift every
    later step). With `adapter`, that adapter of `adapters` (load_adapters) is active."""
    import numpy as np

    steps = n if forced is None else min(n, len(forced))
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(ids) + steps + 1)
    gen = og.Generator(model, params)
    if adapter is not None:
        gen.set_active_adapter(adapters, adapter)
    gen.append_tokens([ids])
    logits, tokens = [], []
    for k in range(steps):
        row = np.asarray(gen.get_logits(), dtype=np.float32).reshape(-1).copy()
        token = int(row.argmax()) if forced is None else int(forced[k])
        logits.append(row)
        tokens.append(token)
        if k + 1 == steps:
            break
        gen.append_tokens([[token]])
        if forced is None and gen.is_done():
            break
    return tokens, logits


def greedy_cases(
    folder: str, chat: dict, prompts: list, n: int, threads: int = 0, adapters: list | None = None
) -> list:
    """For each user prompt: its token ids through the bundle's tokenizer, the first `n` greedy tokens and, at
    each step, the TOP_K highest logits with their token ids; `adapters`: the adapter each prompt runs with (a
    base model package), or None. The host runs this same function on the same folder to write golden.json."""
    import numpy as np

    og, model = genai_model(folder, threads)
    tok = og.Tokenizer(model)
    loaded = load_adapters(og, model, folder, chat)
    out = []
    for p, name in zip(prompts, adapters or [None] * len(prompts)):
        ids = [int(t) for t in tok.encode(chat_prompt(chat, p, name))]
        tokens, logits = decode_steps(og, model, ids, n, adapters=loaded, adapter=name)
        top = [np.argsort(row)[::-1][:TOP_K] for row in logits]
        out.append(
            {
                "prompt_ids": ids,
                "tokens": tokens,
                "top_ids": [[int(i) for i in t] for t in top],
                "top_logits": [[round(float(row[i]), 4) for i in t] for row, t in zip(logits, top)],
            }
        )
    return out


def check_llm_golden(og, model, golden: dict, chat: dict, folder: str = "") -> dict:
    """The device's logits along the host's greedy tokens (teacher-forced) against PyTorch's: at every step, the
    logits of the host's TOP_K tokens within golden["max_abs_diff"] of PyTorch's (1.5x what the host's own
    quantized model measured), and the device's choice among those tokens. A choice other than the host's inside
    the tolerance is a near tie (counted, not failed). The prompt ids from this device's tokenizer must equal the
    host's. A case with an `adapter` runs with that adapter of the package (in `folder`) active."""
    import numpy as np

    tok = og.Tokenizer(model)
    loaded = load_adapters(og, model, folder, chat)
    limit = golden["max_abs_diff"]
    steps = same_steps = same_prompts = same_ids = near_ties = 0
    worst = worst_host = 0.0
    failures = []
    for i, case in enumerate(golden["cases"]):
        name = case.get("adapter")
        ids = [int(t) for t in tok.encode(chat_prompt(chat, case["prompt"], name))]
        host = case["host_tokens"]
        _, logits = decode_steps(og, model, case["prompt_ids"], len(host), forced=host, adapters=loaded, adapter=name)
        ids_ok, all_equal, bad = ids == case["prompt_ids"], True, None
        for k, row in enumerate(logits):
            top = np.asarray(case["top_ids"][k])
            diff = float(np.abs(row[top] - np.asarray(case["pytorch_logits"][k], dtype=np.float32)).max())
            worst_host = max(
                worst_host, float(np.abs(row[top] - np.asarray(case["top_logits"][k], dtype=np.float32)).max())
            )
            choice = int(row.argmax())
            worst = max(worst, diff)
            steps += 1
            same_steps += choice == host[k]
            if choice != host[k]:
                all_equal = False
                near_ties += choice in top and diff <= limit
            if bad is None and (diff > limit or choice not in top):
                bad = {
                    "step": k,
                    "max_abs_diff": diff,
                    "host": host[k],
                    "device": choice,
                    "in_host_top": bool(choice in top),
                }
        same_ids += ids_ok
        same_prompts += all_equal
        if bad is not None or not ids_ok:
            failures.append({"case": i, "prompt": case["prompt"][:80], "prompt_ids_equal": ids_ok, **(bad or {})})
    count = max(1, len(golden["cases"]))
    return {
        "passed": not failures,
        "cases": len(golden["cases"]),
        "greedy_tokens": golden["greedy_tokens"],
        "steps": steps,
        "step_agreement": same_steps / max(1, steps),
        "agreement": same_prompts / count,
        "near_ties": near_ties,
        "max_abs_diff": worst,
        "max_abs_diff_limit": limit,
        "max_abs_diff_host": worst_host,
        "tokenizer_agreement": same_ids / count,
        "failures": failures,
    }


def llm_worker(job: dict) -> dict:
    import numpy as np

    t0 = time.perf_counter()
    og, model = genai_model(job["path"], job["threads"])
    load_s = time.perf_counter() - t0
    out = {"load_seconds": load_s, "per_seq": []}
    out["golden"] = check_llm_golden(og, model, job["golden"], job["chat"], job["path"])
    new, vocab = job["new_tokens"], job["bundle"]["vocab_size"]
    for seq in job["seqs"][:1]:
        # the host benchmark's prompt (edgetune/engines/bench/): same seed, same ids
        prompt = np.random.default_rng(seq).integers(100, vocab - 1, size=seq).tolist()

        def run(prompt: list = prompt) -> list:
            return genai_stamps(og, model, prompt, new)

        out["per_seq"].append(decode_row(run, job["warmup"], job["runs"], seq, job["threads"], new))
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def worker_main() -> None:
    """One model in a fresh process (so load time and peak RSS belong to it): job on stdin, result on stdout."""
    job = json.loads(sys.stdin.read())
    try:
        result = (llm_worker if job["kind"] == "genai" else classifier_worker)(job)
        print(json.dumps({"ok": True, **result}))
    except Exception as e:
        print(
            json.dumps(
                {"ok": False, "error": "%s: %s" % (type(e).__name__, str(e).splitlines()[0][:300] if str(e) else "")}
            )
        )


# -- the whole run -------------------------------------------------------------------------------------------
def _version_tuple(v: str | None) -> tuple:
    out = []
    for part in (v or "").split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)


def _median(values: list) -> float:
    v = sorted(values)
    return float(v[len(v) // 2]) if len(v) % 2 else float((v[len(v) // 2 - 1] + v[len(v) // 2]) / 2)


def merge_rounds(first: dict, rounds: list, first_only: tuple = ("first_ms", "first_inference_ms")) -> dict:
    """One row from each round's row of the same model and length: each float figure the median of the rounds'
    (p50: the median of the round p50s), the round p50s and their spread; the `first_only` figures (the first
    call) from the first round."""
    row = dict(first)
    for k, v in first.items():
        if isinstance(v, float) and k not in first_only:
            row[k] = _median([r[k] for r in rounds])
    p50s = [r["p50_ms"] for r in rounds]
    row["round_p50_ms"] = p50s
    row["spread"] = spread(p50s)
    return row


def row_spreads(results: list) -> dict:
    """Round spreads of the rows slow enough for a spread to mean load rather than timer jitter."""
    return {
        "%s seq %s" % (r["model"], r["seq_len"]): r.get("spread", 0.0)
        for r in results
        if r.get("p50_ms", 0) >= MIN_SPREAD_MS
    }


# -- the noise probe: is the machine quiet enough to believe a benchmark? -----------------------------------------
# Measured around the benchmark: the load average, the CPU time other processes took (the whole machine's busy time
# from /proc/stat minus this process tree's own CPU time) and the hypervisor's steal; and, across interleaved
# rounds, how far each model's round medians spread. `assess` judges figures measured elsewhere too: a phone's
# (edgetune/device/android.py), where the load average stands in for other processes' CPU time. The host benchmark,
# bench --adb and this runner on a board all use these definitions.
# Above these, a result is flagged busy (and `bench --strict` exits 1).
MAX_OTHER_CORES = 0.3  # other processes' CPU use during the benchmark, in cores on average
MAX_STEAL = 0.05  # share of CPU time the hypervisor gave to other guests
MAX_SPREAD = 0.20  # (max - min) / median of a model's round p50s
MIN_SPREAD_MS = 0.05  # spreads of rows faster than this are timer jitter, not load
# A phone (bench --adb), where the app's CPU time is not told from other processes': the 1-min load average that
# is not the benchmark's own, per core. Android counts tasks in uninterruptible sleep too, hence the loose bound.
MAX_LOAD_PER_CORE = 0.5


def _proc_stat() -> tuple[float, float, float] | None:
    """(busy, steal, total) CPU seconds of the whole machine since boot, or None without /proc/stat."""
    text = _read("/proc/stat")
    if not text:
        return None
    fields = text.splitlines()[0].split()[1:]
    ticks = [int(x) for x in fields]
    hz = os.sysconf("SC_CLK_TCK")
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    steal = ticks[7] if len(ticks) > 7 else 0
    total = sum(ticks[:8])
    return (total - idle - steal) / hz, steal / hz, total / hz


def _loadavg() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def _own_cpu() -> float:
    """CPU seconds of this process and its finished (waited-for) children."""
    import resource

    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


@dataclass
class Probe:
    """Started before a benchmark, finished after it."""

    t0: float
    stat0: tuple[float, float, float] | None
    own0: float
    load0: float | None

    @classmethod
    def start(cls) -> Probe:
        return cls(time.monotonic(), _proc_stat(), _own_cpu(), _loadavg())

    def finish(self, spreads: dict[str, float]) -> dict:
        """The noise record: figures, the verdict, and the reasons for it. `spreads` maps a row ('model seq') to
        its round spread, for rows slow enough for the spread to mean load."""
        elapsed = max(1e-9, time.monotonic() - self.t0)
        stat1, own = _proc_stat(), _own_cpu() - self.own0
        other = steal = None
        if self.stat0 and stat1:
            busy, st, total = (b - a for a, b in zip(self.stat0, stat1))
            other = max(0.0, (busy - own) / elapsed)
            steal = st / total if total > 0 else 0.0
        return assess(self.load0, _loadavg(), other, steal, spreads, os.cpu_count())


def assess(
    load_before: float | None,
    load_after: float | None,
    other_cores: float | None,
    steal: float | None,
    spreads: dict[str, float],
    cores: int | None,
    others_load: float | None = None,
) -> dict:
    """The noise record from figures measured here (Probe) or on a device (edgetune/device/android.py); None where a
    figure was not measured. Busy when other processes used more than MAX_OTHER_CORES, steal exceeded MAX_STEAL,
    a row's round spread exceeded MAX_SPREAD, or, where other processes' CPU time cannot be told from the
    benchmark's own (a phone), `others_load`, the load average others put on the machine, exceeded
    MAX_LOAD_PER_CORE of its cores."""
    worst = max(spreads.items(), key=lambda kv: kv[1], default=(None, 0.0))
    reasons = []
    if other_cores is not None and other_cores > MAX_OTHER_CORES:
        reasons.append(f"other processes used {other_cores:.2f} of {cores} cores")
    if others_load is not None and cores and others_load > MAX_LOAD_PER_CORE * cores:
        reasons.append(f"load average {others_load:.2f} on {cores} cores")
    if steal is not None and steal > MAX_STEAL:
        reasons.append(f"the hypervisor stole {steal:.0%} of the CPU")
    if worst[1] > MAX_SPREAD:
        reasons.append(f"round-to-round spread {worst[1]:.0%} ({worst[0]})")
    return {
        "load_before": None if load_before is None else round(load_before, 2),
        "load_after": None if load_after is None else round(load_after, 2),
        "other_cores": None if other_cores is None else round(other_cores, 3),
        "steal": None if steal is None else round(steal, 4),
        "max_spread": round(worst[1], 4),
        "busy": bool(reasons),
        "reasons": reasons,
    }


def spread(values: list[float]) -> float:
    """(max - min) / median of a model's round figures; 0 for one round."""
    import statistics

    if len(values) < 2:
        return 0.0
    mid = statistics.median(values)
    return (max(values) - min(values)) / mid if mid > 0 else 0.0


def verdict(noise: dict) -> str:
    """One line for the table and the report."""
    if not noise:
        return ""
    if noise["busy"]:
        return (
            "WARNING: the machine was busy during this benchmark ("
            + "; ".join(noise["reasons"])
            + "): ratios may be off by that much; rerun on a quiet machine (--strict exits 1 on this)"
        )
    if "cpu_busy" in noise:  # a phone (edgetune/device/android.py): the device's CPU use, the app's own included
        busy = noise["cpu_busy"]
        return (
            f"device quiet: round spread <= {noise['max_spread']:.0%}, load {noise['load_before']} -> "
            f"{noise['load_after']} on {noise.get('cores') or '?'} cores, CPU "
            f"{'?' if busy is None else f'{busy:.0%}'} busy (the app's own use included)"
        )
    other = noise.get("other_cores")
    return (
        f"machine quiet: other processes {other if other is not None else '?'} cores, round spread <= "
        f"{noise['max_spread']:.0%}, load {noise['load_before']} -> {noise['load_after']}"
    )


def run_model(entry: dict, job: dict, device: dict, host_versions: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker"], input=json.dumps(job), capture_output=True, text=True
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode == -4 or (proc.returncode != 0 and "Illegal instruction" in proc.stderr):
        raise RunnerError(
            "illegal_instruction",
            "%s: onnxruntime stopped on an illegal instruction: this CPU lacks "
            "an instruction set the installed wheel needs; try an older onnxruntime" % entry["file"],
        )
    if not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RunnerError(
            "crash", "%s: the worker exited with code %s: %s" % (entry["file"], proc.returncode, tail[:300])
        )
    msg = json.loads(lines[-1])
    if not msg["ok"]:
        module = "onnxruntime_genai" if job["kind"] == "genai" else "onnxruntime"
        mine, theirs = device.get(module), host_versions.get(module)
        if _version_tuple(mine) < _version_tuple(theirs):
            raise RunnerError(
                "runtime_version",
                "%s: %s (%s %s here, the bundle was made with %s): upgrade it with "
                "`python3 -m pip install -U %s`"
                % (entry["file"], msg["error"], module, mine, theirs, module.replace("_", "-")),
            )
        raise RunnerError("model", "%s: %s" % (entry["file"], msg["error"]))
    return msg


def run(args: argparse.Namespace) -> tuple:
    """The runner's JSON document and its exit code."""
    t0 = time.perf_counter()
    with open(os.path.join(HERE, "manifest.json")) as f:
        manifest = json.load(f)
    with open(os.path.join(HERE, manifest["golden"]["file"])) as f:
        golden = json.load(f)
    bundle = manifest["bundle"]
    defaults = bundle["defaults"]
    settings = {
        "threads": args.threads or defaults["threads"],
        "warmup": defaults["warmup"] if args.warmup is None else args.warmup,
        "runs": args.runs or defaults["runs"],
        "batch_size": 1,
        "sequence_lengths": args.seq or defaults["sequence_lengths"],
        "new_tokens": args.new_tokens or defaults["new_tokens"],
        "rounds": args.rounds or defaults.get("rounds", 1),
        "bench": not args.no_bench,
    }
    device = device_facts()
    doc = {
        "schema_version": SCHEMA_VERSION,
        "status": "error",
        "error": None,
        "bundle": {
            "target": bundle["target"],
            "task": manifest["task"],
            "recipe": manifest["recipe"],
            "model_sha256": manifest["model"]["sha256"],
            "precision": manifest["model"]["precision"],
        },
        "device": device,
        "settings": settings,
        "golden": None,
        "results": [],
        "models": {},
    }
    try:
        if sys.version_info < MIN_PYTHON:
            raise RunnerError(
                "python", "Python %s; the runner needs %d.%d or newer" % (platform.python_version(), *MIN_PYTHON)
            )
        problem = abi_problem(bundle["target"], device["arch"], device["bits"])
        if problem:
            raise RunnerError("abi", problem)
        check_modules(bundle["requires"])
        check_files(HERE, bundle["files"])
        golden_doc: dict = {"passed": True, "cases": len(golden["cases"]), "models": {}}
        if manifest["task"] == "causal-lm":
            golden_doc.update(
                kind="greedy", greedy_tokens=golden["greedy_tokens"], max_abs_diff_limit=golden["max_abs_diff"]
            )
        else:
            golden_doc.update(
                kind="logits", max_abs_diff_limit=golden["max_abs_diff"], min_cosine_limit=golden["min_cosine"]
            )
        probe = Probe.start()
        rounds = settings["rounds"] if settings["bench"] else 1
        msgs: dict = {entry["name"]: [] for entry in bundle["models"]}
        models = list(bundle["models"])
        for r in range(rounds):  # interleaved rounds, each model in a fresh process, the order rotated
            k = r % len(models)
            for entry in models[k:] + models[:k]:
                what = ("golden cases" if r == 0 else "") + (" and " if r == 0 and settings["bench"] else "")
                what += "benchmark (round %d/%d)" % (r + 1, rounds) if settings["bench"] else ""
                log("run_device: %s: %s ..." % (entry["file"], what))
                job = {
                    "kind": entry["format"],
                    "path": os.path.join(HERE, entry["file"]) if entry["format"] != "genai" else HERE,
                    "threads": settings["threads"],
                    "warmup": settings["warmup"] if settings["bench"] else 0,
                    "runs": max(1, -(-settings["runs"] // rounds)),
                    "seqs": settings["sequence_lengths"] if settings["bench"] else [],
                    "new_tokens": settings["new_tokens"],
                    "golden": golden if r == 0 else dict(golden, cases=[]),  # checked once
                    "labels": manifest.get("labels", []),
                    "chat": manifest.get("chat"),
                    "bundle": bundle,
                }
                msgs[entry["name"]].append(run_model(entry, job, device, manifest.get("versions", {})))
        for entry in models:
            got = msgs[entry["name"]]
            golden_doc["models"][entry["file"]] = got[0]["golden"]
            golden_doc["passed"] = golden_doc["passed"] and got[0]["golden"]["passed"]
            rss = [m["peak_rss_mb"] for m in got if m["peak_rss_mb"] is not None]
            doc["models"][entry["name"]] = {
                "file": entry["file"],
                "load_seconds": sorted(m["load_seconds"] for m in got)[len(got) // 2],
                "peak_rss_mb": max(rss) if rss else None,
                "size_bytes": entry["size_bytes"],
            }
            for i, row in enumerate(got[0]["per_seq"]):
                per_round = [m["per_seq"][i] for m in got]
                doc["results"].append({"model": entry["name"], "batch_size": 1, **merge_rounds(row, per_round)})
        doc["noise"] = probe.finish(row_spreads(doc["results"]))
        doc["golden"] = golden_doc
        doc["status"] = "ok" if golden_doc["passed"] else "golden_failed"
        code = 0 if golden_doc["passed"] else 1
    except RunnerError as e:
        doc["error"] = {"kind": e.kind, "message": e.message, **e.extra}
        code = 2 if e.kind in ENVIRONMENT_KINDS or e.kind == "corrupt" else 1
    doc["seconds"] = round(time.perf_counter() - t0, 3)
    return doc, code


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads [default: the recipe's]")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs first [default: the recipe's]")
    parser.add_argument("--runs", type=int, default=None, help="timed runs [default: the recipe's]")
    parser.add_argument("--seq", type=int, action="append", default=None, help="sequence length (repeat)")
    parser.add_argument("--new-tokens", type=int, default=None, help="causal LM: tokens per benchmark run")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved benchmark rounds [default: the recipe's]")
    parser.add_argument("--no-bench", action="store_true", help="only check the golden cases")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main()
        return 0
    doc, code = run(args)
    print(json.dumps(doc))
    return code


if __name__ == "__main__":
    sys.exit(main())
