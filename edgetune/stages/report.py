"""report.json (stable keys, see README 'Reading the report') plus report.md and latency.png."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from .. import __version__
from ..artifacts import Report
from ..rundir import atomic_write_json, atomic_write_text

SCHEMA_VERSION = 1


def _summary(stages: dict[str, dict]) -> dict:
    models: dict[str, dict] = {}
    verify = stages.get("verify", {}).get("record", {})
    for name, metrics in verify.get("models", {}).items():
        models.setdefault(name, {})["eval"] = {k: v for k, v in metrics.items()}
    if "merge" in stages:
        models.setdefault("pytorch_fp32", {})["size_bytes"] = stages["merge"]["record"]["size_bytes"]
    if "export" in stages:
        models.setdefault("onnx_fp32", {})["size_bytes"] = stages["export"]["record"]["size_bytes"]
    for m in stages.get("quantize", {}).get("record", {}).get("models", []):
        models.setdefault(f"onnx_{m['precision']}", {})["size_bytes"] = m["size_bytes"]
    bench = stages.get("bench", {}).get("record", {})
    for r in bench.get("results", []):
        m = models.setdefault(r["model"], {})
        m.setdefault("p50_ms", {})[str(r["seq_len"])] = r["p50_ms"]
        if "p50_ratio_to_baseline" in r:
            m.setdefault("p50_ratio_to_baseline", {})[str(r["seq_len"])] = r["p50_ratio_to_baseline"]
    for name, info in bench.get("models", {}).items():
        models.setdefault(name, {})["peak_rss_mb"] = info["peak_rss_mb"]
    fp32 = models.get("onnx_fp32", {}).get("size_bytes")
    if fp32:
        for m in models.values():
            if "size_bytes" in m:
                m["size_ratio_to_onnx_fp32"] = m["size_bytes"] / fp32
    return {"models": models}


def _plot(bench: dict, path: Path) -> Path | None:
    results = bench.get("results", [])
    if not results:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["model"] for r in results))
    seqs = sorted({r["seq_len"] for r in results})
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for i, name in enumerate(names):
        vals = {r["seq_len"]: r["p50_ms"] for r in results if r["model"] == name}
        xs = [j + i * width for j in range(len(seqs))]
        bars = ax.bar(xs, [vals.get(s, 0) for s in seqs], width, label=name)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(seqs))], [f"seq {s}" for s in seqs])
    ax.set_ylabel("p50 latency (ms), lower is better")
    m = bench.get("machine", {})
    ax.set_title(f"batch {bench['settings']['batch_size']}, {m.get('threads')} threads, {m.get('cpu', '')[:40]}", fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _markdown(doc: dict, plot: Path | None) -> str:
    st = doc["stages"]
    out = [f"# edgetune report: {doc['recipe']['name']}", "",
           f"Result: **{'PASSED' if doc['passed'] else 'FAILED'}**, created {doc['created']} with edgetune {doc['edgetune_version']}.", ""]
    failed = [c for c in doc["checks"] if not c["passed"]]
    for c in failed:
        out.append(f"- FAILED {c['stage']}: {c['name']} = {_fmt(c['value'])} (must be {c['op']} {c['threshold']:g})")
    if failed:
        out.append("")
    summary = doc["summary"]["models"]
    out += ["## Summary", "", "| model | accuracy / exact match | size MB | size vs ONNX fp32 | " +
            " | ".join(f"p50 ms seq {s}" for s in _seqs(st)) + " |",
            "|---|---|---|---|" + "---|" * len(_seqs(st))]
    for name, m in summary.items():
        acc = _task_metric(m.get("eval", {}))
        cells = [name, _fmt(acc) if acc is not None else "-", _fmt(m.get("size_bytes", 0) / 1e6) if m.get("size_bytes") else "-",
                 _fmt(m["size_ratio_to_onnx_fp32"]) if "size_ratio_to_onnx_fp32" in m else "-"]
        for s in _seqs(st):
            p = m.get("p50_ms", {}).get(str(s))
            r = m.get("p50_ratio_to_baseline", {}).get(str(s))
            cells.append("-" if p is None else f"{p:.2f}" + (f" ({r:.2f}x)" if r is not None else ""))
        out.append("| " + " | ".join(cells) + " |")
    out += ["", "Latency ratios in parentheses are p50 divided by the PyTorch eager fp32 p50 at the same length (lower is better).", ""]
    if "finetune" in st:
        r = st["finetune"]
        out += ["## Fine-tune (LoRA)", "",
                f"{r['train_examples']} training rows, {r['eval_examples']} held-out rows; "
                f"{r['trainable_params']:,} trainable of {r['total_params']:,} parameters; {st['finetune']['seconds']:.1f} s.", "",
                "| epoch | loss | " + " | ".join(k for k in r["epochs"][0] if k.startswith("eval_")) + " | seconds |",
                "|---|---|" + "---|" * sum(k.startswith("eval_") for k in r["epochs"][0]) + "---|"]
        for e in r["epochs"]:
            out.append(f"| {e['epoch']} | {e['loss']:.4f} | " + " | ".join(_fmt(v) for k, v in e.items() if k.startswith("eval_")) + f" | {e['seconds']} |")
        out.append("")
    if "merge" in st:
        r = st["merge"]
        out += ["## Merge", "", f"max |merged - adapter| on held-out outputs: {r['merge_max_abs_diff']:.3g}; "
                f"merged accuracy {_fmt(r['eval_metrics'].get('accuracy'))}; weights {r['size_bytes'] / 1e6:.1f} MB.", ""]
    for stage in ("export", "quantize"):
        if stage in st:
            out += [f"## {stage.capitalize()}", ""]
            for r in st[stage].get("models", [st[stage]]):
                out += [f"`{r['path']}`: {r['precision']}, {r['size_bytes'] / 1e6:.1f} MB, {len(r['inputs'])} inputs "
                        f"({', '.join(r['inputs'][:3])}{', ...' if len(r['inputs']) > 3 else ''}); sha256 `{r['sha256'][:16]}`.", "",
                        "Notes: " + ", ".join(f"{k}: {v}" for k, v in r["notes"].items()), ""]
    if "verify" in st:
        r = st["verify"]
        out += ["## Verify (parity on the held-out split)", "", f"{r['rows']} rows. Details: `{r['details_path']}`.", "",
                "| model | accuracy / exact match | max abs diff | min cosine | top-1 agreement |", "|---|---|---|---|---|"]
        for name, m in r["models"].items():
            out.append(f"| {name} | {_fmt(_task_metric(m))} | {_fmt(m.get('max_abs_diff', 0.0))} | "
                       f"{_fmt(m.get('min_cosine', 1.0))} | {_fmt(m.get('top1_agreement', 1.0))} |")
        out += ["", "| check | value | threshold | result |", "|---|---|---|---|"]
        for c in r["checks"]:
            out.append(f"| {c['stage']} {c['name']} | {_fmt(c['value'])} | {c['op']} {c['threshold']:g} | {'pass' if c['passed'] else 'FAIL'} |")
        out.append("")
    if "package" in st:
        r = st["package"]
        out += ["## Package (Android demo app)", "",
                f"`{r['path']}`: {', '.join(r['files'])}; {r['size_bytes'] / 1e6:.1f} MB; model sha256 "
                f"`{r['model_sha256'][:16]}`; {r['golden_cases']} golden cases reproduced in ONNX Runtime.", ""]
    if "bench" in st:
        r = st["bench"]
        m = r["machine"]
        out += ["## Benchmark", "", f"{m.get('cpu')}, {m.get('cores')} cores, {m.get('threads')} intra-op threads; "
                f"onnxruntime {m.get('onnxruntime')}, torch {m.get('torch', '-')}; batch {r['settings']['batch_size']}, "
                f"{r['settings']['warmup']} warmup + {r['settings']['runs']} timed runs; each model in a fresh process.", ""]
        if plot:
            out += [f"![latency]({plot.name})", ""]
        if r["results"] and "decode_tokens_per_s" in r["results"][0]:
            out += ["| model | threads | prompt tokens | TTFT ms | prefill tok/s | decode tok/s | decode vs PyTorch |",
                    "|---|---|---|---|---|---|---|"]
            for x in r["results"]:
                out.append(f"| {x['model']} | {x['threads']} | {x['seq_len']} | {x['ttft_ms']:.1f} | {x['prefill_tokens_per_s']:.1f} | "
                           f"{x['decode_tokens_per_s']:.1f} | {x['decode_speedup_vs_baseline']:.2f}x |")
        else:
            out += ["| model | seq | p50 ms | p90 ms | p99 ms | items/s | p50 / baseline | first ms |", "|---|---|---|---|---|---|---|---|"]
        for x in r["results"] if "decode_tokens_per_s" not in (r["results"] or [{}])[0] else []:
            ratio = f"{x['p50_ratio_to_baseline']:.3f}" if "p50_ratio_to_baseline" in x else "-"
            out.append(f"| {x['model']} | {x['seq_len']} | {x['p50_ms']:.2f} | {x['p90_ms']:.2f} | {x['p99_ms']:.2f} | "
                       f"{x['throughput_per_s']:.1f} | {ratio} | {x['first_ms']:.1f} |")
        out += ["", "| model | load s | peak RSS MB | size MB |", "|---|---|---|---|"]
        for name, x in r["models"].items():
            out.append(f"| {name} | {x['load_seconds']:.2f} | {x['peak_rss_mb']:.0f} | {x['size_bytes'] / 1e6:.1f} |")
        out.append("")
    return "\n".join(out)


def headline(metrics: dict) -> tuple[str, float] | None:
    """The task's headline figure: accuracy (classification) or JSON exact match / perplexity (causal-lm)."""
    for key in ("accuracy", "json_exact_match", "perplexity"):
        if key in metrics:
            return key, metrics[key]
    return None


def _task_metric(metrics: dict) -> float | None:
    found = headline(metrics)
    return found[1] if found else None


def _seqs(st: dict) -> list[int]:
    return sorted({r["seq_len"] for r in st.get("bench", {}).get("results", [])})


def report(stages: dict[str, dict], recipe: dict, out: Path) -> Report:
    """Write out/report.json, out/report.md and out/latency.png from the stages' records and timings."""
    checks = stages.get("verify", {}).get("record", {}).get("checks", [])
    doc = {
        "schema_version": SCHEMA_VERSION,
        "edgetune_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "recipe": recipe,
        "passed": all(c["passed"] for c in checks) and "verify" in stages,
        "checks": checks,
        "summary": _summary(stages),
        "stages": {name: {**s["record"], "seconds": s["seconds"]} for name, s in stages.items()},
    }
    plot = _plot(stages.get("bench", {}).get("record", {}), out / "latency.png")
    atomic_write_json(out / "report.json", doc)
    md = out / "report.md"
    atomic_write_text(md, _markdown(doc, plot))
    return Report(json_path=out / "report.json", markdown_path=md, plot_path=plot)
