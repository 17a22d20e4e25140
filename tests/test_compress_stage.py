"""The compress stage in a build: the student replaces the merged model for every later stage, its figures and
the teacher's are in the report, and a task without compression refuses the section."""

from __future__ import annotations

import json

from click.testing import CliRunner
from conftest import edit_recipe
from test_recipe import assert_one_line_error

from edgetune.cli import cli
from edgetune.core.recipe import load_recipe
from edgetune.pipeline import build


def test_a_student_goes_through_every_later_stage(tiny_recipe, tmp_path):
    import onnx

    edit_recipe(tiny_recipe, compress={"every": 2, "epochs": 2, "learning_rate": 1e-3, "augment": 1})
    run = tmp_path / "run"
    result = build(load_recipe(tiny_recipe), run, progress=False)
    assert "compress" in result.ran
    manifest = json.loads((run / "manifest.json").read_text())
    student = manifest["stages"]["compress"]["record"]
    assert student["kept_layers"] == [1] and student["teacher_layers"] == 2
    assert student["student_parameters"] < student["teacher_parameters"]
    cfg = json.loads((run / "compress" / "model" / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 1
    # the exported graph is the student's: one layer's attention and FFN, not two
    graph = onnx.load(run / "export" / "model.onnx", load_external_data=False).graph
    assert not any("layer.1" in n.name for n in graph.node) and any("layer.0" in n.name for n in graph.node)
    doc = json.loads((run / "report" / "report.json").read_text())
    assert doc["passed"], doc["checks"]  # ONNX against the student's PyTorch
    md = (run / "report" / "report.md").read_text()
    assert "## Compress (a distilled student)" in md and "(teacher " in md
    # the merged teacher's accuracy stays in the report beside the student's
    assert doc["stages"]["merge"]["eval_metrics"]["accuracy"] == student["teacher_accuracy"]
    again = build(load_recipe(tiny_recipe), run, progress=False)
    assert again.ran == []


def test_compress_is_refused_for_a_task_without_it(tiny_chat_recipe):
    edit_recipe(tiny_chat_recipe, compress={"every": 2})
    r = CliRunner().invoke(cli, ["recipe", "validate", str(tiny_chat_recipe)])
    assert_one_line_error(r, 2, "compress: the causal-lm task has no compression stage")


def test_the_compress_command_on_a_task_without_it_is_one_line(tiny_chat_recipe, tmp_path):
    r = CliRunner().invoke(cli, ["compress", str(tiny_chat_recipe), "--out", str(tmp_path / "run")])
    assert_one_line_error(r, 2, "the causal-lm task has no compress stage")
