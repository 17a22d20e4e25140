"""Bringing your own model and method: adapter targets, adaptation methods, data that does not fit, special
tokens, a hub id without a network. Each bad input is one line, exit code 2, before any work."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner
from conftest import edit_recipe, make_chats, write_jsonl
from test_recipe import assert_one_line_error

from edgetune.cli import cli
from edgetune.core.recipe import load_recipe
from edgetune.pipeline import build


def validate(recipe):
    return CliRunner().invoke(cli, ["recipe", "validate", str(recipe)])


# -- LoRA targets -----------------------------------------------------------------------------------------------
def test_target_module_that_matches_nothing_names_the_modules_the_model_has(tiny_recipe):
    edit_recipe(tiny_recipe, lora={"target_modules": ["query", "valu"]})
    r = validate(tiny_recipe)
    assert_one_line_error(
        r, 2, "lora.target_modules", "'valu' matches no module", "bert", "query", "value", "key", "dense"
    )


def test_target_module_naming_a_container_is_refused(tiny_recipe):
    edit_recipe(tiny_recipe, lora={"target_modules": ["attention"]})
    assert_one_line_error(validate(tiny_recipe), 2, "lora.target_modules", "'attention' names", "linear layers")


def test_modules_to_save_typo(tiny_recipe):
    edit_recipe(tiny_recipe, lora={"modules_to_save": ["poooler"]})
    assert_one_line_error(validate(tiny_recipe), 2, "lora.modules_to_save", "'poooler'", "pooler")


def test_family_without_any_default_is_asked_for_targets(tiny_recipe, monkeypatch):
    """A family neither edgetune's table nor peft knows: its attention's query/value when they are named in a known
    way (and the plan says so); otherwise one line listing its linear layers."""
    from peft.utils import constants

    from edgetune.core import families
    from edgetune.pipeline import prepare

    monkeypatch.setitem(families.TARGETS, "bert", families.Targets())
    monkeypatch.delitem(constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING, "bert")
    edit_recipe(tiny_recipe, lora={"target_modules": None})
    plan = prepare(load_recipe(tiny_recipe)).adapter
    assert plan.target_modules == ["query", "value"] and "no table row or peft default for 'bert'" in plan.inferred
    monkeypatch.setattr(families, "ATTENTION_NAMES", ())  # projections named in no known way
    assert_one_line_error(
        validate(tiny_recipe), 2, "lora.target_modules", "no default for architecture 'bert'", "query", "value"
    )


# -- methods ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["prefix_tuning", "prompt_tuning", "p_tuning", "prefix"])
def test_unmergeable_methods_are_refused_with_the_reason(tiny_recipe, method):
    edit_recipe(tiny_recipe, lora={"method": method})
    assert_one_line_error(
        validate(tiny_recipe),
        2,
        "lora.method",
        "cannot be merged into the exported weights",
        "lora, dora, adalora, ia3",
    )


def test_unknown_method(tiny_recipe):
    edit_recipe(tiny_recipe, lora={"method": "qlora"})
    assert_one_line_error(validate(tiny_recipe), 2, "lora.method", "unknown method 'qlora'")


@pytest.mark.parametrize("method", ["dora", "adalora", "ia3"])
def test_each_method_builds_merges_and_passes_the_gates(tiny_recipe, tmp_path, method):
    """Every method trains, merges into plain weights (the float64 equality check), exports, quantizes and
    passes verify like LoRA; the adapter saved is the method's own."""
    edit_recipe(tiny_recipe, lora={"method": method, "target_modules": None}, training={"epochs": 2})
    run = tmp_path / "run"
    result = build(load_recipe(tiny_recipe), run, until="verify", progress=False)
    assert result.verification.passed, result.verification.checks
    adapter = json.loads((run / "finetune" / "adapter" / "adapter_config.json").read_text())
    assert adapter["peft_type"] == {"dora": "LORA", "adalora": "ADALORA", "ia3": "IA3"}[method]
    assert adapter.get("use_dora", False) == (method == "dora")
    if method == "ia3":
        assert sorted(adapter["feedforward_modules"]) == ["output.dense"]
    if method == "adalora":  # the final rank pattern was fixed and saved
        assert adapter["rank_pattern"], adapter
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    assert stages["merge"]["record"]["merge_max_abs_diff"] <= 1e-5
    # the adapter merge loaded is the one training evaluated: same held-out accuracy
    assert stages["merge"]["record"]["eval_metrics"] == stages["finetune"]["record"]["eval_metrics"]


def test_ia3_with_a_module_trained_in_full(tiny_recipe, tmp_path):
    """The default recipe's shape: the pooler trained in full beside the adapter ('dense' names its linear too).
    peft's own IA3 merge fails on it; edgetune's merge gives the proven-equal merged model."""
    edit_recipe(
        tiny_recipe,
        lora={"method": "ia3", "target_modules": ["query", "key", "value", "dense"], "modules_to_save": ["pooler"]},
    )
    run = tmp_path / "run"
    result = build(load_recipe(tiny_recipe), run, until="verify", progress=False)
    # the merged model's parity with ONNX is this test's subject; the int8 gates are test_int8.py's
    fp32 = [c for c in result.verification.checks if c.stage == "verify[onnx_fp32]"]
    assert fp32 and all(c.passed for c in fp32), result.verification.checks
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    assert stages["merge"]["record"]["merge_max_abs_diff"] <= 1e-5
    assert stages["merge"]["record"]["eval_metrics"] == stages["finetune"]["record"]["eval_metrics"]


def test_method_is_in_the_finetune_key_but_lora_keeps_old_keys(tiny_recipe, tmp_path):
    run = tmp_path / "run"
    build(load_recipe(tiny_recipe), run, until="finetune", progress=False)
    assert build(load_recipe(tiny_recipe), run, until="merge", progress=False).skipped == ["finetune"]
    edit_recipe(tiny_recipe, lora={"method": "dora"})
    assert "finetune" in build(load_recipe(tiny_recipe), run, until="finetune", progress=False).ran


def test_int4_aware_training_needs_lora(tiny_chat_recipe):
    edit_recipe(
        tiny_chat_recipe, lora={"method": "ia3"}, training={"int4_aware_epochs": 1}, quantize={"precisions": ["int4"]}
    )
    assert_one_line_error(validate(tiny_chat_recipe), 2, "training.int4_aware_epochs", "lora.method: lora")


def test_adalora_on_a_decoder_builds(tiny_chat_recipe, tmp_path):
    """The causal-LM loss goes through peft's forward for AdaLoRA, so its orthogonality penalty is trained."""
    edit_recipe(tiny_chat_recipe, lora={"method": "adalora"}, quantize={"precisions": ["int4"]})
    result = build(load_recipe(tiny_chat_recipe), tmp_path / "run", until="verify", progress=False)
    assert result.verification.passed, result.verification.checks


# -- data that does not fit ---------------------------------------------------------------------------------------
def test_chat_whose_prompt_fills_max_length_is_a_file_line_error(tiny_chat_recipe, tmp_path):
    rows = make_chats(3, seed=4) + [
        {"messages": [{"role": "user", "content": "x" * 140}, {"role": "assistant", "content": "{}"}]}
    ]
    write_jsonl(tmp_path / "data" / "train.jsonl", rows)
    r = CliRunner().invoke(cli, ["build", str(tiny_chat_recipe), "--out", str(tmp_path / "run")])
    assert_one_line_error(r, 2, "train.jsonl:4", "the prompt takes", "tokens", "training.max_length (128)")
    taken = int(r.output.split("the prompt takes ")[1].split()[0])
    assert taken >= 140  # one byte-level token per character, plus the chat template's
    assert not (tmp_path / "run").exists()


def test_long_classification_texts_are_counted_in_one_warning(tiny_recipe, tmp_path):
    from conftest import make_rows

    rows = make_rows(16, seed=1)
    for r in rows[:5]:
        r["text"] = " ".join(["lights"] * 40)  # 42 tokens with [CLS] and [SEP], over max_length 16
    write_jsonl(tmp_path / "data" / "train.jsonl", rows)
    r = validate(tiny_recipe)
    assert r.exit_code == 0, r.output
    warnings = [ln for ln in r.output.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1, r.output
    assert "5 of 66 texts are longer than training.max_length (16 tokens)" in warnings[0]
    assert "42 tokens" in warnings[0]


# -- special tokens ---------------------------------------------------------------------------------------------
def _copy_model(src, dst, **config_edits):
    import shutil

    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg.update(config_edits)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_eos_missing_from_config_is_taken_from_the_tokenizer(tiny_chat_recipe, tiny_llama, tmp_path):
    model = _copy_model(tiny_llama, tmp_path / "llama-no-eos", eos_token_id=None, bos_token_id=None, pad_token_id=None)
    gen = tmp_path / "llama-no-eos" / "generation_config.json"
    gen.write_text(json.dumps({k: v for k, v in json.loads(gen.read_text()).items() if not k.endswith("token_id")}))
    edit_recipe(tiny_chat_recipe, model={"source": str(model)}, quantize={"precisions": ["int4"]})
    run = tmp_path / "run"
    result = build(load_recipe(tiny_chat_recipe), run, until="verify", progress=False)
    assert result.verification.passed
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    genai = json.loads((run / "quantize" / "int4" / "genai_config.json").read_text())["model"]
    assert genai["eos_token_id"] == tok.eos_token_id and genai["bos_token_id"] == tok.bos_token_id


def test_eos_known_to_neither_config_nor_tokenizer(tiny_chat_recipe, tiny_llama, tmp_path):
    model = _copy_model(tiny_llama, tmp_path / "llama-no-eos", eos_token_id=None)
    tc = model / "tokenizer_config.json"
    cfg = json.loads(tc.read_text())
    cfg["eos_token"] = None
    cfg["pad_token"] = None
    tc.write_text(json.dumps(cfg))
    (model / "special_tokens_map.json").unlink(missing_ok=True)
    edit_recipe(tiny_chat_recipe, model={"source": str(model)})
    assert_one_line_error(validate(tiny_chat_recipe), 2, "model.source", "no end-of-sequence token", "eos_token_id")


# -- hub ids without a network ------------------------------------------------------------------------------------
def test_hub_id_without_a_network_fails_fast_in_one_line(tiny_recipe, monkeypatch, tmp_path):
    """A closed port on loopback stands in for an unreachable hub (no traffic leaves the machine)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))  # an empty cache
    edit_recipe(tiny_recipe, model={"source": "someone/not-cached-model"})
    t0 = time.monotonic()
    r = CliRunner().invoke(cli, ["build", str(tiny_recipe), "--out", str(tmp_path / "run")])
    assert time.monotonic() - t0 < 30
    assert_one_line_error(
        r,
        2,
        "model.source",
        "someone/not-cached-model",
        "hub (http://127.0.0.1:9) cannot be reached",
        "connection refused",
        "package:",
    )
    assert not (tmp_path / "run").exists()


def test_hub_id_with_hf_hub_offline(tiny_recipe, monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    edit_recipe(tiny_recipe, model={"source": "someone/not-cached-model"})
    assert_one_line_error(validate(tiny_recipe), 2, "HF_HUB_OFFLINE is set", "model.source")


@pytest.mark.parametrize("package", [{"android": "app"}, {"linux": ["arm64"]}])
def test_package_with_a_tokenizer_that_cannot_go_in_the_graph(tmp_path, package):
    """A packaged classifier carries its tokenizer inside the graph (WordPiece only): refused up front."""
    from archs import make_tiny
    from conftest import make_rows, write_recipe

    model = make_tiny("roberta", tmp_path / "models")
    (tmp_path / "app" / "app").mkdir(parents=True)  # a stand-in app: its path passes, the tokenizer does not
    (tmp_path / "app" / "app" / "build.gradle.kts").write_text("")
    recipe = write_recipe(
        tmp_path,
        make_rows(8, 1),
        make_rows(3, 2),
        {"name": "r", "task": "classification", "model": {"source": str(model)}, "package": package},
    )
    field = "package." + next(iter(package))
    import transformers

    # transformers 5 has no separate fast classes: its RobertaTokenizer is the fast one
    kind = "RobertaTokenizer" if hasattr(transformers, "TokenizersBackend") else "RobertaTokenizerFast"
    assert_one_line_error(validate(recipe), 2, field, "WordPiece", "roberta", f"is {kind} (")
