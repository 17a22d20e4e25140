"""The README stays true: every recipe key is documented, and CI runs the README's test command."""

import re
from pathlib import Path

from pydantic import BaseModel

from edgetune.core.recipe import Recipe

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += [f"{prefix}{name}"] + _keys(ann, f"{prefix}{name}.")
        else:
            out.append(f"{prefix}{name}")
    return out


def test_every_recipe_key_is_in_the_reference():
    block = README.split("## Recipe reference", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    for key in _keys(Recipe):
        leaf = key.split(".")[-1]
        assert re.search(rf"^\s*{leaf}:", block, re.M), f"README recipe reference lacks {key}"


def test_ci_runs_the_readme_test_command():
    command = re.search(r"\*\*2\. Run the tests\*\*.*?```bash\n(.*?)\n```", README, re.S).group(1)
    test_cmd = command.split("&&", 1)[1].strip()  # after the activation: lint, format, types, tests
    assert "mypy" in test_cmd and "ruff check" in test_cmd and "pytest" in test_cmd
    assert test_cmd in (REPO / ".ci" / "run").read_text()
    assert test_cmd in (REPO / ".ci" / "refresh-lock").read_text()  # the lock moves only when it passes
    assert "pip install -q -c constraints.txt torch==2.13.0" in (REPO / ".ci" / "run").read_text()
