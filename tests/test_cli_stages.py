"""The stages have one list, pipeline.STAGE_HELP (STAGES): the CLI's stage commands, their help and build's
--from choices come from it, so `edgetune build --from compress` is accepted like any other stage."""

from __future__ import annotations

from click.testing import CliRunner
from conftest import edit_recipe

from edgetune.cli import cli
from edgetune.pipeline import STAGE_HELP, STAGES


def run_cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_the_cli_takes_its_stages_from_the_pipeline():
    assert STAGES == tuple(STAGE_HELP)
    (from_stage,) = [p for p in cli.commands["build"].params if p.name == "from_stage"]
    assert tuple(from_stage.type.choices) == STAGES
    assert set(STAGES) <= set(cli.commands)  # a command per stage (package and bench have their own)
    for name in set(STAGES) - {"package", "bench"}:
        assert cli.commands[name].help.startswith(STAGE_HELP[name]), name
    assert cli.commands["build"].help.startswith(f"Run every stage of RECIPE: {', '.join(STAGES)}.")


def test_build_from_compress_redoes_compress_and_every_later_stage(tiny_recipe, tmp_path):
    edit_recipe(tiny_recipe, compress={"every": 2, "epochs": 1, "learning_rate": 1e-3, "augment": 1})
    run = tmp_path / "run"
    r = run_cli("build", tiny_recipe, "--out", run, "--no-progress")
    assert r.exit_code == 0, r.output
    assert "compress: done" in r.output
    assert "Loading weights" not in r.output  # transformers 5's own bar: --no-progress hides it too
    r = run_cli("build", tiny_recipe, "--out", run, "--no-progress", "--from", "compress")
    assert r.exit_code == 0, r.output
    for name in ("finetune", "merge"):
        assert f"{name}: up to date, skipped" in r.output, name
    for name in ("compress", "export", "quantize", "verify", "bench", "report"):
        assert f"{name}: running" in r.output, name
    assert f"run dir: {run}" in r.output
