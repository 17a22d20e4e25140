"""The layer contract (pyproject.toml [tool.importlinter], run by CI as `lint-imports`): every import points
down, type-only imports included; the board's runner imports nothing of edgetune; stages and tasks import no
sibling. Planted violations in a copy of the package must break it, so the contract can fail."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess:
    """lint-imports with the project's contracts on the edgetune package under `root`."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT), str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def copy(tmp_path):
    shutil.copytree(REPO / "edgetune", tmp_path / "edgetune", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _plant(root: Path, module: str, line: str) -> None:
    path = root / (module.replace(".", "/") + ".py")
    text = path.read_text()
    anchor = "from __future__ import annotations\n"
    assert anchor in text, path
    path.write_text(text.replace(anchor, anchor + line + "\n", 1))


def test_the_package_keeps_its_layers(copy):
    done = _lint(copy)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"Contracts: \d+ kept, 0 broken", done.stdout), done.stdout


@pytest.mark.parametrize(
    "module, line, broken",
    [
        # an engine reaching up into a stage: an upward arrow
        ("edgetune.engines.verify", "from edgetune.stages.verify import Verify  # noqa", "layers"),
        # core asking for the pipeline, inside a function: still an import
        ("edgetune.core.errors", "def _f():\n    import edgetune.pipeline  # noqa", "layers"),
        # a type-only import counts too
        ("edgetune.build", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import edgetune.tasks", "layers"),
        # the runner on a board has no edgetune to import
        ("edgetune.runner", "from edgetune.core import errors  # noqa", "runner is standalone"),
        # one stage importing another
        ("edgetune.stages.bench", "from edgetune.stages import verify  # noqa", "a stage never imports another"),
    ],
)
def test_a_planted_violation_breaks_the_contract(copy, module, line, broken):
    _plant(copy, module, line)
    done = _lint(copy)
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(rf"{re.escape(broken)}[^\n]*BROKEN", done.stdout), done.stdout
    assert module in done.stdout  # the report names the importing module
