"""Number formats and the benchmark table, shared by report.md and the CLI."""

from __future__ import annotations

from typing import Any

from edgetune.core.artifacts import (
    Benchmark,
)
from edgetune.runner import verdict
from edgetune.runtime.cpu import machine_line

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


def headline(metrics: dict) -> tuple[str, float] | None:
    """The task's headline figure: accuracy (classification) or JSON exact match / perplexity (causal-lm)."""
    for key in ("accuracy", "json_exact_match", "perplexity"):
        if key in metrics:
            return key, metrics[key]
    return None


def format_benchmark(b: Benchmark) -> str:
    """A fixed-width table of a Benchmark, as the CLI prints it."""
    if b.kind == "decode":
        head = f"{'model':<22}{'threads':>8}{'prompt':>7}{'TTFT ms':>9}{'prefill t/s':>12}{'decode t/s':>11}{'x base':>8}{'RSS MB':>8}{'size MB':>9}"
        lines = [f"machine: {machine_line(b.machine)}", head, "-" * len(head)]
        for r in b.results:
            m = b.models[r["model"]]
            lines.append(
                f"{r['model']:<22}{r['threads']:>8}{r['seq_len']:>7}{r['ttft_ms']:>9.1f}{r['prefill_tokens_per_s']:>12.1f}"
                f"{r['decode_tokens_per_s']:>11.1f}{r['decode_speedup_vs_baseline']:>8.2f}{m['peak_rss_mb']:>8.0f}{m['size_bytes'] / 1e6:>9.1f}"
            )
        return "\n".join(lines + _noise_lines(b))
    head = f"{'model':<22}{'seq':>5}{'p50 ms':>9}{'spread':>8}{'p90 ms':>9}{'p99 ms':>9}{'items/s':>9}{'p50/base':>9}{'RSS MB':>8}{'size MB':>9}"
    lines = [
        f"machine: {machine_line(b.machine)} | threads {b.settings.get('threads')} | batch {b.settings.get('batch_size')}",
        head,
        "-" * len(head),
    ]
    for r in b.results:
        m = b.models[r["model"]]
        ratio = f"{r['p50_ratio_to_baseline']:.2f}" if "p50_ratio_to_baseline" in r else "-"
        spread_cell = f"{r['spread']:.0%}" if "spread" in r else "-"
        lines.append(
            f"{r['model']:<22}{r['seq_len']:>5}{r['p50_ms']:>9.2f}{spread_cell:>8}{r['p90_ms']:>9.2f}{r['p99_ms']:>9.2f}"
            f"{r['throughput_per_s']:>9.1f}{ratio:>9}{m['peak_rss_mb']:>8.0f}{m['size_bytes'] / 1e6:>9.1f}"
        )
    return "\n".join(lines + _noise_lines(b))


def _noise_lines(b: Benchmark) -> list[str]:
    if not b.noise:
        return []
    rounds = b.settings.get("rounds", 1)
    return [
        f"p50: the median of {rounds} rounds' p50s, each round every model in a fresh process, order rotated; "
        f"spread: (max - min) / median of the round p50s",
        verdict(b.noise),
    ]
