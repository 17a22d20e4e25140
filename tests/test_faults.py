"""Faults: kill -9 at random moments of a build (many seeds), a full disk, and two builds at once.

The kill sweep runs FAULT_SEEDS seeds in CI (default 3); `EDGETUNE_FAULT_SEEDS=40 python -m pytest
tests/test_faults.py` runs the long sweep.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import tiny_classifier_recipe
from test_resume import _edgetune, _no_partial_files_under_final_names

from edgetune.cli import cli
from edgetune.core.lines import OPTIMUM, encoder_exporter

FAULT_SEEDS = int(os.environ.get("EDGETUNE_FAULT_SEEDS", "3"))


def _figures(run: Path) -> dict:
    """What must not depend on being interrupted: training curve, merge check, parity and accuracy of every
    model. (Not file hashes: ONNX files need not be byte-identical between two exports of the same model.)"""
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    verify = stages["verify"]["record"]["models"]
    return {
        "losses": [round(e["loss"], 5) for e in stages["finetune"]["record"]["epochs"]],
        "merge": round(stages["merge"]["record"]["merge_max_abs_diff"], 9),
        "verify": {
            m: {k: round(v, 5) for k, v in x.items() if k in ("accuracy", "max_abs_diff", "top1_agreement")}
            for m, x in verify.items()
        },
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_bert):
    """A recipe and one uninterrupted build of it: (recipe, figures, seconds)."""
    tmp = tmp_path_factory.mktemp("faults")
    # gates loosened: these tests are about faults, and int8 on a random 2-layer model is not the point
    recipe = tiny_classifier_recipe(
        tmp,
        tiny_bert,
        epochs=4,
        benchmark={"threads": 1, "sequence_lengths": [8], "warmup": 1, "runs": 3},
        verify={"int8_min_top1_agreement": 0.0, "int8_max_accuracy_drop": 1.0, "int8_min_cosine": -1.0},
    )
    t0 = time.perf_counter()
    done = subprocess.run(
        _edgetune("build", str(recipe), "--out", str(tmp / "ref"), "--no-progress"),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    return recipe, _figures(tmp / "ref"), time.perf_counter() - t0


@pytest.mark.parametrize("seed", range(FAULT_SEEDS))
def test_kill_at_a_random_moment_then_resume(reference, tmp_path, seed):
    recipe, want, seconds = reference
    run = tmp_path / "run"
    cmd = _edgetune("build", str(recipe), "--out", str(run), "--no-progress")
    delay = random.Random(seed).uniform(0.5, seconds)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    if run.exists():
        _no_partial_files_under_final_names(run)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (delay, done.stderr)
    assert _figures(run) == want, delay
    leftovers = [p.name for p in run.iterdir() if p.name.endswith((".tmp", ".old", ".ckpt"))]
    assert leftovers == [], leftovers


ORDER = ["finetune", "merge", "export", "quantize", "verify", "bench", "report"]

_DIE_AT_COMMIT = """
import os, signal, sys
from edgetune.cli import cli
from edgetune.core.rundir import RunDir
commit = RunDir.commit_dir
def die(self, stage):
    if stage == sys.argv[1] and sys.argv[2] == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    commit(self, stage)
    if stage == sys.argv[1]:
        os.kill(os.getpid(), signal.SIGKILL)
RunDir.commit_dir = die
cli(sys.argv[3:])
"""


def test_a_killed_manifest_write_leaves_no_temp_file(tmp_path):
    """atomic_write_text's temp files in the run dir, left by a kill before their rename, are removed by the next
    run; scratch folders are the stages' to clear."""
    from edgetune.core.rundir import RunDir, atomic_write_json

    run = tmp_path / "run"
    run.mkdir()
    atomic_write_json(run / "manifest.json", {"stages": {}})
    stale = run / ".manifest.json.k1ll3d.tmp"
    stale.write_text('{"stages": {"fine')
    (run / ".recipe.json.0dd.tmp").write_text("{")
    (run / "merge.tmp").mkdir()
    with RunDir(run) as rd:
        assert not stale.exists()
        assert rd.manifest() == {"stages": {}}
    assert sorted(p.name for p in run.iterdir()) == [".lock", "manifest.json", "merge.tmp"]


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("stage", ["merge", "report"])
def test_kill_next_to_the_rename_of_a_stage_folder(reference, tmp_path, stage, when):
    """The narrowest windows of a stage's commit: killed just before or just after its scratch folder is
    renamed into place. Either way no final folder the manifest does not record; the rerun redoes the stage
    when its folder never arrived."""
    import sys

    recipe, want, _ = reference
    run = tmp_path / "run"
    args = ["build", str(recipe), "--out", str(run), "--no-progress"]
    died = subprocess.run(
        [sys.executable, "-c", _DIE_AT_COMMIT, stage, when, *args], capture_output=True, text=True, timeout=900
    )
    assert died.returncode == -signal.SIGKILL, died.stderr
    assert (run / stage).exists() == (when == "after")
    _no_partial_files_under_final_names(run)
    done = subprocess.run(_edgetune(*args), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    redo = when == "before"
    assert (f"{stage}: running" in done.stderr) == redo, done.stderr
    assert (f"{stage}: up to date" in done.stderr) == (not redo), done.stderr
    assert _figures(run) == want


@pytest.mark.parametrize("stage", ORDER)
def test_disk_full_keeps_earlier_artifacts(reference, tmp_path, monkeypatch, stage):
    """The disk fills up in the middle of a stage, after it has written part of a file: one line, exit 1;
    the stages before it untouched; nothing under the failed stage's final name; the rerun completes."""
    import importlib

    from edgetune.core.data import file_sha256

    recipe, want, _ = reference
    run = tmp_path / "run"

    def full(*args, **kwargs):
        partial = run / f"{stage}.tmp" / "partial.bin"
        partial.write_bytes(b"\0" * 4096)
        raise OSError(errno.ENOSPC, "No space left on device", str(partial))

    # the function that does the classification task's work in each stage module
    exporter = "export_optimum" if encoder_exporter() == OPTIMUM else "export_torch"  # the line's exporter
    work = {"export": exporter, "quantize": "quantize_int8"}.get(stage, stage)
    monkeypatch.setattr(importlib.import_module(f"edgetune.stages.{stage}"), work, full)
    r = CliRunner().invoke(cli, ["build", str(recipe), "--out", str(run), "--no-progress"])
    assert r.exit_code == 1, (r.output, r.exception)
    err = [ln for ln in r.output.splitlines() if ln.startswith("Error:")]
    assert len(err) == 1 and "No space left on device" in err[0] and "free some space" in err[0], r.output
    assert "Traceback" not in r.output
    stages = json.loads((run / "manifest.json").read_text())["stages"] if (run / "manifest.json").exists() else {}
    assert set(stages) == set(ORDER[: ORDER.index(stage)])
    for entry in stages.values():  # the files of finished stages still hash to what the manifest recorded
        assert all(file_sha256(run / rel) == h for rel, h in entry["outputs"].items())
    assert not (run / stage).exists()
    monkeypatch.undo()
    r = CliRunner().invoke(cli, ["build", str(recipe), "--out", str(run), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert all(f"{s}: up to date, skipped" in r.output for s in stages), r.output
    assert _figures(run) == want


def test_two_builds_at_once(reference, tmp_path):
    recipe, _, _ = reference
    run = tmp_path / "run"
    cmd = _edgetune("build", str(recipe), "--out", str(run), "--no-progress")
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (run / ".lock").exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert second.returncode == 1
        assert second.stderr.strip().splitlines()[-1].startswith("Error: ")
        assert "is in use by another edgetune process" in second.stderr and "Traceback" not in second.stderr
    finally:
        first.wait(timeout=900)
    assert first.returncode == 0
