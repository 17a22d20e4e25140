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
from ..runtime import machine_line
from .base import BaseStage, BuildContext, Key

SCHEMA_VERSION = 1


class ReportStage(BaseStage):
    """report.json, report.md and latency.png from every record of the build (and the device results saved in
    the run directory)."""

    name = "report"
    needs = ("finetune", "merge", "compress", "export", "quantize", "verify", "package", "bench")  # those it has
    after_failure = ()  # written with what finished when a stage failed
    record = Report

    def key(self, ctx: BuildContext) -> Key:
        r = ctx.recipe
        stopped = [list(ctx.stopped)] if ctx.stopped else []  # a report of a failed build is not reused later
        return Key([SCHEMA_VERSION, _recipe_facts(r), *stopped], [devices_fingerprint(ctx.run.root)])

    def run(self, ctx: BuildContext, inputs: dict, out: Path) -> Report:
        seconds = {name: e.seconds for name in inputs if (e := ctx.run.entry(name)) is not None}
        return report(inputs, seconds, _recipe_facts(ctx.recipe), out, ctx.run.root, stopped=ctx.stopped)


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
    # the same keys for every model: null where verify did not measure a figure for it (the reference's parity
    # with itself, the base model's parity)
    keys = dict.fromkeys(k for m in models.values() for k in m["eval"])
    for m in models.values():
        m["eval"] = {**dict.fromkeys(keys), **m["eval"]}
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
    # held-out accuracy, as the peers' builds are measured (the choice read the selection split's figures)
    acc = [r.get("heldout_accuracy", r["accuracy"]) for r in rows]
    sizes = [max(20.0, r["size_bytes"] / 1e6 * 8) for r in rows]
    colors = ["tab:green" if r["passed"] else "tab:gray" for r in rows]
    ax.scatter([r["p50_ms"] for r in rows], acc, s=sizes, c=colors, alpha=0.7)
    for r, a in zip(rows, acc):
        label = r["name"] + (" (chosen)" if r["name"] == auto["chosen"] else "")
        ax.annotate(label, (r["p50_ms"], a), fontsize=7, xytext=(4, 4), textcoords="offset points")
    i = next(i for i, r in enumerate(rows) if r["name"] == auto["chosen"])
    ax.scatter([rows[i]["p50_ms"]], [acc[i]], marker="*", s=250, c="tab:red", zorder=3)
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
    ax.set_title(
        "int8 candidates (green: within verify's budgets on the selection split; area: size; star: chosen)", fontsize=8
    )
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


def _plot(bench: Benchmark | None, summary: dict, run_name: str, path: Path) -> Path | None:
    fig = latency_figure(bench, summary, run_name)
    if fig is None:
        return None
    import matplotlib.pyplot as plt

    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


def latency_figure(bench: Benchmark | None, summary: dict, run_name: str) -> Any:
    """latency.png's figure: p50 per model and length, titled with the run's name; each model's legend entry
    with its held-out task metric and size (report.json's summary.models). None without benchmark rows."""
    results = bench.results if bench else []
    if not bench or not results:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["model"] for r in results))
    seqs = sorted({r["seq_len"] for r in results})
    metric = _headline_key(m.get("eval", {}) for m in summary.values())
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(9, 4), dpi=120)
    for i, name in enumerate(names):
        vals = {r["seq_len"]: r["p50_ms"] for r in results if r["model"] == name}
        xs = [j + i * width for j in range(len(seqs))]
        bars = ax.bar(xs, [vals.get(s, 0) for s in seqs], width, label=_legend_label(name, summary, metric))
        ax.bar_label(bars, labels=[_ms(vals[s]) if s in vals else "" for s in seqs], fontsize=7)
    decode = bench.kind == "decode"
    ticks = [f"prompt {s} tokens" if decode else f"seq {s}" for s in seqs]
    ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(seqs))], ticks)
    ax.set_ylabel("ms per new token (median), lower is better" if decode else "p50 latency (ms), lower is better")
    m = bench.machine
    ax.set_title(
        f"{run_name}\nbatch {bench.settings['batch_size']}, {m.get('threads')} threads, {machine_line(m)[:70]}",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


def _legend_label(name: str, summary: dict, metric: str | None) -> str:
    """'onnx_int8 (accuracy 0.944, 23.0 MB)': a bench row's model (onnx_int8@1t: onnx_int8 at another thread
    count) with its figures from the summary, those it has."""
    m = summary.get(name.split("@")[0], {})
    value = m.get("eval", {}).get(metric) if metric else None
    facts = [f"{metric_label(metric)} {_metric(value)}"] if metric and value is not None else []
    if m.get("size_bytes"):
        facts.append(f"{_mb(m['size_bytes'] / 1e6)} MB")
    return f"{name} ({', '.join(facts)})" if facts else name


# One format per kind of figure, the same in every table of report.md; NA marks a figure that was not measured.
NA = "—"


def _ms(v: float) -> str:
    return f"{v:.2f}"


def _metric(v: Any) -> str:
    """A task metric or agreement share (accuracy, exact match, perplexity, top-1 agreement)."""
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _mb(v: float) -> str:
    return f"{v:.1f}"


def _s(v: float) -> str:
    return f"{v:.1f}"


def _ratio(v: float) -> str:
    return f"{v:.2f}x"


def _rate(v: float) -> str:
    """Items or tokens per second."""
    return f"{v:.1f}"


def _diff(v: float) -> str:
    return f"{v:.3g}"


def _cos(v: float) -> str:
    return f"{v:.6f}"


def _num(v: Any) -> str:
    """A figure of no one kind (a check's value, read beside its threshold)."""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _or_na(v: Any, fmt: Any) -> str:
    return NA if v is None else fmt(v)


def metric_label(key: str) -> str:
    """A metric's name as a column header: json_exact_match -> JSON exact match."""
    return key.replace("_", " ").replace("json", "JSON")


def _headline_key(models: Any) -> str | None:
    """The name of the task's headline metric, from the first model's metrics that have one."""
    return next((found[0] for m in models if (found := headline(m)) is not None), None)


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
    if doc.get("stopped"):
        out += [f"The build stopped: the **{doc['stopped']['stage']}** stage failed: {doc['stopped']['error']}", ""]
    failed = [c for c in doc["checks"] if not c["passed"]]
    for c in failed:
        out.append(f"- FAILED {c['stage']}: {c['name']} = {_num(c['value'])} (must be {c['op']} {c['threshold']:g})")
    if failed:
        out.append("")
    bench: Benchmark | None = records.get("bench")
    seqs = sorted({r["seq_len"] for r in bench.results}) if bench else []
    summary = doc["summary"]["models"]
    decode = bench is not None and bench.kind == "decode"
    metric = _headline_key(m.get("eval", {}) for m in summary.values())
    out += [
        "## Summary",
        "",
        f"| model | {metric_label(metric) if metric else 'task metric'} | size MB | size vs ONNX fp32 | "
        + " | ".join((f"ms per new token, prompt {s}" if decode else f"p50 ms seq {s}") for s in seqs)
        + " |",
        "|---|---|---|---|" + "---|" * len(seqs),
    ]
    for name, m in summary.items():
        size = m.get("size_bytes")
        cells = [
            name,
            _or_na(m.get("eval", {}).get(metric) if metric else None, _metric),
            _or_na(size / 1e6 if size else None, _mb),
            _or_na(m.get("size_ratio_to_onnx_fp32"), _ratio),
        ]
        for s in seqs:
            p = m.get("p50_ms", {}).get(str(s))
            r = m.get("p50_ratio_to_baseline", {}).get(str(s))
            cells.append(NA if p is None else _ms(p) + (f" ({_ratio(r)})" if r is not None else ""))
        out.append("| " + " | ".join(cells) + " |")
    out += [
        "",
        "Ratios in parentheses are the figure divided by PyTorch eager fp32's at the same length and thread count "
        f"(lower is better); {NA}: not measured for that model.",
        "",
    ]
    ft: Adapter | None = records.get("finetune")
    if ft is not None:
        evals = [k for k in ft.epochs[0] if k.startswith("eval_")] if ft.epochs else []
        out += [
            "## Fine-tune (LoRA)",
            "",
            f"{ft.train_examples} training rows, {ft.eval_examples} held-out rows; "
            f"{ft.trainable_params:,} trainable of {ft.total_params:,} parameters; "
            f"{_training_time(ft.epochs, seconds.get('finetune'))}.",
            "",
            "| epoch | loss | " + " | ".join(evals) + " | seconds |",
            "|---|---|" + "---|" * len(evals) + "---|",
        ]
        for e in ft.epochs:
            out.append(
                f"| {e['epoch']} | {e['loss']:.4f} | "
                + " | ".join(_metric(e[k]) for k in evals)
                + f" | {_s(e['seconds'])} |"
            )
        out.append("")
    merged: MergedModel | None = records.get("merge")
    if merged is not None:
        found = headline(merged.eval_metrics)
        figure = f"merged {metric_label(found[0])} {_or_na(found[1], _metric)}; " if found else ""
        out += [
            "## Merge",
            "",
            f"max |merged - adapter| on held-out outputs: {_diff(merged.merge_max_abs_diff)}; "
            f"{figure}weights {_mb(merged.size_bytes / 1e6)} MB.",
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
            f"{_or_na(student.eval_metrics.get('accuracy'), _metric)} (teacher {_metric(student.teacher_accuracy)}); "
            f"distilled for {len(student.epochs)} epochs in {_s(st.get('seconds', 0))} s. From here on, "
            "`pytorch_fp32` and the ONNX models are the student's.",
            "",
            "| epoch | loss | kd loss | ce loss | held-out accuracy | seconds |",
            "|---|---|---|---|---|---|",
        ]
        for e in student.epochs:
            acc = _or_na(e.get("eval_accuracy"), _metric)
            out.append(
                f"| {e['epoch']} | {e['loss']:.4f} | {e['kd_loss']:.4f} | {e['ce_loss']:.4f} | {acc} | "
                f"{_s(e['seconds'])} |"
            )
        out.append("")
    onnx_models = [
        (n, [records[n]] if n == "export" else records[n].models) for n in ("export", "quantize") if n in records
    ]
    for stage, models in onnx_models:
        out += [f"## {stage.capitalize()}", ""]
        for m in models:
            out += [
                f"`{_rel(m.path, doc)}`: {m.precision}, {_mb(m.size_bytes / 1e6)} MB, {len(m.inputs)} inputs "
                f"({', '.join(m.inputs[:3])}{', ...' if len(m.inputs) > 3 else ''}); sha256 `{m.sha256[:16]}`.",
                "",
                "Notes: " + ", ".join(f"{k}: {v}" for k, v in m.notes.items() if k != "auto"),
                "",
            ]
            out += _auto_markdown(m.notes.get("auto"), tradeoff)
    v: Verification | None = records.get("verify")
    if v is not None:
        metric = _headline_key(v.models.values())
        base = "pytorch_base" in v.models
        out += [
            "## Verify (parity on the held-out split)",
            "",
            f"{v.rows} rows{f', ONNX models run on {v.isa}' if v.isa else ''}. Details: `{_rel(v.details_path, doc)}`.",
            "",
            f"| model | {metric_label(metric) if metric else 'task metric'} | max abs diff | min cosine | "
            "top-1 agreement |",
            "|---|---|---|---|---|",
        ]
        for name, m in v.models.items():
            out.append(
                f"| {name} | {_or_na(m.get(metric) if metric else None, _metric)} | "
                f"{_or_na(m.get('max_abs_diff'), _diff)} | {_or_na(m.get('min_cosine'), _cos)} | "
                f"{_or_na(m.get('top1_agreement'), _metric)} |"
            )
        out += [
            "",
            "Max abs diff, min cosine and top-1 agreement compare a model's outputs with pytorch_fp32's, the "
            f"reference; {NA}: not measured (the reference itself"
            + (", and pytorch_base, the model before fine-tuning, only scored on the task" if base else "")
            + ").",
            "",
            "| check | value | threshold | result |",
            "|---|---|---|---|",
        ]
        for c in v.checks:
            out.append(
                f"| {c.stage} {c.name} | {_num(c.value)} | {c.op} {c.threshold:g} | {'pass' if c.passed else 'FAIL'} |"
            )
        out.append("")
    pkg: Package | None = records.get("package")
    if pkg is not None:
        out += [
            "## Package (Android demo app)",
            "",
            f"`{_rel(pkg.path, doc)}`: {', '.join(pkg.files)}; {_mb(pkg.size_bytes / 1e6)} MB; model sha256 "
            f"`{pkg.model_sha256[:16]}`; {pkg.golden_cases} golden cases reproduced in ONNX Runtime.",
            "",
        ]
    if bench is not None:
        m, st = bench.machine, bench.settings
        out += [
            "## Benchmark",
            "",
            f"{machine_line(m)}, {m.get('cores')} cores, {m.get('threads')} intra-op threads; "
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
                "| model | threads | prompt tokens | first token ms | prefill tok/s | decode tok/s | decode vs PyTorch |",
                "|---|---|---|---|---|---|---|",
            ]
            for x in bench.results:
                out.append(
                    f"| {x['model']} | {x['threads']} | {x['seq_len']} | {_ms(x['ttft_ms'])} | "
                    f"{_rate(x['prefill_tokens_per_s'])} | {_rate(x['decode_tokens_per_s'])} | "
                    f"{_ratio(x['decode_speedup_vs_baseline'])} |"
                )
            out += [
                "",
                FIRST_TOKEN_LEGEND + " Decode vs PyTorch: decode tok/s over pytorch_fp32's at the same threads.",
            ]
        else:
            out += [
                "| model | seq | p50 ms | p90 ms | p99 ms | items/s | p50 vs PyTorch | first call ms |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for x in bench.results:
                out.append(
                    f"| {x['model']} | {x['seq_len']} | {_ms(x['p50_ms'])} | {_ms(x['p90_ms'])} | {_ms(x['p99_ms'])} | "
                    f"{_rate(x['throughput_per_s'])} | {_or_na(x.get('p50_ratio_to_baseline'), _ratio)} | "
                    f"{_ms(x['first_ms'])} |"
                )
            out += ["", FIRST_CALL_LEGEND + " p50 vs PyTorch: p50 over pytorch_fp32's at the same length."]
        out += ["", "| model | load s | peak RSS MB | size MB |", "|---|---|---|---|"]
        for name, x in bench.models.items():
            out.append(f"| {name} | {_s(x['load_seconds'])} | {_mb(x['peak_rss_mb'])} | {_mb(x['size_bytes'] / 1e6)} |")
        out.append("")
    out += _devices_markdown(doc.get("devices", []))
    return "\n".join(out)


FIRST_CALL_LEGEND = (
    "p50/p90/p99 ms: percentiles of one call's time over the timed runs; items/s: items per second at the mean "
    "time; first call ms: the model's first call at that length, before warm-up (one sample)."
)
FIRST_TOKEN_LEGEND = (
    "First token ms: from handing over the prompt to the first new token (prefill plus one step), median of the "
    "timed runs; prefill tok/s: prompt tokens over that time; decode tok/s: new tokens per second after the first."
)


def _auto_markdown(auto: dict | None, tradeoff: Path | None) -> list[str]:
    """quantize.auto's candidates: each one's figures, and which one was kept."""
    if not auto:
        return []
    t = auto["timed_at"]
    on = auto.get("chosen_on")
    where = f"on the selection split ({on['rows']} rows: {on['what']})" if on else "on the held-out split"
    out = [
        f"quantize.auto kept **{auto['chosen']}**: the fastest candidate within verify's int8 budgets {where} "
        f"(timed at seq {t['seq']}, batch {t['batch']}, {t['threads']} threads, median of {t['rounds']} interleaved "
        f"rounds; candidates within the timing noise of the fastest count as ties, won by the first listed).",
        "",
    ]
    if on:
        out += [
            "The figures are the selection split's; the held-out column is shown for reference only (the choice "
            "never reads it).",
            "",
        ]
    metric = "selection accuracy" if on else "held-out accuracy"
    out += [
        f"| candidate | {metric} | drop | top-1 agreement | mean cosine | p50 ms | spread | size MB | passed |"
        + (" held-out accuracy |" if on else ""),
        "|---|---|---|---|---|---|---|---|---|" + ("---|" if on else ""),
    ]
    for r in auto["candidates"]:
        out.append(
            f"| {r['name']} | {_metric(r['accuracy'])} | {_metric(r['accuracy_drop'])} | "
            f"{_metric(r['top1_agreement'])} | {_cos(r['mean_cosine'])} | {_ms(r['p50_ms'])} | {r['spread']:.0%} | "
            f"{_mb(r['size_bytes'] / 1e6)} | "
            f"{'yes' if r['passed'] else 'no'} |" + (f" {_metric(r['heldout_accuracy'])} |" if on else "")
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
                    f"(max abs diff {_diff(m['max_abs_diff'])} <= {g.get('max_abs_diff_limit')}, min cosine "
                    f"{_cos(m['min_cosine'])} >= {g.get('min_cosine_limit')}): **{'pass' if m['passed'] else 'FAIL'}**"
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
                "| model | threads | prompt tokens | first token ms | prefill tok/s | decode tok/s | peak RSS MB |",
                "|---|---|---|---|---|---|---|",
            ]
            out += [
                f"| {x['model']} | {x['threads']} | {x['seq_len']} | {_ms(x['ttft_ms'])} | "
                f"{_rate(x['prefill_tokens_per_s'])} | {_rate(x['decode_tokens_per_s'])} | "
                f"{_mb(d['models'][x['model']]['peak_rss_mb'])} |"
                for x in rows
            ]
            out += ["", FIRST_TOKEN_LEGEND]
        elif rows:
            out += [
                "| model | seq | p50 ms | p90 ms | p99 ms | items/s | first call ms | peak RSS MB |",
                "|---|---|---|---|---|---|---|---|",
            ]
            out += [
                f"| {x['model']} | {x['seq_len']} | {_ms(x['p50_ms'])} | {_ms(x['p90_ms'])} | {_ms(x['p99_ms'])} | "
                f"{_rate(x['throughput_per_s'])} | {_ms(x['first_ms'])} | "
                f"{_mb(d['models'][x['model']]['peak_rss_mb'])} |"
                for x in rows
            ]
            out += ["", FIRST_CALL_LEGEND]
        out.append("")
    return out


def headline(metrics: dict) -> tuple[str, float] | None:
    """The task's headline figure: accuracy (classification) or JSON exact match / perplexity (causal-lm)."""
    for key in ("accuracy", "json_exact_match", "perplexity"):
        if key in metrics:
            return key, metrics[key]
    return None


def _training_time(epochs: list[dict], stage_seconds: float | None) -> str:
    """Fine-tune time as the epoch rows give it (their sum: every session's epochs), beside this session's
    finetune stage time, which after a resume from a checkpoint covers only the epochs it ran. Rows with a
    `session` number say how many sessions there were."""
    text = f"{len(epochs)} epochs (training and held-out evaluation) {_s(sum(e['seconds'] for e in epochs))} s"
    sessions = len({e["session"] for e in epochs if "session" in e})
    if stage_seconds is None:
        return text
    if sessions > 1 or stage_seconds < sum(e["seconds"] for e in epochs):
        over = f"{sessions} sessions" if sessions > 1 else "more than one session"
        return f"{text} over {over}; this session's finetune stage {_s(stage_seconds)} s (resumed from a checkpoint)"
    return f"{text}; the finetune stage {_s(stage_seconds)} s with loading and saving"


def report(
    records: dict[str, Any],
    seconds: dict[str, float],
    recipe: dict,
    out: Path,
    root: Path,
    devices: list[dict] | None = None,
    stopped: tuple[str, str] | None = None,
) -> Report:
    """Write out/report.json, out/report.md and out/latency.png from the stages' records and timings.

    `root`: the run directory (paths in report.json are relative to it). `devices`: results of `edgetune bench
    --ssh`; by default those saved in `root`. `stopped`: (stage, error) when a stage of the build failed: the
    report is of the stages that finished and says so.
    """
    from ..device.results import load_results

    v: Verification | None = records.get("verify")
    checks = [to_json(c, root) for c in v.checks] if v else []
    doc = {
        "schema_version": SCHEMA_VERSION,
        "edgetune_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "recipe": recipe,
        "passed": v is not None and v.passed and stopped is None,
        "stopped": {"stage": stopped[0], "error": stopped[1]} if stopped else None,
        "checks": checks,
        "summary": _summary(records),
        "stages": {name: {**to_json(rec, root), "seconds": seconds.get(name)} for name, rec in records.items()},
        "devices": load_results(root) if devices is None else devices,
    }
    plot = _plot(records.get("bench"), doc["summary"]["models"], recipe["name"], out / "latency.png")
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
