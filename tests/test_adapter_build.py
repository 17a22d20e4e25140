"""A recipe's adapters: list: one int4 base and an .onnx_adapter per task (stages/adapters.py), each trained
against the int4 base and verified against its own PyTorch model; per-adapter training reused when the list
grows."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from conftest import edit_recipe, write_jsonl

from edgetune.cli import cli
from edgetune.core.errors import RecipeError
from edgetune.core.recipe import load_recipe
from edgetune.pipeline import build
from edgetune.runtime.genai import GenaiLM

pytestmark = pytest.mark.both_lines  # the 4.57 line's genai 0.15.2 is the Android app's runtime


def make_timers(n: int, seed: int) -> list[dict]:
    """A second task for the same base: timers, answered in JSON."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        minutes, what = rng.choice([1, 2, 5, 10, 15, 30]), rng.choice(["tea", "pasta", "laundry", "a break"])
        user = f"set a timer for {minutes} minutes for {what}"
        answer = json.dumps({"timer": minutes, "label": what})
        out.append({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]})
    return out


def _adapters_recipe(recipe, tmp_path, names=("timers",)):
    entries = [{"name": "home"}]
    for i, name in enumerate(names):
        write_jsonl(tmp_path / "data" / f"{name}-train.jsonl", make_timers(24, seed=10 + i))
        write_jsonl(tmp_path / "data" / f"{name}-eval.jsonl", make_timers(6, seed=20 + i))
        entries.append(
            {
                "name": name,
                "dataset": {
                    "train": f"data/{name}-train.jsonl",
                    "eval": f"data/{name}-eval.jsonl",
                    "system_prompt": "Reply with JSON.",
                    "response_format": "json",
                },
            }
        )
    return edit_recipe(recipe, adapters=entries)


def test_two_adapters_over_one_int4_base(tiny_chat_recipe, tmp_path):
    recipe = edit_recipe(tiny_chat_recipe, training={"int4_aware_epochs": 1}, quantize={"precisions": ["int4"]})
    recipe = _adapters_recipe(recipe, tmp_path)
    lines: list[str] = []
    result = build(load_recipe(recipe), tmp_path / "run", progress=False, log=lines.append)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    shipped = manifest["stages"]["adapters"]["record"]
    names = [a["name"] for a in shipped["adapters"]]
    assert names == ["home", "timers"], shipped
    # each adapter trained against the int4 base (the own dataset again, as int4-aware epochs ask)
    assert all(a["int4_base"] for a in shipped["adapters"]), shipped
    assert any("base linears rounded to int4" in line for line in lines), lines
    checks = shipped["verification"]["checks"]
    assert {c["stage"] for c in checks} == {"adapters[home]", "adapters[timers]"}, checks
    assert all(c["passed"] for c in checks), checks
    assert {c["name"] for c in checks} == {"perplexity_ratio", "json_exact_match_drop"}
    figures = shipped["verification"]["models"]
    for name in names:  # the greedy output through the base+adapter path, against its own PyTorch model
        assert figures[f"{name}/onnx_int4+adapter"]["greedy_agreement"] >= 0.5, figures
    run = tmp_path / "run" / "adapters" / "model"
    assert sorted(p.name for p in run.glob("*.onnx_adapter")) == ["home.onnx_adapter", "timers.onnx_adapter"]
    # the two adapters are different tasks over one og.Model: they decode differently
    lm = GenaiLM(run, 1)
    for name in names:
        lm.load_adapter(name, run / f"{name}.onnx_adapter")
    prompt = list(range(40, 60))
    outs = {}
    for name in [*names, None, names[0]]:
        lm.use_adapter(name)
        outs[name] = lm.logits(prompt)
    assert np.abs(outs["home"] - outs["timers"]).max() > 1e-2
    assert np.abs(outs["home"] - outs[None]).max() > 1e-2
    assert result.verification is not None and result.verification.passed  # the merged model, as without adapters
    # the report: what the unmerged path costs against merging; the benchmark times it beside the merged model
    doc = json.loads(result.report.json_path.read_text())
    sizes = doc["adapters"]["sizes"]
    assert [row["tasks"] for row in sizes] == [1, 2] and all(row["merged_mb"] > 0 for row in sizes), sizes
    assert sizes[1]["base_plus_adapters_mb"] > sizes[0]["base_plus_adapters_mb"] > doc["adapters"]["base_mb"]
    assert doc["passed"] and {c["stage"] for c in doc["checks"]} >= {"adapters[home]", "adapters[timers]"}
    assert "onnx_int4+adapter" in {r["model"] for r in doc["stages"]["bench"]["results"]}
    assert "## Adapters (one int4 base" in result.report.markdown_path.read_text()
    # the app's package: the int4 base, each .onnx_adapter, golden cases per adapter from its own PyTorch model
    build(load_recipe(recipe), tmp_path / "run", until="package", progress=False)
    package = tmp_path / "run" / "package"
    manifest = json.loads((package / "manifest.json").read_text())
    assert [(a["name"], a["file"]) for a in manifest["chat"]["adapters"]] == [
        ("home", "home.onnx_adapter"),
        ("timers", "timers.onnx_adapter"),
    ]
    assert {"home.onnx_adapter", "timers.onnx_adapter"} <= set(manifest["model"]["files"])
    assert manifest["model"]["sha256"] == shipped["model"]["sha256"]
    golden = json.loads((package / "golden.json").read_text())["cases"]
    assert {c["adapter"] for c in golden} == {"home", "timers"}, golden
    # the CLI: one prompt with an adapter, and one-line errors for what the run does not have
    r = CliRunner().invoke(cli, ["generate", str(tmp_path / "run"), "--adapter", "timers", "--prompt", "tea, 4 min"])
    assert r.exit_code == 0 and r.output.strip(), r.output
    for args, message in (
        (["--adapter", "nope"], "no adapter named 'nope' (the run has: home, timers)"),
        (["--adapter", "home", "--precision", "int8"], "adapters run over the int4 base only"),
    ):
        r = CliRunner().invoke(cli, ["generate", str(tmp_path / "run"), *args, "--prompt", "hi"])
        assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, r.output
    # the chat: /adapter switches on the loaded base
    chat = "hello\n/adapter timers\nhello\n/adapter nope\n/adapter\nhello\n"
    r = CliRunner().invoke(cli, ["chat", str(tmp_path / "run"), "--adapter", "home", "--max-tokens", "4"], input=chat)
    assert r.exit_code == 0, r.output
    assert "(adapter: timers; a new conversation)" in r.output and "(adapter: none, the bare base" in r.output
    assert "no adapter named 'nope'" in r.output, r.output
    # a third task: only it trains; the other two are kept from the last run, and the merged path is untouched
    recipe = _adapters_recipe(recipe, tmp_path, names=("timers", "alarms"))
    lines.clear()
    third = build(load_recipe(recipe), tmp_path / "run", progress=False, log=lines.append)
    trained = [line for line in lines if line.startswith("train-adapters: ")]
    assert any("home: trained before" in line for line in trained), lines
    assert any("timers: trained before" in line for line in trained), trained
    assert any("alarms: training" in line for line in trained), trained
    # the training loop's own lines name the adapter's stage, not finetune (which was kept)
    assert any(line.startswith("train-adapters: alarms: epoch=1 ") for line in lines), lines
    assert not [line for line in lines if line.startswith("finetune: ") and "epoch" in line], lines
    assert {"finetune", "merge", "export", "quantize", "verify"} <= set(third.skipped), (third.skipped, lines)
    assert "train-adapters" not in third.skipped and "adapters" not in third.skipped
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    shipped = manifest["stages"]["adapters"]["record"]["adapters"]
    assert [a["name"] for a in shipped] == ["home", "timers", "alarms"], shipped


@pytest.mark.parametrize(
    ("adapters", "message"),
    [
        ([{"name": "a"}, {"name": "a", "dataset": {"train": "data/train.jsonl"}}], "the name a is given twice"),
        ([{"name": "a", "dataset": {"train": "data/train.jsonl"}}], "exactly one entry has no dataset"),
        ([{"name": "a"}, {"name": "b", "dataset": {"train": "data/none.jsonl"}}], r"adapters\[1\]\.dataset\.train"),
    ],
)
def test_bad_adapters_sections_fail_in_one_line(tiny_chat_recipe, adapters, message):
    data = yaml.safe_load(tiny_chat_recipe.read_text())
    data["adapters"] = adapters
    tiny_chat_recipe.write_text(yaml.safe_dump(data))
    with pytest.raises(RecipeError, match=message) as e:
        load_recipe(tiny_chat_recipe)
    assert "\n" not in str(e.value)
