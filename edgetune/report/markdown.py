"""report.md: the build's records as readable sections (summary, gates, training, benchmark, devices)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgetune.core.artifacts import (
    Adapter,
    Benchmark,
    MergedModel,
    Package,
    Student,
    Verification,
)
from edgetune.device.results import greedy_summary
from edgetune.report.format import (
    NA,
    _cos,
    _diff,
    _headline_key,
    _mb,
    _metric,
    _ms,
    _num,
    _or_na,
    _rate,
    _ratio,
    _s,
    headline,
    metric_label,
)
from edgetune.runtime.cpu import machine_line


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
    out += _adapters_markdown(doc.get("adapters"))
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
            from edgetune.runner import verdict

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
    out += _cost_markdown(doc.get("cost"))
    out += _devices_markdown(doc.get("devices", []))
    return "\n".join(out)


def _adapters_markdown(a: dict | None) -> list[str]:
    """The adapters stage: disk for N tasks merged against base + adapters, and each adapter's accuracy."""
    if not a:
        return []
    out = [
        "## Adapters (one int4 base, an .onnx_adapter per task)",
        "",
        f"Base {_mb(a['base_mb'])} MB. Disk for N tasks: a merged int4 model per task, or the base once and an "
        "adapter per task (speed: onnx_int4+adapter in the benchmark).",
        "",
        "| tasks | merged MB | base + adapters MB |",
        "|---|---|---|",
    ]
    for row in a["sizes"]:
        out.append(f"| {row['tasks']} | {_or_na(row['merged_mb'], _mb)} | {_mb(row['base_plus_adapters_mb'])} |")
    out += [
        "",
        "| adapter | MB | trained on the int4 base | PyTorch | int4 base + adapter | greedy agreement | gates |",
    ]
    out.append("|---|---|---|---|---|---|---|")
    for x in a["adapters"]:
        metric = "json_exact_match" if "json_exact_match" in x["pytorch"] else "perplexity"
        out.append(
            f"| {x['name']} | {x['mb']:.2f} | {'yes' if x['trained_against_int4_base'] else 'no'} | "
            f"{metric_label(metric)} {_or_na(x['pytorch'].get(metric), _metric)} | "
            f"{_or_na(x['onnx_int4_adapter'].get(metric), _metric)} | "
            f"{_or_na(x['onnx_int4_adapter'].get('greedy_agreement'), _metric)} | {'pass' if x['passed'] else 'FAIL'} |"
        )
    return [*out, ""]


def _cost_markdown(cost: dict | None) -> list[str]:
    """The build's cost per stage: wall time and peak resident memory of the build's process tree."""
    if not cost or not cost["stages"]:
        return []
    out = ["## Cost", "", "| stage | seconds | peak RSS MB |", "|---|---|---|"]
    for name, c in cost["stages"].items():
        out.append(f"| {name} | {_or_na(c['seconds'], _s)} | {_or_na(c['peak_rss_mb'], _mb)} |")
    out += [
        f"| whole build | {_s(cost['seconds'])} | {_or_na(cost['peak_rss_mb'], _mb)} |",
        "",
        "Peak RSS: the largest resident memory of the build's process and every process it started (the model "
        "builder, the benchmark's workers) while the stage ran, sampled every 0.1 s (pages two processes share "
        f"count twice); a stage reused from an earlier build shows the figures of the build that ran it; {NA}: not "
        "recorded (run by an older edgetune). Whole build: the sum of the seconds and the largest peak.",
        "",
    ]
    return out


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
    if auto.get("kind") == "int4":
        return _auto_int4_markdown(auto, tradeoff)
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


def _auto_int4_markdown(auto: dict, tradeoff: Path | None) -> list[str]:
    """quantize.auto's int4 layouts (a decoder): each one's figures on the selection rows, its speed, its fate."""
    t, on, b = auto["timed_at"], auto["chosen_on"], auto["budget"]
    fp32 = on["fp32"]
    ref = ", ".join(f"{k.replace('_', ' ')} {_metric(v)}" for k, v in fp32.items())
    out = [
        f"quantize.auto kept **{auto['chosen']}**: the fastest decoder within verify's int4 budgets (exact-match "
        f"drop <= {b['max_drop']:g}, perplexity ratio <= {b['max_perplexity_ratio']:g}) on {on['what']} "
        f"(fp32 ONNX there: {ref}), timed with a {t['seq']}-token prompt and {t['new_tokens']} new tokens at "
        f"{t['threads']} threads, each layout in a fresh process, median of {t['rounds']} interleaved rounds; "
        f"layouts within the timing noise of the fastest count as ties, won by the first listed. The search took "
        f"{auto['search_seconds'] / 60:.1f} min. A pruned layout does all the work of one that passed and more, so "
        "it cannot be faster: it was not built. The held-out figures of the kept layout are verify's, below.",
        "",
        "| layout | exact match | drop | perplexity | ratio | decode tok/s | prefill ms | spread | size MB | result |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in auto["candidates"]:
        if r["status"] == "pruned":
            out.append(f"| {r['name']} | | | | | | | | | pruned ({r['why']}) |")
            continue
        em, drop = r.get("exact_match"), r.get("exact_match_drop")
        why = f" ({r['stopped_early']})" if r.get("stopped_early") else ""
        out.append(
            f"| {r['name']} | {'-' if em is None else _metric(em)} | {'-' if drop is None else _metric(drop)} | "
            f"{r['perplexity']:.4f} | {r['perplexity_ratio']:.4f} | {r['decode_tokens_per_s']:.1f} | "
            f"{_ms(r['prefill_ms'])} | {r['spread']:.0%} | {_mb(r['size_bytes'] / 1e6)} | {r['status']}{why} |"
        )
    out.append("")
    if tradeoff:
        out += [f"![decode speed vs exact match]({tradeoff.name})", ""]
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
