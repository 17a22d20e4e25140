"""Corrupt artifacts: truncated or random ONNX files, wrong inputs, missing external data, an adapter from
another base model. verify, bench, merge and package each stop with one clear line, never a traceback."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from conftest import edit_recipe, tiny_classifier_recipe
from onnx import TensorProto, helper

from edgetune.cli import cli
from edgetune.core.recipe import load_recipe
from edgetune.pipeline import build


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_bert):
    """One tiny run, built once; each test works on its own copy."""
    tmp = tmp_path_factory.mktemp("corrupt")
    recipe = tiny_classifier_recipe(tmp, tiny_bert, epochs=1)
    build(load_recipe(recipe), tmp / "run", progress=False)
    return recipe, tmp / "run"


@pytest.fixture
def run_copy(finished, tmp_path):
    recipe, run = finished
    shutil.copytree(run, tmp_path / "run", ignore=shutil.ignore_patterns(".lock"))
    shutil.copytree(recipe.parent / "data", tmp_path / "data")
    shutil.copy(recipe, tmp_path / "recipe.yaml")
    return tmp_path / "recipe.yaml", tmp_path / "run"


def _one_line_error(r, code: int, *fragments: str) -> str:
    assert r.exit_code == code, (r.exit_code, r.output, r.exception)
    assert "Traceback" not in r.output
    errors = [ln for ln in r.output.splitlines() if ln.startswith("Error: ")]
    assert len(errors) == 1, r.output
    for f in fragments:
        assert f in errors[0], (f, errors[0])
    return errors[0]


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(4096))


@pytest.mark.parametrize("damage", [_truncate, _random_bytes], ids=["truncated", "random-bytes"])
def test_verify_on_a_corrupt_onnx_file(run_copy, damage):
    recipe, run = run_copy
    damage(run / "export" / "model.onnx")
    r = CliRunner().invoke(cli, ["verify", str(recipe), "--out", str(run)])
    _one_line_error(r, 1, "model.onnx")


@pytest.mark.parametrize("damage", [_truncate, _random_bytes], ids=["truncated", "random-bytes"])
def test_bench_on_a_corrupt_onnx_file(run_copy, damage):
    _, run = run_copy
    path = run / "quantize" / "model_int8.onnx"
    damage(path)
    r = CliRunner().invoke(cli, ["bench", str(path), "--runs", "2", "--seq", "8"])
    _one_line_error(r, 1, "model_int8.onnx")


def test_bench_of_a_missing_file(tmp_path):
    r = CliRunner().invoke(cli, ["bench", str(tmp_path / "nope.onnx")])
    _one_line_error(r, 2, "ONNX file not found")


def test_model_with_wrong_input_names_and_dtypes(run_copy):
    recipe, run = run_copy
    x = helper.make_tensor_value_info("pixels", TensorProto.FLOAT16, [1, 3])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT16, [1, 3])
    graph = helper.make_graph([helper.make_node("Identity", ["pixels"], ["logits"])], "wrong", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), run / "export" / "model.onnx")
    r = CliRunner().invoke(cli, ["verify", str(recipe), "--out", str(run)])
    _one_line_error(r, 1, "model.onnx wants inputs ['pixels']")


def test_missing_external_data_file(run_copy):
    recipe, run = run_copy
    path = run / "export" / "model.onnx"
    model = onnx.load(path)
    onnx.save(model, path, save_as_external_data=True, location="model.onnx.data", size_threshold=0)
    (run / "export" / "model.onnx.data").unlink()
    r = CliRunner().invoke(cli, ["verify", str(recipe), "--out", str(run)])
    _one_line_error(r, 1, "model.onnx")


def test_adapter_from_another_base_model(run_copy, tmp_path):
    """The run's adapter was trained on a 32-wide BERT; merge it onto a 48-wide one."""
    import torch
    from transformers import BertConfig, BertModel

    recipe, run = run_copy
    other = tmp_path / "other-bert"
    torch.manual_seed(1)
    BertModel(
        BertConfig(
            vocab_size=40,
            hidden_size=48,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=37,
            max_position_embeddings=64,
        )
    ).save_pretrained(other)
    for f in Path(load_recipe(recipe).model.source).glob("*token*"):
        shutil.copy(f, other / f.name)
    shutil.copy(Path(load_recipe(recipe).model.source) / "vocab.txt", other / "vocab.txt")
    edit_recipe(recipe, model={"source": str(other)})
    r = CliRunner().invoke(cli, ["merge", str(recipe), "--out", str(run)])
    # another model is another project: refused before any stage runs
    _one_line_error(r, 2, "built from another recipe (model.source: another model)")
    # a run directory from before edgetune recorded what it was built for: merge itself must stop cleanly
    meta = json.loads((run / "recipe.json").read_text())
    del meta["identity"]
    (run / "recipe.json").write_text(json.dumps(meta))
    r = CliRunner().invoke(cli, ["merge", str(recipe), "--out", str(run)])
    _one_line_error(r, 1, "merge: cannot load adapter")


def test_package_of_a_corrupt_model(run_copy, tmp_path):
    recipe, run = run_copy
    android = tmp_path / "android"
    (android / "app").mkdir(parents=True)
    (android / "app" / "build.gradle.kts").write_text("")
    _truncate(run / "quantize" / "model_int8.onnx")
    r = CliRunner().invoke(cli, ["package", str(run), "--android", str(android)])
    _one_line_error(r, 1, "model_int8.onnx")
    assert not (android / "app" / "src").exists()  # nothing half-installed


def _snapshot(folder: Path) -> dict:
    return {
        p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("plant", ["stage-folder", "file-in-stage", "scratch-folder", "manifest", "lock"])
@pytest.mark.parametrize("command", [["build"], ["package"], ["verify"]])
def test_symlinks_planted_in_the_run_dir_are_refused(run_copy, tmp_path, plant, command):
    """A symlink anywhere edgetune reads or writes in a run dir stops the run (exit 2, naming it) before
    anything is read through it or written through it; what it points to is left exactly as it was."""
    recipe, run = run_copy
    outside = tmp_path / "outside"
    if plant == "stage-folder":  # run/quantize -> a folder elsewhere holding the same files
        shutil.move(run / "quantize", outside)
        (run / "quantize").symlink_to(outside, target_is_directory=True)
        link = run / "quantize"
    elif plant == "file-in-stage":  # run/quantize/model_int8.onnx -> a file elsewhere
        outside.mkdir()
        shutil.move(run / "quantize" / "model_int8.onnx", outside / "model_int8.onnx")
        link = run / "quantize" / "model_int8.onnx"
        link.symlink_to(outside / "model_int8.onnx")
    elif plant == "scratch-folder":  # run/verify.tmp -> elsewhere: a rerun of verify would write into it
        outside.mkdir()
        (outside / "keep.txt").write_text("mine")
        link = run / "verify.tmp"
        link.symlink_to(outside, target_is_directory=True)
    else:
        outside.mkdir()
        name = "manifest.json" if plant == "manifest" else ".lock"
        if (run / name).exists():
            shutil.move(run / name, outside / name)
        else:
            (outside / name).write_text("")
        link = run / name
        link.symlink_to(outside / name)
    before = _snapshot(outside)
    args = [*command, str(recipe), "--out", str(run)]
    if command == ["build"]:
        args += ["--from", "verify"]
    r = CliRunner().invoke(cli, args)
    _one_line_error(r, 2, str(link), "symlink")
    assert _snapshot(outside) == before
    assert link.is_symlink()
