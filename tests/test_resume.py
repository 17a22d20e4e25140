"""kill -9 in the middle of a build, then the same command again: it resumes and redoes nothing finished."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import edit_recipe


def _edgetune(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgetune.cli", *args]


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ready():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("never reached the kill point")


def _no_partial_files_under_final_names(run: Path) -> None:
    manifest = json.loads((run / "manifest.json").read_text()) if (run / "manifest.json").exists() else {"stages": {}}
    for stage_dir in run.iterdir():
        if stage_dir.is_dir() and not stage_dir.name.endswith((".tmp", ".ckpt", ".old")):
            # a final stage folder exists only for a stage the manifest records as finished
            assert stage_dir.name in manifest["stages"], stage_dir


def test_kill_during_finetune_resumes_from_checkpoint(tiny_recipe, tmp_path):
    edit_recipe(tiny_recipe, training={"epochs": 12})
    run = tmp_path / "run"
    cmd = _edgetune("build", str(tiny_recipe), "--out", str(run), "--no-progress")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _kill_when(proc, lambda: any(run.glob("finetune.ckpt/*/state.pt")))
    assert not (run / "finetune").exists()
    _no_partial_files_under_final_names(run)

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "finetune: resuming after epoch" in done.stderr

    # the same result as a run that was never interrupted
    clean = tmp_path / "clean"
    ref = subprocess.run(_edgetune("finetune", str(tiny_recipe), "--out", str(clean)), capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    got = json.loads((run / "manifest.json").read_text())["stages"]["finetune"]["record"]["epochs"]
    want = json.loads((clean / "manifest.json").read_text())["stages"]["finetune"]["record"]["epochs"]
    assert [round(e["loss"], 5) for e in got] == [round(e["loss"], 5) for e in want]
    assert [e["eval_accuracy"] for e in got] == [e["eval_accuracy"] for e in want]


def test_kill_during_bench_keeps_finished_stages(tiny_recipe, tmp_path):
    run = tmp_path / "run"
    cmd = _edgetune("build", str(tiny_recipe), "--out", str(run), "--no-progress")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _kill_when(proc, lambda: (run / "bench.tmp").exists())
    _no_partial_files_under_final_names(run)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    for stage in ("finetune", "merge", "export", "quantize", "verify"):
        assert f"{stage}: up to date, skipped" in done.stderr, done.stderr
    assert "bench: running" in done.stderr
    assert not (run / "bench.tmp").exists()
