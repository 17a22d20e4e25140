"""Device results kept in the run directory (devices/<device>.json, the latest run on each device and bundle
target) for the report, and the table the CLI prints for one."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

from edgetune.core.rundir import atomic_write_json, refuse_symlink

DEVICES_DIR = "devices"


def save_result(run_dir: Path, run) -> Path:
    """Write a DeviceRun into run_dir/devices/ (one file per device and target, replaced by a newer run)."""
    folder = Path(run_dir) / DEVICES_DIR
    refuse_symlink(folder)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{run.target.label()}-{run.doc['bundle']['target']}") + ".json"
    path = folder / name
    refuse_symlink(path)
    atomic_write_json(
        path,
        {
            **run.doc,
            "ssh": run.target.label(),
            "bundle_sha256": run.bundle_sha256,
            "copied": run.copied,
            "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        },
    )
    return path


def greedy_summary(m: dict) -> str:
    """A chat model's device golden result in words (the bench table and report.md share it)."""
    n = m["cases"]
    if "steps" not in m:  # a result from an edgetune before logit checks
        return f"greedy tokens equal to the host's on {round(m['agreement'] * n)}/{n} prompts"
    return (
        f"logits within {m['max_abs_diff_limit']:g} of PyTorch's at every token on {n - len(m['failures'])}/{n} "
        f"prompts (max|diff| {m['max_abs_diff']:.3g}; against the host's {m.get('max_abs_diff_host', 0):.3g}; "
        f"teacher-forced along the host's first {m['greedy_tokens']} greedy tokens); greedy tokens equal to the "
        f"host's on {round(m['agreement'] * n)}/{n} prompts ({round(m['step_agreement'] * m['steps'])}/"
        f"{m['steps']} tokens, {m['near_ties']} near ties); prompt tokens equal on "
        f"{round(m['tokenizer_agreement'] * n)}/{n}"
    )


def load_results(run_dir: Path) -> list[dict]:
    """Every device result saved in `run_dir`, oldest first."""
    folder = Path(run_dir) / DEVICES_DIR
    if folder.is_symlink() or not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob("*.json")):
        if path.is_symlink() or not path.is_file():
            continue
        try:
            doc = json.loads(path.read_text())
        except ValueError:
            continue  # a hand-edited or truncated file: the report leaves it out rather than fail
        if isinstance(doc, dict) and "device" in doc and "results" in doc:
            out.append(doc)
    return sorted(out, key=lambda d: d.get("finished", ""))


def host_results(run_dir: Path | None) -> dict:
    """The host benchmark's rows of the run (bench/bench.json), by (model, seq_len, threads)."""
    if run_dir is None:
        return {}
    path = Path(run_dir) / "bench" / "bench.json"
    try:
        rows = json.loads(path.read_text())["results"]
    except (OSError, ValueError, KeyError):
        return {}
    return {(r["model"], r["seq_len"], r.get("threads")): r for r in rows}


def device_line(doc: dict) -> str:
    d = doc["device"]
    emulated = {True: "EMULATED", False: "native", None: "emulation unknown"}[d.get("emulated")]
    return (
        f"device: {doc.get('ssh', '')} {d.get('board') or ''} | {d['cpu']} | {d['arch']}, {d['cores']} cores, "
        f"{(d.get('ram_mb') or 0) / 1024:.1f} GiB | {d['os']} | Python {d['python']}, onnxruntime "
        f"{d.get('onnxruntime')}"
        + (f", genai {d['onnxruntime_genai']}" if d.get("onnxruntime_genai") else "")
        + f" | {emulated}"
    ).replace("  ", " ")


def format_device(doc: dict, host: dict | None = None) -> str:
    """The host benchmark's table (edgetune/engines/bench/ format_benchmark) for a device run; the ratio
    column is device / host for the same model and workload, when the run's host benchmark has it."""
    host = host or {}
    s = doc["settings"]
    lines = [device_line(doc)]
    if doc["results"] and "decode_tokens_per_s" in doc["results"][0]:
        head = (
            f"{'model':<22}{'threads':>8}{'prompt':>7}{'TTFT ms':>9}{'prefill t/s':>12}{'decode t/s':>11}"
            f"{'x host':>8}{'RSS MB':>8}{'size MB':>9}"
        )
        lines += [head, "-" * len(head)]
        for r in doc["results"]:
            m = doc["models"][r["model"]]
            h = host.get((f"onnx_{doc['bundle']['precision']}", r["seq_len"], r["threads"]))
            ratio = f"{r['decode_tokens_per_s'] / h['decode_tokens_per_s']:.2f}" if h else "-"
            lines.append(
                f"{r['model']:<22}{r['threads']:>8}{r['seq_len']:>7}{r['ttft_ms']:>9.1f}"
                f"{r['prefill_tokens_per_s']:>12.1f}{r['decode_tokens_per_s']:>11.1f}{ratio:>8}"
                f"{m['peak_rss_mb']:>8.0f}{m['size_bytes'] / 1e6:>9.1f}"
            )
        return "\n".join(lines + _noise(doc))
    head = (
        f"{'model':<22}{'seq':>5}{'p50 ms':>9}{'spread':>8}{'p90 ms':>9}{'p99 ms':>9}{'items/s':>9}{'first ms':>9}"
        f"{'RSS MB':>8}{'size MB':>9}"
    )
    lines[0] += f" | threads {s['threads']} | batch 1 | {s['warmup']} warmup + {s['runs']} runs"
    lines += [head, "-" * len(head)]
    for r in doc["results"]:
        m = doc["models"][r["model"]]
        spread = f"{r['spread']:.0%}" if "spread" in r else "-"
        lines.append(
            f"{r['model']:<22}{r['seq_len']:>5}{r['p50_ms']:>9.2f}{spread:>8}{r['p90_ms']:>9.2f}{r['p99_ms']:>9.2f}"
            f"{r['throughput_per_s']:>9.1f}{r['first_ms']:>9.1f}{m['peak_rss_mb']:>8.0f}"
            f"{m['size_bytes'] / 1e6:>9.1f}"
        )
    return "\n".join(lines + _noise(doc))


def _noise(doc: dict) -> list[str]:
    """The host benchmark's verdict line, for the board's own measurement of its load."""
    from edgetune.runner import verdict

    noise = doc.get("noise")
    if not noise:
        return []
    rounds = doc["settings"].get("rounds", 1)
    return [f"p50: the median of {rounds} rounds' p50s on the board, each model in a fresh process", verdict(noise)]
