"""report.json (stable keys, see README 'Reading the report') plus report.md and latency.png."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

from .. import __version__
from ..artifacts import Adapter, Benchmark, MergedModel, Package, Report, Student, Verification, from_json, to_json
from ..device.results import greedy_summary
from ..rundir import atomic_write_json, atomic_write_text
from .base import BaseStage, BuildContext, Key

SCHEMA_VERSION = 1


class ReportStage(BaseStage):
    """report.json, report.md and latency.png from every record of the build (and the device results saved in
    the run directory)."""

    name = "report"
    needs = ("finetune", "merge", "compress", "export", "quantize", "verify", "package", "bench")  # those it has
    record = Report

    def key(self, ctx: BuildContext) -> Key:
        r = ctx.recipe
        return Key([SCHEMA_VERSION, _recipe_facts(r)], [devices_fingerprint(ctx.run.root)])

    def run(self, ctx: BuildContext, inputs: dict, out: Path) -> Report:
        seconds = {name: e.seconds for name in inputs if (e := ctx.run.entry(name)) is not None}
        return report(inputs, seconds, _recipe_facts(ctx.recipe), out, ctx.run.root)


def _recipe_facts(r: Any) -> dict:
    return {"name": r.name, "task": r.task, "model": r.model.source}


def devices_fingerprint(run_dir: Path) -> str:
    """A hash of the device results saved in the run directory: a new `bench --ssh` result changes it."""
    from ..data import file_sha256
    from ..device.results import DEVICES_DIR

    folder = Path(run_dir) / DEVICES_DIR
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    return ",".join(f"{f.name}:{file_sha256(f)}" for f in files)


def _summary(records: dict[str, Any]) -> dict:
    models: dict[str, dict] = {}
    verify: Verification | None = records.get("verify")
    for name, metrics in (verify.models if verify else {}).items():
        models.setdefault(name, {})["eval"] = dict(metrics)
    trained = records.get("compress") or records.get("merge")  # what verify and bench call pytorch_fp32
    if trained is not None:
        models.setdefault("pytorch_fp32", {})["size_bytes"] = trained.size_bytes
    if "export" in records:
        models.setdefault("onnx_fp32", {})["size_bytes"] = records["export"].size_bytes
    for m in records["quantize"].models if "quantize" in records else []:
        models.setdefault(f"onnx_{m.precision}", {})["size_bytes"] = m.size_bytes
    bench: Benchmark | None = records.get("bench")
    for r in bench.results if bench else []:
        m = models.setdefault(r["model"], {})
        m.setdefault("p50_ms", {})[str(r["seq_len"])] = r["p50_ms"]
        if "p50_ratio_to_baseline" in r:
            m.setdefault("p50_ratio_to_baseline", {})[str(r["seq_len"])] = r["p50_ratio_to_baseline"]
    for name, info in (bench.models if bench else {}).items():
        models.setdefault(name, {})["peak_rss_mb"] = info["peak_rss_mb"]
    fp32 = models.get("onnx_fp32", {}).get("size_bytes")
    if fp32:
        for m in models.values():
            if "size_bytes" in m:
                m["size_ratio_to_onnx_fp32"] = m["size_bytes"] / fp32
    return {"models": models}


def _tradeoff_plot(records: dict[str, Any], root: Path, path: Path) -> Path | None:
    """quantize.auto's candidates (and the peers' builds from RUN_DIR/peers.json, benchmarks/peers.py): p50 at
    the search's length against held-out accuracy, marker area by size, the chosen build marked."""
    q = records.get("quantize")
    auto = q.models[0].notes.get("auto") if q is not None and q.models else None
    if not auto:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    rows = auto["candidates"]
    sizes = [max(20.0, r["size_bytes"] / 1e6 * 8) for r in rows]
    colors = ["tab:green" if r["passed"] else "tab:gray" for r in rows]
    ax.scatter([r["p50_ms"] for r in rows], [r["accuracy"] for r in rows], s=sizes, c=colors, alpha=0.7)
    for r in rows:
        label = r["name"] + (" (chosen)" if r["name"] == auto["chosen"] else "")
        ax.annotate(label, (r["p50_ms"], r["accuracy"]), fontsize=7, xytext=(4, 4), textcoords="offset points")
    chosen = next(r for r in rows if r["name"] == auto["chosen"])
    ax.scatter([chosen["p50_ms"]], [chosen["accuracy"]], marker="*", s=250, c="tab:red", zorder=3)
    peers = root / "peers.json"
    if peers.is_file():
        seq = str(auto["timed_at"]["seq"])
        for name, p in json.loads(peers.read_text()).get("builds", {}).items():
            if seq in p.get("p50_ms", {}) and p.get("accuracy") is not None:
                ax.scatter(
                    [p["p50_ms"][seq]],
                    [p["accuracy"]],
                    marker="^",
                    s=max(20.0, p.get("size_mb", 1) * 8),
                    c="tab:blue",
                    alpha=0.6,
                )
                ax.annotate(
                    name, (p["p50_ms"][seq], p["accuracy"]), fontsize=7, xytext=(4, -10), textcoords="offset points"
                )
    t = auto["timed_at"]
    ax.set_xlabel(f"p50 ms at seq {t['seq']}, batch {t['batch']}, {t['threads']} threads (lower is better)")
    ax.set_ylabel("held-out accuracy")
    ax.set_title("int8 candidates (green: within verify's budgets; area: size; star: chosen)", fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


def _plot(bench: Benchmark | None, path: Path) -> Path | None:
    results = bench.results if bench else []
    if not bench or not results:
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
    m = bench.machine
    ax.set_title(
        f"batch {bench.settings['batch_size']}, {m.get('threads')} threads, {m.get('cpu', '')[:40]}", fontsize=8
    )
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


def _markdown(
    doc: dict, records: dict[str, Any], seconds: dict[str, float], plot: Path | None, tradeoff: Path | None = None
) -> str:
    """report.md: the summary from `doc` (report.json), each stage's section from its record."""
    out = [
        f"# edgetune report: {doc['recipe']['name']}",
        "",
        f"Result: **{'PASSED' if doc['passed'] else 'FAILED'}**, created {doc['created']} with edgetune {doc['edgetune_version']}.",
        "",
    ]
    failed = [c for c in doc["checks"] if not c["passed"]]
    for c in failed:
        out.append(f"- FAILED {c['stage']}: {c['name']} = {_fmt(c['value'])} (must be {c['op']} {c['threshold']:g})")
    if failed:
        out.append("")
    bench: Benchmark | None = records.get("bench")
    seqs = sorted({r["seq_len"] for r in bench.results}) if bench else []
    summary = doc["summary"]["models"]
    out += [
        "## Summary",
        "",
        "| model | accuracy / exact match | size MB | size vs ONNX fp32 | "
        + " | ".join(f"p50 ms seq {s}" for s in seqs)
        + " |",
        "|---|---|---|---|" + "---|" * len(seqs),
    ]
    for name, m in summary.items():
        acc = _task_metric(m.get("eval", {}))
        cells = [
            name,
            _fmt(acc) if acc is not None else "-",
            _fmt(m.get("size_bytes", 0) / 1e6) if m.get("size_bytes") else "-",
            _fmt(m["size_ratio_to_onnx_fp32"]) if "size_ratio_to_onnx_fp32" in m else "-",
        ]
        for s in seqs:
            p = m.get("p50_ms", {}).get(str(s))
            r = m.get("p50_ratio_to_baseline", {}).get(str(s))
            cells.append("-" if p is None else f"{p:.2f}" + (f" ({r:.2f}x)" if r is not None else ""))
        out.append("| " + " | ".join(cells) + " |")
    out += [
        "",
        "Latency ratios in parentheses are p50 divided by the PyTorch eager fp32 p50 at the same length (lower is better).",
        "",
    ]
    ft: Adapter | None = records.get("finetune")
    if ft is not None:
        evals = [k for k in ft.epochs[0] if k.startswith("eval_")] if ft.epochs else []
        out += [
            "## Fine-tune (LoRA)",
            "",
            f"{ft.train_examples} training rows, {ft.eval_examples} held-out rows; "
            f"{ft.trainable_params:,} trainable of {ft.total_params:,} parameters; {seconds.get('finetune', 0.0):.1f} s.",
            "",
            "| epoch | loss | " + " | ".join(evals) + " | seconds |",
            "|---|---|" + "---|" * len(evals) + "---|",
        ]
        for e in ft.epochs:
            out.append(
                f"| {e['epoch']} | {e['loss']:.4f} | " + " | ".join(_fmt(e[k]) for k in evals) + f" | {e['seconds']} |"
            )
        out.append("")
    merged: MergedModel | None = records.get("merge")
    if merged is not None:
        found = headline(merged.eval_metrics)
        figure = f"merged {found[0].replace('_', ' ')} {_fmt(found[1])}; " if found else ""
        out += [
            "## Merge",
            "",
            f"max |merged - adapter| on held-out outputs: {merged.merge_max_abs_diff:.3g}; "
            f"{figure}weights {merged.size_bytes / 1e6:.1f} MB.",
            "",
        ]
    student: Student | None = records.get("compress")
    if student is not None:
        st = student.settings
        out += [
            "## Compress (a distilled student)",
            "",
            f"The student keeps teacher layers {student.kept_layers} of {student.teacher_layers}: "
            f"{student.student_parameters:,} parameters (teacher {student.teacher_parameters:,}); held-out accuracy "
            f"{student.eval_metrics.get('accuracy', 0):.4f} (teacher {student.teacher_accuracy:.4f}); distilled for "
            f"{len(student.epochs)} epochs in {st.get('seconds', 0):.0f} s. From here on, `pytorch_fp32` and the "
            f"ONNX models are the student's.",
            "",
            "| epoch | loss | kd loss | ce loss | held-out accuracy | seconds |",
            "|---|---|---|---|---|---|",
        ]
        for e in student.epochs:
            acc = "-" if e.get("eval_accuracy") is None else f"{e['eval_accuracy']:.4f}"
            out.append(
                f"| {e['epoch']} | {e['loss']:.4f} | {e['kd_loss']:.4f} | {e['ce_loss']:.4f} | {acc} | "
                f"{e['seconds']:.1f} |"
            )
        out.append("")
    onnx_models = [
        (n, [records[n]] if n == "export" else records[n].models) for n in ("export", "quantize") if n in records
    ]
    for stage, models in onnx_models:
        out += [f"## {stage.capitalize()}", ""]
        for m in models:
            out += [
                f"`{_rel(m.path, doc)}`: {m.precision}, {m.size_bytes / 1e6:.1f} MB, {len(m.inputs)} inputs "
                f"({', '.join(m.inputs[:3])}{', ...' if len(m.inputs) > 3 else ''}); sha256 `{m.sha256[:16]}`.",
                "",
                "Notes: " + ", ".join(f"{k}: {v}" for k, v in m.notes.items() if k != "auto"),
                "",
            ]
            out += _auto_markdown(m.notes.get("auto"), tradeoff)
    v: Verification | None = records.get("verify")
    if v is not None:
        out += [
            "## Verify (parity on the held-out split)",
            "",
            f"{v.rows} rows. Details: `{_rel(v.details_path, doc)}`.",
            "",
            "| model | accuracy / exact match | max abs diff | min cosine | top-1 agreement |",
            "|---|---|---|---|---|",
        ]
        for name, m in v.models.items():
            out.append(
                f"| {name} | {_fmt(_task_metric(m))} | {_fmt(m.get('max_abs_diff', 0.0))} | "
                f"{_fmt(m.get('min_cosine', 1.0))} | {_fmt(m.get('top1_agreement', 1.0))} |"
            )
        out += ["", "| check | value | threshold | result |", "|---|---|---|---|"]
        for c in v.checks:
            out.append(
                f"| {c.stage} {c.name} | {_fmt(c.value)} | {c.op} {c.threshold:g} | {'pass' if c.passed else 'FAIL'} |"
            )
        out.append("")
    pkg: Package | None = records.get("package")
    if pkg is not None:
        out += [
            "## Package (Android demo app)",
            "",
            f"`{_rel(pkg.path, doc)}`: {', '.join(pkg.files)}; {pkg.size_bytes / 1e6:.1f} MB; model sha256 "
            f"`{pkg.model_sha256[:16]}`; {pkg.golden_cases} golden cases reproduced in ONNX Runtime.",
            "",
        ]
    if bench is not None:
        m, st = bench.machine, bench.settings
        out += [
            "## Benchmark",
            "",
            f"{m.get('cpu')}, {m.get('cores')} cores, {m.get('threads')} intra-op threads; "
            f"onnxruntime {m.get('onnxruntime')}, torch {m.get('torch', '-')}; batch {st['batch_size']}, "
            f"{st['warmup']} warmup + {st['runs']} timed runs; each model in a fresh process.",
            "",
        ]
        if bench.noise:
            from ..noise import verdict

            out += [verdict(bench.noise) + ".", ""]
        if plot:
            out += [f"![latency]({plot.name})", ""]
        if bench.kind == "decode":
            out += [
                "| model | threads | prompt tokens | TTFT ms | prefill tok/s | decode tok/s | decode vs PyTorch |",
                "|---|---|---|---|---|---|---|",
            ]
            for x in bench.results:
                out.append(
                    f"| {x['model']} | {x['threads']} | {x['seq_len']} | {x['ttft_ms']:.1f} | {x['prefill_tokens_per_s']:.1f} | "
                    f"{x['decode_tokens_per_s']:.1f} | {x['decode_speedup_vs_baseline']:.2f}x |"
                )
        else:
            out += [
                "| model | seq | p50 ms | p90 ms | p99 ms | items/s | p50 / baseline | first ms |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for x in bench.results:
                ratio = f"{x['p50_ratio_to_baseline']:.3f}" if "p50_ratio_to_baseline" in x else "-"
                out.append(
                    f"| {x['model']} | {x['seq_len']} | {x['p50_ms']:.2f} | {x['p90_ms']:.2f} | {x['p99_ms']:.2f} | "
                    f"{x['throughput_per_s']:.1f} | {ratio} | {x['first_ms']:.1f} |"
                )
        out += ["", "| model | load s | peak RSS MB | size MB |", "|---|---|---|---|"]
        for name, x in bench.models.items():
            out.append(f"| {name} | {x['load_seconds']:.2f} | {x['peak_rss_mb']:.0f} | {x['size_bytes'] / 1e6:.1f} |")
        out.append("")
    out += _devices_markdown(doc.get("devices", []))
    return "\n".join(out)


def _auto_markdown(auto: dict | None, tradeoff: Path | None) -> list[str]:
    """quantize.auto's candidates: each one's figures, and which one was kept."""
    if not auto:
        return []
    t = auto["timed_at"]
    out = [
        f"quantize.auto kept **{auto['chosen']}**: the fastest candidate within verify's int8 budgets (timed at seq "
        f"{t['seq']}, batch {t['batch']}, {t['threads']} threads, median of {t['rounds']} interleaved rounds; "
        f"candidates within the timing noise of the fastest count as ties, won by the first listed).",
        "",
        "| candidate | held-out accuracy | drop | top-1 agreement | mean cosine | p50 ms | spread | size MB | passed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in auto["candidates"]:
        out.append(
            f"| {r['name']} | {r['accuracy']:.4f} | {r['accuracy_drop']:.4f} | {r['top1_agreement']:.4f} | "
            f"{r['mean_cosine']:.4f} | {r['p50_ms']:.2f} | {r['spread']:.0%} | {r['size_bytes'] / 1e6:.1f} | "
            f"{'yes' if r['passed'] else 'no'} |"
        )
    out.append("")
    if tradeoff:
        out += [f"![latency vs accuracy]({tradeoff.name})", ""]
    return out


def _rel(path: Path | None, doc: dict) -> str:
    """A record's path as report.json shows it (relative to the run directory)."""
    root = Path(doc.get("run_dir", "/"))
    try:
        return Path(path).relative_to(root).as_posix() if path is not None else "-"
    except ValueError:
        return str(path)


def _devices_markdown(devices: list[dict]) -> list[str]:
    """The 'On devices' section: each board's facts, golden check and benchmark (edgetune bench --ssh)."""
    if not devices:
        return []
    out = [
        "## On devices",
        "",
        "Measured with `edgetune bench RUN_DIR --ssh USER@HOST`: the device bundle's run_device.py on the board "
        "(classifier rows: a text in, logits out, the tokenizer inside the graph; the text is built to the row's "
        "token count). EMULATED rows ran under an emulator on another machine: their golden check holds, their "
        "timings say nothing about the real board.",
        "",
    ]
    for d in devices:
        dev, g = d["device"], d.get("golden") or {}
        flag = {True: "**EMULATED**", False: "native", None: "emulation unknown"}[dev.get("emulated")]
        out += [
            f"### {d.get('ssh', '?')}: {dev.get('board') or dev['cpu']} ({dev['arch']}, {flag})",
            "",
            f"{dev['cpu']}; {dev['cores']} cores, {(dev.get('ram_mb') or 0) / 1024:.1f} GiB RAM; {dev['os']}, "
            f"kernel {dev['kernel']}; Python {dev['python']}, onnxruntime {dev.get('onnxruntime')}"
            + (f", onnxruntime-genai {dev['onnxruntime_genai']}" if dev.get("onnxruntime_genai") else "")
            + f"; CPU features for ML: {', '.join(dev.get('ml_features') or []) or 'none listed'}. "
            f"Bundle {d['bundle']['target']}, model sha256 `{d['bundle']['model_sha256'][:16]}`, run "
            f"{d.get('finished', '')}.",
            "",
            f"Emulation: {dev.get('emulation_evidence')}.",
            "",
        ]
        for name, m in (g.get("models") or {}).items():
            if g.get("kind") == "greedy":
                out.append(f"- golden `{name}`: {greedy_summary(m)}: **{'pass' if m['passed'] else 'FAIL'}**")
            else:
                out.append(
                    f"- golden `{name}`: {m['cases'] - len(m['failures'])}/{m['cases']} cases within tolerance "
                    f"(max abs diff {m['max_abs_diff']:.3g} <= {g.get('max_abs_diff_limit')}, min cosine "
                    f"{m['min_cosine']:.6f} >= {g.get('min_cosine_limit')}): **{'pass' if m['passed'] else 'FAIL'}**"
                )
        s = d["settings"]
        out += [
            "",
            f"{s['threads']} threads, {s['warmup']} warmup + {s['runs']} timed runs, each model in a fresh process.",
            "",
        ]
        rows = d.get("results") or []
        if g.get("kind") == "greedy":  # a chat model's bundle: decode rows
            out += [
                "| model | threads | prompt tokens | TTFT ms | prefill tok/s | decode tok/s | peak RSS MB |",
                "|---|---|---|---|---|---|---|",
            ]
            out += [
                f"| {x['model']} | {x['threads']} | {x['seq_len']} | {x['ttft_ms']:.1f} | "
                f"{x['prefill_tokens_per_s']:.1f} | {x['decode_tokens_per_s']:.1f} | "
                f"{d['models'][x['model']]['peak_rss_mb']:.0f} |"
                for x in rows
            ]
        elif rows:
            out += [
                "| model | seq | p50 ms | p90 ms | p99 ms | items/s | first ms | peak RSS MB |",
                "|---|---|---|---|---|---|---|---|",
            ]
            out += [
                f"| {x['model']} | {x['seq_len']} | {x['p50_ms']:.2f} | {x['p90_ms']:.2f} | {x['p99_ms']:.2f} | "
                f"{x['throughput_per_s']:.1f} | {x['first_ms']:.1f} | {d['models'][x['model']]['peak_rss_mb']:.0f} |"
                for x in rows
            ]
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


def report(
    records: dict[str, Any],
    seconds: dict[str, float],
    recipe: dict,
    out: Path,
    root: Path,
    devices: list[dict] | None = None,
) -> Report:
    """Write out/report.json, out/report.md and out/latency.png from the stages' records and timings.

    `root`: the run directory (paths in report.json are relative to it). `devices`: results of `edgetune bench
    --ssh`; by default those saved in `root`.
    """
    from ..device.results import load_results

    v: Verification | None = records.get("verify")
    checks = [to_json(c, root) for c in v.checks] if v else []
    doc = {
        "schema_version": SCHEMA_VERSION,
        "edgetune_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "recipe": recipe,
        "passed": v is not None and v.passed,
        "checks": checks,
        "summary": _summary(records),
        "stages": {name: {**to_json(rec, root), "seconds": seconds.get(name)} for name, rec in records.items()},
        "devices": load_results(root) if devices is None else devices,
    }
    plot = _plot(records.get("bench"), out / "latency.png")
    tradeoff = _tradeoff_plot(records, root, out / "tradeoff.png")
    atomic_write_json(out / "report.json", doc)
    md = out / "report.md"
    atomic_write_text(md, _markdown({**doc, "run_dir": str(root)}, records, seconds, plot, tradeoff))
    return Report(json_path=out / "report.json", markdown_path=md, plot_path=plot)


def add_devices(run_dir: Path) -> Path | None:
    """Put the device results saved in `run_dir` into its finished report (report.json `devices`, report.md);
    None when the run has no report yet (the next one written will have them)."""
    from ..device.results import load_results
    from ..rundir import RunDir
    from ..tasks import get_task

    with RunDir(run_dir) as run:
        entry = run.entry("report")
        folder = run.stage_dir("report")
        if entry is None or not (folder / "report.json").is_file():
            return None
        doc = json.loads((folder / "report.json").read_text())
        doc["devices"] = load_results(run.root)
        types = {st.name: st.record for st in get_task(doc["recipe"]["task"]).stages()}
        records, seconds = {}, {}
        for name in doc["stages"]:
            e = run.entry(name)
            if e is not None and name in types:
                try:
                    records[name] = from_json(types[name], e.record, run.root)
                except (KeyError, TypeError):  # written by an older edgetune: the next report will be whole
                    return None
                seconds[name] = e.seconds
        plot = folder / "latency.png"
        atomic_write_json(folder / "report.json", doc)
        tradeoff = folder / "tradeoff.png"
        markdown = _markdown(
            {**doc, "run_dir": str(run.root)},
            records,
            seconds,
            plot if plot.is_file() else None,
            tradeoff if tradeoff.is_file() else None,
        )
        atomic_write_text(folder / "report.md", markdown)
        # the manifest records the report's files as they are now
        run.write_entry("report", dataclasses.replace(entry, outputs=run.hash_outputs("report")))
        return folder / "report.md"
