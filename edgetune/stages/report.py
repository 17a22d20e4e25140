"""report.json (stable keys, see README 'Reading the report') plus report.md and latency.png."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
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
    out += _devices_markdown(doc.get("devices", []))
    return "\n".join(out)


def _devices_markdown(devices: list[dict]) -> list[str]:
    """The 'On devices' section: each board's facts, golden check and benchmark (edgetune bench --ssh)."""
    if not devices:
        return []
    out = ["## On devices", "",
           "Measured with `edgetune bench RUN_DIR --ssh USER@HOST`: the device bundle's run_device.py on the board "
           "(classifier rows: a text in, logits out, the tokenizer inside the graph; the text is built to the row's "
           "token count). EMULATED rows ran under an emulator on another machine: their golden check holds, their "
           "timings say nothing about the real board.", ""]
    for d in devices:
        dev, g = d["device"], d.get("golden") or {}
        flag = {True: "**EMULATED**", False: "native", None: "emulation unknown"}[dev.get("emulated")]
        out += [f"### {d.get('ssh', '?')}: {dev.get('board') or dev['cpu']} ({dev['arch']}, {flag})", "",
                f"{dev['cpu']}; {dev['cores']} cores, {(dev.get('ram_mb') or 0) / 1024:.1f} GiB RAM; {dev['os']}, "
                f"kernel {dev['kernel']}; Python {dev['python']}, onnxruntime {dev.get('onnxruntime')}"
                + (f", onnxruntime-genai {dev['onnxruntime_genai']}" if dev.get("onnxruntime_genai") else "")
                + f"; CPU features for ML: {', '.join(dev.get('ml_features') or []) or 'none listed'}. "
                f"Bundle {d['bundle']['target']}, model sha256 `{d['bundle']['model_sha256'][:16]}`, run "
                f"{d.get('finished', '')}.", "", f"Emulation: {dev.get('emulation_evidence')}.", ""]
        for name, m in (g.get("models") or {}).items():
            if g.get("kind") == "greedy":
                out.append(f"- golden `{name}`: greedy tokens equal to the host's on {m['agreement']:.3f} of "
                           f"{m['cases']} prompts (must be >= {m['min_agreement']:g}); prompt tokens equal "
                           f"{m['tokenizer_agreement']:.3f}: **{'pass' if m['passed'] else 'FAIL'}**")
            else:
                out.append(f"- golden `{name}`: {m['cases'] - len(m['failures'])}/{m['cases']} cases within tolerance "
                           f"(max abs diff {m['max_abs_diff']:.3g} <= {g.get('max_abs_diff_limit')}, min cosine "
                           f"{m['min_cosine']:.6f} >= {g.get('min_cosine_limit')}): **{'pass' if m['passed'] else 'FAIL'}**")
        s = d["settings"]
        out += ["", f"{s['threads']} threads, {s['warmup']} warmup + {s['runs']} timed runs, each model in a fresh "
                    f"process.", ""]
        rows = d.get("results") or []
        if rows and "decode_tokens_per_s" in rows[0]:
            out += ["| model | threads | prompt tokens | TTFT ms | prefill tok/s | decode tok/s | peak RSS MB |",
                    "|---|---|---|---|---|---|---|"]
            out += [f"| {x['model']} | {x['threads']} | {x['seq_len']} | {x['ttft_ms']:.1f} | "
                    f"{x['prefill_tokens_per_s']:.1f} | {x['decode_tokens_per_s']:.1f} | "
                    f"{d['models'][x['model']]['peak_rss_mb']:.0f} |" for x in rows]
        elif rows:
            out += ["| model | seq | p50 ms | p90 ms | p99 ms | items/s | first ms | peak RSS MB |",
                    "|---|---|---|---|---|---|---|---|"]
            out += [f"| {x['model']} | {x['seq_len']} | {x['p50_ms']:.2f} | {x['p90_ms']:.2f} | {x['p99_ms']:.2f} | "
                    f"{x['throughput_per_s']:.1f} | {x['first_ms']:.1f} | {d['models'][x['model']]['peak_rss_mb']:.0f} |"
                    for x in rows]
        out.append("")
    return out


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


def report(stages: dict[str, dict], recipe: dict, out: Path, devices: list[dict] | None = None) -> Report:
    """Write out/report.json, out/report.md and out/latency.png from the stages' records and timings.

    `devices`: results of `edgetune bench --ssh`; by default those saved in the run directory that holds `out`.
    """
    from ..device.results import load_results

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
        "devices": load_results(Path(out).parent) if devices is None else devices,
    }
    plot = _plot(stages.get("bench", {}).get("record", {}), out / "latency.png")
    atomic_write_json(out / "report.json", doc)
    md = out / "report.md"
    atomic_write_text(md, _markdown(doc, plot))
    return Report(json_path=out / "report.json", markdown_path=md, plot_path=plot)


def add_devices(run_dir: Path) -> Path | None:
    """Put the device results saved in `run_dir` into its finished report (report.json `devices`, report.md);
    None when the run has no report yet (the next one written will have them)."""
    from ..device.results import load_results
    from ..rundir import RunDir

    with RunDir(run_dir) as run:
        entry = run.entry("report")
        folder = run.stage_dir("report")
        if entry is None or not (folder / "report.json").is_file():
            return None
        doc = json.loads((folder / "report.json").read_text())
        doc["devices"] = load_results(run.root)
        plot = folder / "latency.png"
        atomic_write_json(folder / "report.json", doc)
        atomic_write_text(folder / "report.md", _markdown(doc, plot if plot.is_file() else None))
        # the manifest records the report's files as they are now
        run.write_entry("report", dataclasses.replace(entry, outputs=run.hash_outputs("report")))
        return folder / "report.md"
