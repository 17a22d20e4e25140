"""The two library lines (issue 21): which one is installed and what it exports with, and a run directory built on
one line, then built again on the other and back, with a one-line reason for each stage that reruns and never a
traceback. The other line's Python comes from EDGETUNE_OTHER_LINE_PYTHON, which .ci/run sets on both lines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgetune.core import lines

REPO = Path(__file__).resolve().parents[1]
OTHER = os.environ.get("EDGETUNE_OTHER_LINE_PYTHON")


@pytest.mark.both_lines
def test_the_line_and_its_encoder_exporter_follow_what_is_installed():
    import transformers

    major = int(transformers.__version__.split(".")[0])
    assert lines.transformers_line() == f"transformers {major}"
    optimum = subprocess.run([sys.executable, "-c", "import optimum.exporters.onnx"], capture_output=True).returncode
    assert lines.encoder_exporter() == (lines.OPTIMUM if optimum == 0 and major == 4 else lines.TORCH)
    assert lines.release("5.25.0") == (5, 25) and lines.release("2.13.0+cpu") == (2, 13)
    assert lines.release("0.18.0rc1") == (0, 18) and lines.release(None) == (0, 0)


def _build(python: str, recipe: Path, run: Path) -> str:
    r = subprocess.run(
        [python, "-m", "edgetune", "build", str(recipe), "--out", str(run), "--no-progress"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    return out


def _version(python: str, dist: str) -> str:
    code = f"from importlib.metadata import version; print(version('{dist}'))"
    return subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


# on the default line only (.ci/run): it builds on both lines, from here to there and back
@pytest.mark.skipif(not OTHER, reason="EDGETUNE_OTHER_LINE_PYTHON names the other line's python (.ci/run sets it)")
@pytest.mark.parametrize("which", ["tiny_recipe", "tiny_chat_recipe"], ids=["encoder", "decoder"])
def test_a_run_directory_moves_to_the_other_line_and_back(tmp_path, request, which):
    assert OTHER
    recipe: Path = request.getfixturevalue(which)
    run = tmp_path / "run"
    here, there = sys.executable, OTHER
    assert _version(here, "transformers") != _version(there, "transformers"), "the other line is this one"
    _build(here, recipe, run)
    for python, before in ((there, here), (here, there)):
        out = _build(python, recipe, run)
        then, now = _version(before, "transformers"), _version(python, "transformers")
        assert "finetune: up to date, skipped" in out, out
        # export's tool changed with the line: it reruns, and says why in one line
        reason = f"export: what it reads changed since it ran with transformers {then} (now {now})"
        said = [ln for ln in out.splitlines() if ln.startswith(reason)]
        assert len(said) == 1 and said[0].endswith(": running it again"), out


@pytest.mark.both_lines
def test_the_builder_table_follows_the_installed_genai(monkeypatch):
    from edgetune.core import families
    from edgetune.core.errors import RecipeError

    ernie = families.ModelInfo("ernie4_5", "Ernie4_5ForCausalLM", None)
    for installed, knows_ernie in (("0.15.2", True), ("0.18.0", False), ("0.19.1", False)):
        monkeypatch.setattr(lines, "version", lambda dist, v=installed: v)
        assert ("Ernie4_5ForCausalLM" in families.genai_builder()) == knows_ernie
        assert "LlamaForCausalLM" in families.genai_builder()
    monkeypatch.setattr(lines, "version", lambda dist: "0.18.0")
    monkeypatch.setattr(families, "version", lambda dist: "0.18.0")
    with pytest.raises(RecipeError, match=r"0\.18\.0's model builder does not support it \(its 0\.15 release does\)"):
        families.check_genai_exportable(ernie)
