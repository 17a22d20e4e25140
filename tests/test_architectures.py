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
from edgetune.core.families import default_targets, model_info, plan_adapter
from edgetune.core.recipe import LoraConfig, load_recipe
from edgetune.pipeline import STAGES, build

# encoders neither edgetune's table nor peft names targets for: their attention's query/value are found
INFERRED = ["camembert", "roformer", "convbert", "mobilebert"]
ENCODERS = [
    "bert",
    "distilbert",
    "distilbert-bert-tok",
    "roberta",
    "xlm-roberta",
    "deberta-v2",
    "electra",
    "albert",
    "mpnet",
    "modernbert",
    *INFERRED,
]
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
# the part of the matrix .ci/run also builds on the transformers 4.57 line (optimum-onnx, genai 0.15.2)
BOTH_LINES = {"bert", "distilbert-bert-tok", "roberta", "deberta-v2", "llama", "qwen2", "phi3", "gpt2", "olmo"}


def _params(archs):
    return [pytest.param(a, marks=pytest.mark.both_lines) if a in BOTH_LINES else a for a in archs]


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


@pytest.mark.parametrize("arch", _params(ENCODERS + DECODERS))
def test_architecture_builds_end_to_end(tmp_path, arch):
    recipe = _recipe(tmp_path, arch)
    run = tmp_path / "run"
    lines: list[str] = []
    result = build(load_recipe(recipe), run, progress=False, log=lines.append)
    assert result.ran == [s for s in STAGES if s not in ("package", "compress", "train-adapters", "adapters")]
    report = json.loads((run / "report" / "report.json").read_text())
    assert report["passed"], [c for c in report["checks"] if not c["passed"]]
    assert {r["model"] for r in report["stages"]["bench"]["results"]} >= {"pytorch_fp32", "onnx_fp32"}
    # the adapter targets the family's default modules
    info = ARCHS[arch]
    adapter = json.loads((run / "finetune" / "adapter" / "adapter_config.json").read_text())
    model_type = json.loads((run / "merge" / "model" / "config.json").read_text())["model_type"]
    if arch in INFERRED:  # found in the model's structure, and the build log says which
        assert default_targets(model_type, "lora")[0] is None
        assert sorted(adapter["target_modules"]) == ["query", "value"]
        assert any("adapting its attention's query, value" in ln for ln in lines), lines
    else:
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


@pytest.mark.parametrize("arch", _params(sorted(REFUSED)))
def test_architecture_is_refused_before_any_work(tmp_path, arch):
    recipe = _recipe(tmp_path, arch)
    for args in (["recipe", "validate", str(recipe)], ["build", str(recipe), "--out", str(tmp_path / "run")]):
        r = CliRunner().invoke(cli, args)
        assert_one_line_error(r, 2, "model.source", f"architecture '{arch}'", "cannot be exported", REFUSED[arch])
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("arch", INFERRED)
def test_ia3_targets_are_inferred_from_the_structure_too(tmp_path, arch):
    """IA3 scales the attention's keys and values and BERT's feed-forward output, as peft's BERT default does."""
    info = model_info(make_tiny(arch, tmp_path), "classification")
    plan = plan_adapter(info, "classification", LoraConfig(method="ia3"))
    assert plan.target_modules == ["key", "value", "output.dense"], plan
    assert plan.feedforward_modules == ["output.dense"]
    assert "key, value, output.dense" in plan.inferred


def test_tokenizer_gives_only_what_the_forward_takes_and_its_copies_keep_that(tmp_path):
    """DistilBERT with a BERT tokenizer: no token_type_ids, also from a saved copy with no model config (the
    adapter's). A copy's folder name is never taken for a model type (AutoConfig reads '..._t5' as T5)."""
    from edgetune.tasks import get_task

    task = get_task("classification")
    for arch, expect in (("distilbert-bert-tok", ["input_ids", "attention_mask"]), ("roformer", None)):
        folder = make_tiny(arch, tmp_path / "models")
        tok = task.load_tokenizer(folder)
        expect = expect or ["input_ids", "token_type_ids", "attention_mask"]
        assert tok.model_input_names == expect and sorted(tok(["a b"])) == sorted(expect)
        copy = tmp_path / "end_t5" / ("adapter" if arch == "roformer" else "copy")
        tok.save_pretrained(copy)
        assert task.load_tokenizer(copy).model_input_names == expect
