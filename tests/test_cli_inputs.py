"""What the commands take: a recipe or a run directory alike, one line when it is neither; `bench` keeps the report
in step with bench.json; `bench --help` states the defaults bench really uses."""

from __future__ import annotations

import json
import re
from pathlib import Path

import onnx
import pytest
import yaml
from click.testing import CliRunner
from conftest import tiny_classifier_recipe
from onnx import TensorProto, helper
from test_recipe import assert_one_line_error

from edgetune.cli import cli
from edgetune.core.errors import EdgetuneError

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_bert) -> tuple[Path, Path]:
    """A tiny classifier run, built: (recipe, run dir)."""
    tmp = tmp_path_factory.mktemp("inputs")
    recipe = tiny_classifier_recipe(
        tmp, tiny_bert, benchmark={"threads": 1, "sequence_lengths": [8], "warmup": 0, "runs": 2, "rounds": 1}
    )
    r = run_cli("build", recipe, "--out", tmp / "run", "--no-progress")
    assert r.exit_code == 0, r.output
    return recipe, tmp / "run"


@pytest.mark.parametrize("command", [["report"], ["doctor"], ["bench", "--runs", "2"], ["verify"]])
def test_commands_take_a_run_dir(built, command):
    _, run = built
    r = run_cli(command[0], run, *command[1:])
    assert r.exit_code == 0, r.output
    if command[0] == "doctor":
        assert "tiny needs about" in r.output  # the estimate for the run's recipe
    else:
        assert f"run dir: {run}" in r.output


@pytest.mark.parametrize("command", ["bench", "report", "doctor", "finetune", "package"])
def test_neither_a_recipe_nor_a_run_dir(tmp_path, command):
    assert_one_line_error(
        run_cli(command, tmp_path / "nope"), 2, str(tmp_path / "nope"), "no such recipe file or run directory"
    )
    (tmp_path / "folder").mkdir()
    assert_one_line_error(run_cli(command, tmp_path / "folder"), 2, "folder", "not an edgetune run directory")


def test_a_run_dir_and_another_out(built, tmp_path):
    _, run = built
    assert_one_line_error(run_cli("report", run, "--out", tmp_path / "other"), 2, "--out", "run directory already")


def _figures(run: Path) -> tuple[dict, dict]:
    """p50 per (model, seq) in bench.json and in report.json."""
    bench = json.loads((run / "bench" / "bench.json").read_text())
    report = json.loads((run / "report" / "report.json").read_text())
    in_bench = {(r["model"], str(r["seq_len"])): r["p50_ms"] for r in bench["results"]}
    in_report = {
        (name, seq): p50 for name, m in report["summary"]["models"].items() for seq, p50 in m.get("p50_ms", {}).items()
    }
    return in_bench, in_report


@pytest.mark.parametrize("given", ["run dir", "recipe"])
def test_bench_writes_the_report_again(built, given):
    """bench.json is new after `bench`, and report.json and report.md show its figures, not the old ones."""
    recipe, run = built
    before, _ = _figures(run)
    target = [run] if given == "run dir" else [recipe, "--out", run]
    r = run_cli("bench", *target, "--runs", "3")
    assert r.exit_code == 0, r.output
    in_bench, in_report = _figures(run)
    assert in_bench != before  # measured again
    assert in_report == in_bench
    assert (run / "report" / "report.md").stat().st_mtime >= (run / "bench" / "bench.json").stat().st_mtime
    md = (run / "report" / "report.md").read_text()
    assert f"{in_bench['onnx_int8', '8']:.2f}" in md
    assert f"report: {run / 'report' / 'report.md'}" in r.output


# -- bench --help states the defaults bench uses ---------------------------------------------------------------
def _help(option: str) -> str:
    """The help text `edgetune bench --help` shows for --OPTION."""
    (param,) = [p for p in cli.commands["bench"].params if f"--{option}" in getattr(p, "opts", [])]
    return param.help


def _number(option: str, where: str) -> int:
    """The default the help of --OPTION states for `where` ("for an .onnx file", "with --adb")."""
    found = re.search(rf"(\d+) {re.escape(where)}", _help(option))
    assert found, (option, where, _help(option))
    return int(found[1])


class Stop(EdgetuneError):
    """Raised by the stand-ins once they have seen what bench passes them."""


def _capture(monkeypatch, module: str, name: str) -> list:
    seen: list = []

    def stand_in(*args, **kwargs):
        seen.append((args, kwargs))
        raise Stop("stop")

    monkeypatch.setattr(f"{module}.{name}", stand_in)
    return seen


def test_bench_help_states_the_defaults_it_uses(tiny_recipe, tmp_path, monkeypatch):
    options = ["threads", "warmup", "runs", "rounds", "batch"]
    for o in [*options, "seq"]:
        assert "the recipe's benchmark." in _help(o), o
    # the shipped recipe the --runs help quotes
    quoted = re.search(r"\((\d+) in (recipes/[\w.-]+\.yaml)\)", _help("runs"))
    assert quoted and int(quoted[1]) == yaml.safe_load((REPO / quoted[2]).read_text())["benchmark"]["runs"]

    # a recipe: its benchmark section, as it is
    from edgetune.pipeline import BuildResult

    recipes: list = []
    monkeypatch.setattr(
        "edgetune.pipeline.build", lambda recipe, *a, **k: recipes.append(recipe) or BuildResult(tmp_path)
    )
    assert run_cli("bench", tiny_recipe, "--out", tmp_path).exit_code == 0
    given = yaml.safe_load(tiny_recipe.read_text())["benchmark"]
    assert {k: v for k, v in recipes[0].benchmark.model_dump().items() if k in given} == given

    # an .onnx file
    x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 4]) for n in "xy")
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "id", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    seen = _capture(monkeypatch, "edgetune.engines.bench.run", "bench")
    assert run_cli("bench", tmp_path / "m.onnx").exit_code == 1
    cfg = seen[0][0][1]
    for o in options:
        assert getattr(cfg, "batch_size" if o == "batch" else o) == _number(o, "for an .onnx file"), o
    seqs = re.search(r"([\d ]+) for an \.onnx file", _help("seq"))
    assert seqs and cfg.sequence_lengths == [int(s) for s in seqs[1].split()]

    # --adb
    package = tmp_path / "package"
    package.mkdir()
    (package / "manifest.json").write_text("{}")
    (package / "golden.json").write_text("{}")
    seen = _capture(monkeypatch, "edgetune.device.android", "bench_on_device")
    assert run_cli("bench", package, "--adb").exit_code == 1
    _, _, threads, warmup, runs, rounds, *_ = seen[0][0]
    adb_options = ("threads", "warmup", "runs", "rounds")
    assert (threads, warmup, runs, rounds) == tuple(_number(o, "with --adb") for o in adb_options)

    # --ssh: nothing given, so the device bundle's defaults apply
    seen = _capture(monkeypatch, "edgetune.device.ssh", "bench_on_board")
    assert run_cli("bench", package, "--ssh", "pi@board").exit_code == 1
    _, _, _, threads, warmup, runs, seqs_given = seen[0][0]
    assert (threads, warmup, runs, seqs_given) == (None, None, None, None)
    for o in ["threads", "warmup", "runs", "seq"]:
        assert "with --ssh, the device bundle's" in _help(o), o
