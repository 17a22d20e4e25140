"""What a build costs (issue 20): each stage's wall time and peak resident memory of the whole process tree are
recorded in the manifest when it runs, and report.json and report.md show them (a reused stage: the figures of
the build that ran it)."""

from __future__ import annotations

import json
import subprocess
import sys

from edgetune.core.memory import MB
from edgetune.core.recipe import load_recipe
from edgetune.pipeline import build

STAGES = ["finetune", "merge", "export", "quantize", "verify", "bench"]


def test_tree_peak_counts_the_processes_a_block_starts():
    """A child's memory counts: one that ends between two samples (from getrusage, in a fresh process whose
    children's peak starts at 0), and one sampled while it runs."""
    script = """
import subprocess, sys
from edgetune.core.memory import TreePeak, _reset_hwm
grow = "x = b'x' * (300 * 2**20); import time; time.sleep({})"
for pause, interval in ((0.0, 60), (1.0, 0.2)):
    with TreePeak(interval=interval) as peak:
        subprocess.run([sys.executable, "-c", grow.format(pause)], check=True)
    print(pause, peak.peak, _reset_hwm())
"""
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        pause, peak, reset = line.split()
        if float(pause) or reset == "True":  # an ended child is counted where this process's peak can be reset
            assert int(peak) >= 300 * MB, out


def test_each_stage_records_its_cost_and_the_report_shows_it(tiny_recipe, tmp_path):
    run = tmp_path / "run"
    build(load_recipe(tiny_recipe), run, progress=False)
    entries = json.loads((run / "manifest.json").read_text())["stages"]
    for name in [*STAGES, "report"]:
        assert entries[name]["seconds"] > 0 and entries[name]["peak_rss_mb"] > 50, (name, entries[name])
    doc = json.loads((run / "report" / "report.json").read_text())
    cost = doc["cost"]
    assert list(cost["stages"]) == STAGES
    for name in STAGES:
        e = entries[name]
        assert cost["stages"][name] == {"seconds": e["seconds"], "peak_rss_mb": e["peak_rss_mb"]}
        assert doc["stages"][name]["peak_rss_mb"] == e["peak_rss_mb"]
    assert cost["peak_rss_mb"] == max(entries[n]["peak_rss_mb"] for n in STAGES)
    md = (run / "report" / "report.md").read_text()
    assert (
        "## Cost" in md
        and f"| merge | {entries['merge']['seconds']:.1f} | {entries['merge']['peak_rss_mb']:.1f} |" in md
    )

    # the report made again: the stages it reuses show the figures of the build that ran them
    result = build(load_recipe(tiny_recipe), run, from_stage="report", progress=False)
    assert result.ran == ["report"]
    again = json.loads((run / "report" / "report.json").read_text())["cost"]
    assert again["stages"] == cost["stages"]


def test_builder_quantizes_the_same_graph_into_the_same_bytes(tiny_llama, tmp_path):
    """build_genai runs the model builder with its int4 step holding one copy of the weights (engines/builder.py):
    the files are byte for byte those of the builder's own command line."""
    from edgetune.core.data import file_sha256
    from edgetune.engines.builder import build_genai

    ours, plain = tmp_path / "ours", tmp_path / "plain"
    for d in (ours, plain, plain / "cache"):
        d.mkdir()
    extra = {"block_size": 16, "accuracy_level": 4}
    build_genai(tiny_llama, ours, "int4", extra, plain=True)
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(tiny_llama), "-o", str(plain)]
    cmd += ["-p", "int4", "-e", "cpu", "-c", str(plain / "cache"), "--extra_options", "block_size=16"]
    subprocess.run([*cmd, "accuracy_level=4"], check=True, capture_output=True)
    for name in ("model.onnx", "model.onnx.data"):
        assert file_sha256(ours / name) == file_sha256(plain / name), name
