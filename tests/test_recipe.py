import importlib.util
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from edgetune.cli import cli
from edgetune.core.errors import RecipeError
from edgetune.core.recipe import load_recipe, parse_recipe

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str):
    return CliRunner().invoke(cli, list(args))


def assert_one_line_error(result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def missing_model_package(path: Path) -> str | None:
    """The pip package a shipped recipe's `model.source: package:NAME/...` names, when it is not installed here
    (CI installs only the default model's package)."""
    source = str(yaml.safe_load(path.read_text())["model"]["source"])
    if not source.startswith("package:"):
        return None
    name = source.removeprefix("package:").split("/")[0]
    return None if importlib.util.find_spec(name) else name


def test_shipped_recipes_validate():
    for path in (REPO / "recipes").glob("*.yaml"):
        missing = missing_model_package(path)
        if missing is None:
            r = load_recipe(path)
            assert r.name and r.base_dir == path.parent
            continue
        # Without its model package the recipe is refused in one line that says what to install; the rest of it
        # still parses.
        with pytest.raises(RecipeError, match=f"model.source: pip package '{missing}' is not installed"):
            load_recipe(path)
        assert parse_recipe(yaml.safe_load(path.read_text()), str(path), path.parent).name


def test_missing_recipe_file(tmp_path):
    assert_one_line_error(run_cli("build", str(tmp_path / "nope.yaml")), 2, "recipe file not found", "nope.yaml")


def test_yaml_syntax_error(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\nmodel: [unclosed\n")
    assert_one_line_error(run_cli("recipe", "validate", str(p)), 2, "bad.yaml", "YAML syntax error", "line")


@pytest.mark.parametrize(
    "edit, fragments",
    [
        ({"quantise": {"mode": "dynamic"}}, ["quantise", "unknown key"]),
        ({"training": {"epochs": "many"}}, ["training.epochs", "integer"]),
        ({"training": {"epochs": 5, "learning_rat": 0.1}}, ["training.learning_rat", "unknown key"]),
        ({"quantize": {"mode": "int3"}}, ["quantize.mode"]),
        ({"benchmark": {"sequence_lengths": [-1]}}, ["benchmark.sequence_lengths[0]"]),
        ({"task": "translation"}, ["task"]),
    ],
)
def test_schema_errors_name_the_field(tiny_recipe, edit, fragments):
    data = yaml.safe_load(tiny_recipe.read_text())
    data.update(edit)
    tiny_recipe.write_text(yaml.safe_dump(data))
    assert_one_line_error(run_cli("build", str(tiny_recipe)), 2, str(tiny_recipe), *fragments)


def test_recipe_must_be_mapping(tmp_path):
    p = tmp_path / "list.yaml"
    p.write_text("- a\n- b\n")
    with pytest.raises(RecipeError, match="mapping"):
        load_recipe(p)


def test_validate_ok(tiny_recipe):
    r = run_cli("recipe", "validate", str(tiny_recipe))
    assert r.exit_code == 0, r.output
    assert "48 train / 18 eval rows, 3 labels" in r.output


def test_unknown_model(tiny_recipe):
    from conftest import edit_recipe

    edit_recipe(tiny_recipe, model={"source": "package:no_such_pkg_xyz/model"})
    assert_one_line_error(run_cli("build", str(tiny_recipe)), 2, "model.source", "no_such_pkg_xyz")
    edit_recipe(tiny_recipe, model={"source": "./missing-folder"})
    assert_one_line_error(run_cli("build", str(tiny_recipe)), 2, "model.source", "does not exist")


def test_every_command_has_help_with_example():
    for cmd in ["build", "finetune", "merge", "export", "quantize", "verify", "bench", "report"]:
        r = run_cli(cmd, "--help")
        assert r.exit_code == 0 and "Example" in r.output, cmd
    r = run_cli("recipe", "validate", "--help")
    assert r.exit_code == 0 and "Example" in r.output
