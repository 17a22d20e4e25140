"""The architecture matrix: a tiny random model of each family users bring (tests/archs.py) goes through the
whole build (finetune, merge, export, quantize, verify, a short bench, report) with the recipe's defaults for
its adapter targets, or is refused before any work in one line naming the architecture and the reason."""

from __future__ import annotations

import json

import pytest
from archs import ARCHS, make_tiny
from click.testing import CliRunner
from conftest import make_chats, make_rows, write_recipe
from test_recipe import assert_one_line_error

from edgetune.cli import cli
from edgetune.core.families import default_targets
from edgetune.core.recipe import load_recipe
from edgetune.pipeline import STAGES, build

ENCODERS = ["bert", "distilbert", "roberta", "xlm-roberta", "deberta-v2", "electra", "albert", "mpnet", "modernbert"]
DECODERS = [
    "llama",
    "mistral",
    "qwen2",
    "qwen2-noeos",
    "qwen3",
    "phi3",
    "gemma",
    "gemma2",
    "granite",
    "phi",
    "nemotron",
    "lfm2",
]
# decoders the pinned model builder does not export, or exports wrongly: refused before stage one
REFUSED = {
    "gpt2": "does not support it",
    "gpt_neox": "does not support it",
    "falcon": "does not support it",
    "opt": "does not support it",
    "bloom": "does not support it",
    "stablelm": "does not support it",
    "starcoder2": "does not support it",
    "olmo": "LayerNorm as RMSNorm",
    "smollm3": "NoPE",
}


def _recipe(tmp_path, arch: str):
    model = make_tiny(arch, tmp_path / "models")
    if ARCHS[arch].task == "classification":
        return write_recipe(
            tmp_path,
            make_rows(16, seed=1),
            make_rows(6, seed=2),
            {
                "name": f"matrix-{arch}",
                "task": "classification",
                "model": {"source": str(model)},
                "lora": {"r": 4, "alpha": 8},
                "training": {"epochs": 2, "learning_rate": 0.01, "batch_size": 8, "max_length": 16},
                "benchmark": {"threads": 1, "sequence_lengths": [8], "warmup": 1, "runs": 3, "rounds": 1},
            },
        )
    return write_recipe(
        tmp_path,
        make_chats(16, seed=1),
        make_chats(4, seed=2),
        {
            "name": f"matrix-{arch}",
            "task": "causal-lm",
            "model": {"source": str(model)},
            "dataset": {"system_prompt": "Reply with JSON.", "response_format": "json"},
            "lora": {"r": 4, "alpha": 8},
            "training": {"epochs": 1, "learning_rate": 0.01, "batch_size": 8, "max_length": 128},
            "quantize": {"precisions": ["int4"], "int4_block_size": 16},
            "verify": {"greedy_tokens": 8},
            "benchmark": {"threads": 1, "sequence_lengths": [16], "new_tokens": 8, "warmup": 1, "runs": 2, "rounds": 1},
        },
    )


@pytest.mark.parametrize("arch", ENCODERS + DECODERS)
def test_architecture_builds_end_to_end(tmp_path, arch):
    recipe = _recipe(tmp_path, arch)
    run = tmp_path / "run"
    result = build(load_recipe(recipe), run, progress=False)
    assert result.ran == [s for s in STAGES if s not in ("package", "compress")]
    report = json.loads((run / "report" / "report.json").read_text())
    assert report["passed"], [c for c in report["checks"] if not c["passed"]]
    assert {r["model"] for r in report["stages"]["bench"]["results"]} >= {"pytorch_fp32", "onnx_fp32"}
    # the adapter targets the family's default modules
    info = ARCHS[arch]
    adapter = json.loads((run / "finetune" / "adapter" / "adapter_config.json").read_text())
    model_type = json.loads((run / "merge" / "model" / "config.json").read_text())["model_type"]
    assert sorted(adapter["target_modules"]) == sorted(default_targets(model_type, "lora")[0])
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    if info.task == "classification":
        # modules the base checkpoint lacks are trained and saved: the merged model scores what training did
        assert stages["merge"]["record"]["eval_metrics"] == stages["finetune"]["record"]["eval_metrics"]
        for extra in info.modules_to_save:
            assert extra in adapter["modules_to_save"], adapter["modules_to_save"]
    else:
        genai = json.loads((run / "quantize" / "int4" / "genai_config.json").read_text())["model"]
        assert isinstance(genai["eos_token_id"], (int, list)), genai


@pytest.mark.parametrize("arch", sorted(REFUSED))
def test_architecture_is_refused_before_any_work(tmp_path, arch):
    recipe = _recipe(tmp_path, arch)
    for args in (["recipe", "validate", str(recipe)], ["build", str(recipe), "--out", str(tmp_path / "run")]):
        r = CliRunner().invoke(cli, args)
        assert_one_line_error(r, 2, "model.source", f"architecture '{arch}'", "cannot be exported", REFUSED[arch])
    assert not (tmp_path / "run").exists()
