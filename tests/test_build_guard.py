"""A late stage that fails still leaves the bench and report of what finished (issue 14, point 1); a different
recipe is not built into an existing run directory without --force (point 7)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import edit_recipe, write_jsonl
from test_recipe import assert_one_line_error

from edgetune.cli import cli
from edgetune.stages.merge import Merge


def build(recipe: Path, out: Path, *extra: str):
    return CliRunner().invoke(cli, ["build", str(recipe), "--out", str(out), "--no-progress", *extra])


@pytest.fixture
def tiny_recipe(tiny_recipe):
    """The tiny recipe with verify's int8 gates open: these tests are about the run directory and the stages that
    still run after a failure, and a random tiny model's int8 error is not theirs to judge (test_int8.py)."""
    return edit_recipe(
        tiny_recipe, verify={"int8_min_top1_agreement": 0.0, "int8_max_accuracy_drop": 1.0, "int8_min_cosine": -1.0}
    )


def android_app(folder: Path) -> Path:
    (folder / "app").mkdir(parents=True)
    (folder / "app" / "build.gradle.kts").write_text("// stand-in\n")
    return folder


def manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())["stages"]


def test_a_failed_package_stage_still_writes_bench_and_report(tiny_recipe, tmp_path, monkeypatch):
    """The case of the report: the Android project went away during a long build (here: while merging); the
    package stage fails with exit 2, and bench and report of what finished are written all the same. Fixed and
    run again, the package is made and the report is written anew."""
    app = android_app(tmp_path / "app-project")
    edit_recipe(tiny_recipe, package={"android": str(app)})
    marker = app / "app" / "build.gradle.kts"
    merge_run = Merge.run

    def merge_then_lose_the_app(self, ctx, inputs, out):
        marker.unlink()
        return merge_run(self, ctx, inputs, out)

    monkeypatch.setattr(Merge, "run", merge_then_lose_the_app)
    run = tmp_path / "run"
    r = build(tiny_recipe, run)
    assert r.exit_code == 2, r.output
    last = r.output.strip().splitlines()[-1]
    assert last.startswith("Error: package.android: ") and "is not the edgetune Android demo" in last, last
    assert f"(the report of the stages that finished: {run / 'report' / 'report.md'})" in last, r.output
    assert "Traceback" not in r.output
    stages = manifest(run)
    # the package was made in the run directory; installing it into the app is what failed
    assert {"verify", "package", "bench", "report"} <= stages.keys()
    assert (run / "bench" / "bench.json").is_file()
    md = (run / "report" / "report.md").read_text()
    assert "The build stopped: the **package** stage failed: package.android: " in md
    doc = json.loads((run / "report" / "report.json").read_text())
    assert doc["stopped"]["stage"] == "package" and doc["passed"] is False
    assert doc["summary"]["models"]["onnx_int8"]["p50_ms"]  # the bench figures are in it

    monkeypatch.setattr(Merge, "run", merge_run)
    marker.write_text("// stand-in\n")
    r = build(tiny_recipe, run)
    assert r.exit_code == 0, r.output
    assert "bench: up to date, skipped" in r.output and "report: running" in r.output
    doc = json.loads((run / "report" / "report.json").read_text())
    assert doc["stopped"] is None and doc["passed"] is True
    assert "The build stopped" not in (run / "report" / "report.md").read_text()
    assert (app / "app" / "src" / "main" / "assets" / "edgetune" / "model.onnx").is_file()


def test_a_different_recipe_is_refused_in_an_existing_run_directory(tiny_recipe, tmp_path):
    run = tmp_path / "run"
    assert build(tiny_recipe, run).exit_code == 0
    before = (run / "manifest.json").read_text()

    # the same project edited (more epochs) is rebuilt: only the stages whose keys changed run again
    edit_recipe(tiny_recipe, training={"epochs": 3})
    r = build(tiny_recipe, run)
    assert r.exit_code == 0 and "finetune: running" in r.output, r.output
    edited = (run / "manifest.json").read_text()

    # a copy of the recipe pointed at other data (one row changed), with the same name: another project
    rows = [json.loads(x) for x in open(tmp_path / "data" / "train.jsonl")]
    rows[0]["text"] += " please"
    other_data = write_jsonl(tmp_path / "other" / "train.jsonl", rows)
    other = tmp_path / "other" / "recipe.yaml"
    text = tiny_recipe.read_text().replace("data/train.jsonl", str(other_data))
    other.write_text(text.replace("data/eval.jsonl", str(tmp_path / "data" / "eval.jsonl")))
    renamed = tmp_path / "renamed.yaml"
    renamed.write_text(tiny_recipe.read_text().replace("name: tiny", "name: tiny-2"))
    for recipe, why in ((other, "dataset: other data"), (renamed, "name: tiny there, tiny-2 here")):
        for command in ("build", "merge"):
            r = CliRunner().invoke(cli, [command, str(recipe), "--out", str(run)])
            assert_one_line_error(
                r,
                2,
                f"{run}: this run directory was built from another recipe ({why}); pass --out DIR for a new run "
                f"directory, or `edgetune build --force` to rebuild this one from this recipe",
            )
            assert (run / "manifest.json").read_text() == edited  # untouched
    assert before != edited

    r = build(other, run, "--force")
    assert r.exit_code == 0, r.output
    assert json.loads((run / "recipe.json").read_text())["dataset"]["train"] == str(other_data)


def test_the_same_project_moved_elsewhere_is_not_another_recipe(tiny_recipe, tmp_path):
    """Recipe, data and run directory moved together: the same model and data, so the run is reused."""
    import shutil

    assert build(tiny_recipe, tmp_path / "run").exit_code == 0
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("data", "run"):
        shutil.move(tmp_path / name, moved / name)
    shutil.copy(tiny_recipe, moved / "recipe.yaml")
    r = build(moved / "recipe.yaml", moved / "run")
    assert r.exit_code == 0, r.output
    assert "finetune: up to date, skipped" in r.output
