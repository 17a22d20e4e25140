"""report.json, report.md and the plots from the stages' records; device results added to a finished report."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgetune import __version__
from edgetune.core.artifacts import (
    AdapterSet,
    Benchmark,
    Report,
    Verification,
    from_json,
    to_json,
)
from edgetune.core.rundir import atomic_write_json, atomic_write_text
from edgetune.report.markdown import _markdown
from edgetune.report.plots import _plot, _tradeoff_plot

SCHEMA_VERSION = 1


def devices_fingerprint(run_dir: Path) -> str:
    """A hash of the device results saved in the run directory: a new `bench --ssh` result changes it."""
    from edgetune.core.data import file_sha256
    from edgetune.device.results import DEVICES_DIR

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


def _cost(records: dict[str, Any], seconds: dict[str, float], peaks: dict[str, float | None]) -> dict:
    """What the build cost, stage by stage: wall seconds and peak resident MB (None: not recorded, a stage run by
    an older edgetune), and the build's totals: the sum of the seconds and the largest peak."""
    stages = {name: {"seconds": seconds.get(name), "peak_rss_mb": peaks.get(name)} for name in records}
    known = [p for p in peaks.values() if p is not None]
    return {
        "stages": stages,
        "seconds": round(sum(s for s in seconds.values() if s is not None), 3),
        "peak_rss_mb": max(known) if known else None,
    }


def report(
    records: dict[str, Any],
    seconds: dict[str, float],
    recipe: dict,
    out: Path,
    root: Path,
    devices: list[dict] | None = None,
    stopped: tuple[str, str] | None = None,
    peak_rss_mb: dict[str, float | None] | None = None,
) -> Report:
    """Write out/report.json, out/report.md and out/latency.png from the stages' records and timings.

    `root`: the run directory (paths in report.json are relative to it). `devices`: results of `edgetune bench
    --ssh`; by default those saved in `root`. `stopped`: (stage, error) when a stage of the build failed: the
    report is of the stages that finished and says so. `peak_rss_mb`: each stage's peak resident memory (of the
    build's process and those it started) while it ran, as the manifest records it.
    """
    from edgetune.device.results import load_results

    v: Verification | None = records.get("verify")
    shipped: AdapterSet | None = records.get("adapters")
    checks = [to_json(c, root) for c in [*(v.checks if v else []), *(shipped.verification.checks if shipped else [])]]
    peaks = peak_rss_mb or {}
    doc = {
        "schema_version": SCHEMA_VERSION,
        "edgetune_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "recipe": recipe,
        "passed": v is not None and v.passed and stopped is None and (shipped is None or shipped.verification.passed),
        "stopped": {"stage": stopped[0], "error": stopped[1]} if stopped else None,
        "checks": checks,
        "summary": _summary(records),
        "stages": {
            name: {**to_json(rec, root), "seconds": seconds.get(name), "peak_rss_mb": peaks.get(name)}
            for name, rec in records.items()
        },
        "cost": _cost(records, seconds, peaks),
        "adapters": adapters_summary(records),
        "devices": load_results(root) if devices is None else devices,
    }
    plot = _plot(records.get("bench"), doc["summary"]["models"], recipe["name"], out / "latency.png")
    tradeoff = _tradeoff_plot(records, root, out / "tradeoff.png")
    atomic_write_json(out / "report.json", doc)
    md = out / "report.md"
    atomic_write_text(md, _markdown({**doc, "run_dir": str(root)}, records, seconds, plot, tradeoff))
    return Report(json_path=out / "report.json", markdown_path=md, plot_path=plot)


def adapters_summary(records: dict[str, Any]) -> dict | None:
    """What the adapters stage's unmerged path costs against merging (None without it): disk for 1..N tasks
    (a merged int4 model per task, or the base once plus an adapter per task), and each adapter's accuracy
    through the base+adapter path next to its own PyTorch model's."""
    shipped: AdapterSet | None = records.get("adapters")
    if shipped is None:
        return None
    quantized = records.get("quantize")
    merged = next((m.size_bytes for m in quantized.models if m.precision == "int4"), None) if quantized else None
    sizes = [
        {
            "tasks": n,
            "merged_mb": round(merged * n / 1e6, 3) if merged else None,
            "base_plus_adapters_mb": round(
                (shipped.model.size_bytes + sum(a.size_bytes for a in shipped.adapters[:n])) / 1e6, 3
            ),
        }
        for n in range(1, len(shipped.adapters) + 1)
    ]
    figures, per = shipped.verification.models, []
    for a in shipped.adapters:
        ref, got = figures.get(f"{a.name}/pytorch_fp32", {}), figures.get(f"{a.name}/onnx_int4+adapter", {})
        checks = [c for c in shipped.verification.checks if c.stage == f"adapters[{a.name}]"]
        per.append(
            {
                "name": a.name,
                "mb": round(a.size_bytes / 1e6, 3),
                "trained_against_int4_base": a.int4_base is not None,
                "pytorch": {k: ref[k] for k in ("json_exact_match", "perplexity") if k in ref},
                "onnx_int4_adapter": {
                    k: got[k] for k in ("json_exact_match", "perplexity", "greedy_agreement") if k in got
                },
                "passed": all(c.passed for c in checks),
            }
        )
    return {"base_mb": round(shipped.model.size_bytes / 1e6, 3), "sizes": sizes, "adapters": per}


def add_devices(run_dir: Path, record_types: Callable[[str], dict[str, type]]) -> Path | None:
    """Put the device results saved in `run_dir` into its finished report (report.json `devices`, report.md);
    None when the run has no report yet (the next one written will have them). `record_types(task)`: each
    stage's record type for that task (edgetune.tasks.record_types)."""
    from edgetune.core.rundir import RunDir
    from edgetune.device.results import load_results

    with RunDir(run_dir) as run:
        entry = run.entry("report")
        folder = run.stage_dir("report")
        if entry is None or not (folder / "report.json").is_file():
            return None
        doc = json.loads((folder / "report.json").read_text())
        doc["devices"] = load_results(run.root)
        types = record_types(doc["recipe"]["task"])
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
