"""build() on a tiny random BERT: every stage, the manifest, resume and the parity gate."""

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from edgetune.cli import cli
from edgetune.core.errors import CheckFailed
from edgetune.core.recipe import load_recipe
from edgetune.pipeline import STAGES, build

# the recipe names no Android project and no compress: section
UNPACKAGED = [
    s for s in STAGES if s not in ("package", "compress", "train-adapters", "adapters")
]  # a classifier, no package


@pytest.fixture
def built(tiny_recipe, tmp_path):
    result = build(load_recipe(tiny_recipe), tmp_path / "run", progress=False)
    return tiny_recipe, tmp_path / "run", result


def test_build_runs_every_stage_and_writes_report(built):
    _, run, result = built
    assert result.ran == UNPACKAGED
    manifest = json.loads((run / "manifest.json").read_text())
    assert set(manifest["stages"]) == set(UNPACKAGED)
    for stage, entry in manifest["stages"].items():
        assert entry["outputs"], stage
        for rel in entry["outputs"]:
            assert (run / rel).is_file()
    # peft's standard adapter format
    from peft import PeftConfig

    assert PeftConfig.from_pretrained(run / "finetune" / "adapter").r == 4
    report = json.loads((run / "report" / "report.json").read_text())
    assert report["passed"] is True
    assert {"pytorch_fp32", "onnx_fp32", "onnx_int8"} <= set(report["summary"]["models"])
    assert report["stages"]["merge"]["merge_max_abs_diff"] <= 1e-5
    fp32 = report["summary"]["models"]["onnx_fp32"]
    assert fp32["eval"]["max_abs_diff"] <= 1e-4
    assert set(fp32["p50_ms"]) == {"8", "16"} and "p50_ratio_to_baseline" in fp32
    assert (run / "report" / "latency.png").stat().st_size > 1000
    assert "## Benchmark" in (run / "report" / "report.md").read_text()
    assert not list(run.glob("*.tmp")) and not (run / "finetune.ckpt").exists()


def test_rebuild_skips_finished_stages(built):
    recipe, run, _ = built
    again = build(load_recipe(recipe), run, progress=False)
    assert again.ran == []  # the report too: its key is its inputs' hashes (and the device results), not a time
    assert again.skipped == UNPACKAGED


def test_a_run_directory_of_an_older_key_version_is_rebuilt_with_one_line(built):
    """Keys carry a version (build.Key.version), not compatibility branches: an entry written before keys had
    versions (as edgetune 0.x wrote them) or with another version is rebuilt, and the build says so once."""
    recipe, run, _ = built
    manifest = json.loads((run / "manifest.json").read_text())
    for entry in manifest["stages"].values():
        del entry["key_version"]  # the manifest of a release before versioned keys
    (run / "manifest.json").write_text(json.dumps(manifest))
    lines: list[str] = []
    again = build(load_recipe(recipe), run, progress=False, log=lines.append)
    assert again.ran == UNPACKAGED
    said = [ln for ln in lines if "made by another edgetune" in ln]
    assert said == ["finetune: made by another edgetune (key version 0, now 1): rebuilding it and the stages after it"]
    assert build(load_recipe(recipe), run, progress=False).ran == []  # and then it is up to date


def test_changed_config_reruns_from_that_stage(built):
    from conftest import edit_recipe

    recipe, run, _ = built
    edit_recipe(recipe, quantize={"per_channel": False})
    again = build(load_recipe(recipe), run, progress=False)
    assert again.skipped == ["finetune", "merge", "export"]
    assert again.ran == ["quantize", "verify", "bench", "report"]


def test_from_stage_and_force(built):
    recipe, run, _ = built
    assert build(load_recipe(recipe), run, from_stage="verify", progress=False).ran == ["verify", "bench", "report"]
    assert build(load_recipe(recipe), run, force=True, progress=False).ran == UNPACKAGED


def _scale_largest_weight(path, factor=1.5):
    m = onnx.load(path)
    init = max(m.graph.initializer, key=lambda t: np.prod(t.dims) if t.data_type == onnx.TensorProto.FLOAT else 0)
    arr = numpy_helper.to_array(init) * factor
    init.CopyFrom(numpy_helper.from_array(arr.astype(np.float32), init.name))
    onnx.save(m, path)
    return init.name


def test_tampered_onnx_fails_verify_and_build_heals_it(built):
    recipe, run, _ = built
    name = _scale_largest_weight(run / "export" / "model.onnx")
    r = CliRunner().invoke(cli, ["verify", str(recipe), "--out", str(run)])
    assert r.exit_code == 1, r.output
    err = [ln for ln in r.output.splitlines() if ln.startswith("Error:")]
    # the relative parity gate (the recipe bounds no absolute diff) names the tampered export
    assert len(err) == 1 and "verify[onnx_fp32]: max_rel_diff" in err[0] and "must be <= 0.0005" in err[0], (
        name,
        r.output,
    )
    # build notices the export no longer matches its manifest entry, redoes it and passes again
    again = build(load_recipe(recipe), run, progress=False)
    assert "export" in again.ran and again.verification.passed


def test_failed_gate_still_writes_report(built):
    from conftest import edit_recipe

    recipe, run, _ = built
    edit_recipe(recipe, verify={"fp32_max_abs_diff": 0.0})
    with pytest.raises(CheckFailed, match=r"verify\[onnx_fp32\]: max_abs_diff"):
        build(load_recipe(recipe), run, progress=False)
    report = json.loads((run / "report" / "report.json").read_text())
    assert report["passed"] is False
    assert any(not c["passed"] and c["name"] == "max_abs_diff" for c in report["checks"])


def test_second_build_on_same_run_dir_is_refused(built):
    from edgetune.core.errors import EdgetuneError
    from edgetune.core.rundir import RunDir

    recipe, run, _ = built
    with RunDir(run):
        with pytest.raises(EdgetuneError, match="in use by another edgetune process"):
            build(load_recipe(recipe), run, progress=False)


def test_bench_any_onnx_file(built):
    _, run, _ = built
    r = CliRunner().invoke(
        cli,
        [
            "bench",
            str(run / "quantize" / "model_int8.onnx"),
            "--seq",
            "8",
            "--runs",
            "3",
            "--warmup",
            "1",
            "--threads",
            "1",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "model_int8.onnx" in r.output and "p50 ms" in r.output


def test_static_int8_with_calibration(tiny_recipe, tmp_path):
    from conftest import edit_recipe

    edit_recipe(tiny_recipe, quantize={"mode": "static", "calibration_samples": 16})
    result = build(load_recipe(tiny_recipe), tmp_path / "run", until="verify", progress=False)
    assert result.verification is not None
    import onnx as _onnx

    ops = {n.op_type for n in _onnx.load(tmp_path / "run" / "quantize" / "model_int8.onnx").graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops, ops  # QDQ form: activations quantized with calibrated scales
    m = result.verification.models["onnx_int8"]
    assert 0 <= m["top1_agreement"] <= 1 and m["mean_cosine"] > 0.5
