"""`edgetune doctor` and `edgetune recipe validate`: checks that run nothing."""

from __future__ import annotations

from pathlib import Path

import click

from edgetune import api
from edgetune.cli.common import handle_errors, log, out_opt, recipe_arg


@click.command()
@click.argument("target", metavar="[RECIPE|RUN_DIR]", type=click.Path(path_type=Path), required=False)
@out_opt
@handle_errors
def doctor(target: Path | None, out: Path | None) -> None:
    """Check this environment: package versions known to work together, a second onnxruntime package,
    CPU features (AVX2, VNNI, bf16), and free disk and RAM against an estimate for a recipe: RECIPE,
    or the one RUN_DIR was built with.

    Exits 1 when something must be fixed; warnings only inform.

    \b
    Examples:
      edgetune doctor recipes/home-assistant-smollm2.yaml
      edgetune doctor runs/home-assistant-smollm2
    """
    api.doctor(target, out, echo=click.echo)


@click.group()
def recipe() -> None:
    """Work with recipe files."""


@recipe.command()
@recipe_arg
@handle_errors
def validate(recipe: Path) -> None:
    """Check RECIPE: schema, model source and dataset, without running anything.

    \b
    Example:
      edgetune recipe validate recipes/intent-minilm.yaml
    """
    click.echo(api.validate(recipe, log))
