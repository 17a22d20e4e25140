"""The report's plots: latency per sequence length, and quantize.auto's accuracy/latency tradeoff."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgetune.core.artifacts import (
    Benchmark,
)
from edgetune.report.format import _headline_key, _mb, _metric, _ms, metric_label
from edgetune.runtime.cpu import machine_line


def _tradeoff_plot(records: dict[str, Any], root: Path, path: Path) -> Path | None:
    """quantize.auto's candidates (and the peers' builds from RUN_DIR/peers.json, benchmarks/peers.py): p50 at
    the search's length against held-out accuracy, marker area by size, the chosen build marked."""
    q = records.get("quantize")
    auto = next((m.notes["auto"] for m in (q.models if q is not None else []) if m.notes.get("auto")), None)
    if not auto:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    if auto.get("kind") == "int4":
        _int4_tradeoff(ax, auto)
        return _save(fig, path)
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
    return _save(fig, path)


def _int4_tradeoff(ax: Any, auto: dict) -> None:
    """The int4 layouts quantize.auto measured: decode tokens/s against the selection rows' exact match (or
    perplexity ratio, for responses without one), marker area by size, the kept layout starred."""
    rows = [r for r in auto["candidates"] if r["status"] != "pruned"]
    exact = all(r.get("exact_match") is not None for r in rows)
    y = [r["exact_match"] if exact else r["perplexity_ratio"] for r in rows]
    x = [r["decode_tokens_per_s"] for r in rows]
    ax.scatter(
        x,
        y,
        s=[max(20.0, r["size_bytes"] / 1e6 * 2) for r in rows],
        c=["tab:green" if r["status"] == "passed" else "tab:gray" for r in rows],
        alpha=0.7,
    )
    for r, a, b in zip(rows, x, y):
        ax.annotate(r["name"], (a, b), fontsize=6, xytext=(4, 4), textcoords="offset points")
    i = next(i for i, r in enumerate(rows) if r["name"] == auto["chosen"])
    ax.scatter([x[i]], [y[i]], marker="*", s=250, c="tab:red", zorder=3)
    fp32 = auto["chosen_on"]["fp32"]
    if exact and "json_exact_match" in fp32:
        ax.axhline(fp32["json_exact_match"] - auto["budget"]["max_drop"], color="tab:red", lw=0.8, ls="--")
    t = auto["timed_at"]
    ax.set_xlabel(f"decode tokens/s, {t['seq']}-token prompt, {t['threads']} threads (higher is better)")
    ax.set_ylabel("exact match on the selection rows" if exact else "perplexity ratio to fp32")
    ax.set_title(
        "int4 layouts (green: within verify's int4 budgets; dashed: the budget; area: size; star: kept)", fontsize=8
    )


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

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
