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


@pytest.mark.both_lines
def test_rotary_settings_transformers_5_saved_are_read_where_4x_reads_them():
    """legacy_rope: transformers 5 keeps rope_theta/scaling in rope_parameters, which 4.x ignores (it would use
    its default base). On the 4.x line they are copied where 4.x reads them; on 5, and without them, nothing."""
    from types import SimpleNamespace

    flat = SimpleNamespace(
        rope_theta=10000.0,
        rope_scaling=None,
        partial_rotary_factor=1.0,
        rope_parameters={"rope_theta": 500000.0, "rope_type": "linear", "factor": 2.0, "partial_rotary_factor": 0.5},
    )
    lines.legacy_rope(flat, line="transformers 4")
    assert (flat.rope_theta, flat.rope_scaling, flat.partial_rotary_factor) == (
        500000.0,
        {"rope_type": "linear", "factor": 2.0},
        0.5,
    )
    default = SimpleNamespace(
        rope_theta=10000.0, rope_scaling=None, rope_parameters={"rope_theta": 1e5, "rope_type": "default"}
    )
    assert lines.legacy_rope(default, line="transformers 4").rope_theta == 1e5 and default.rope_scaling is None
    nested = SimpleNamespace(  # per layer type (Gemma 3: rope_local_base_freq; ModernBERT: global/local_rope_theta)
        global_rope_theta=160000.0,
        local_rope_theta=10000.0,
        rope_parameters={
            "full_attention": {"rope_theta": 80000.0, "rope_type": "default"},
            "sliding_attention": {"rope_theta": 5000.0, "rope_type": "default"},
        },
    )
    lines.legacy_rope(nested, line="transformers 4")
    assert (nested.global_rope_theta, nested.local_rope_theta) == (80000.0, 5000.0)
    on5 = SimpleNamespace(rope_theta=10000.0, rope_parameters={"rope_theta": 500000.0})
    assert lines.legacy_rope(on5, line="transformers 5").rope_theta == 10000.0
    none = SimpleNamespace(rope_theta=10000.0)
    assert lines.legacy_rope(none, line="transformers 4").rope_theta == 10000.0


ROPE_SCRIPT = """
import json, shutil, sys
from pathlib import Path
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM
from edgetune.tasks import get_task
mode, src, dst = sys.argv[1:4]
if mode == "save":  # the tiny LLaMA's weights under a rotary base and scaling no class default has
    base = AutoModelForCausalLM.from_pretrained(src)
    keep = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "max_position_embeddings", "bos_token_id", "eos_token_id", "tie_word_embeddings")
    cfg = LlamaConfig(**{k: getattr(base.config, k) for k in keep}, rope_theta=500000.0,
                      rope_scaling={"rope_type": "linear", "factor": 2.0})
    model = LlamaForCausalLM(cfg)
    model.load_state_dict(base.state_dict())
    model.save_pretrained(dst)
    for f in Path(src).iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(f, dst)
model = get_task("causal-lm").load_model(Path(dst))
with torch.no_grad():
    logits = model(torch.arange(3, 40)[None]).logits[0]
print(json.dumps(logits.tolist()))
"""


# on the default line only (.ci/run): it runs the other line's python too
@pytest.mark.skipif(not OTHER, reason="EDGETUNE_OTHER_LINE_PYTHON names the other line's python (.ci/run sets it)")
def test_a_model_saved_on_one_line_is_the_same_model_on_the_other(tmp_path, tiny_llama):
    """A model folder saved by either line (a run directory's merged model) computes the same logits on the
    other: its rotary base and scaling included (transformers 5 saves them where 4.x does not look)."""
    import json

    import numpy as np

    assert OTHER
    for saver, reader in ((sys.executable, OTHER), (OTHER, sys.executable)):
        folder = tmp_path / f"saved-by-{Path(saver).parent.parent.name}"

        def logits(python, mode, folder=folder):
            r = subprocess.run(
                [python, "-c", ROPE_SCRIPT, mode, str(tiny_llama), str(folder)],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert r.returncode == 0, r.stderr[-3000:]
            return np.array(json.loads(r.stdout.strip().splitlines()[-1]))

        here, there = logits(saver, "save"), logits(reader, "load")
        assert np.abs(here - there).max() < 1e-4, (saver, reader, np.abs(here - there).max())
