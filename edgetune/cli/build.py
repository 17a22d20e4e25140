"""`edgetune build` and one command per stage (`edgetune finetune`, `edgetune export`, ...), all from the pipeline's
list of stages."""

from __future__ import annotations

from pathlib import Path

import click

from edgetune import api, pipeline
from edgetune.cli.common import handle_errors, log, out_opt, recipe_arg, target_arg
from edgetune.core.recipe import load_recipe

# stages with a command of their own, with more options than a plain stage command (see bench.py and package.py)
OWN_COMMANDS = ("package", "bench")

BUILD_HELP = f"""Run every stage of RECIPE: {", ".join(pipeline.STAGES)}.

    The compress stage runs when the recipe has a compress: section, the package stage when it names an Android project (package.android). Stages whose inputs and outputs are unchanged are skipped. Exits 2 on bad input (recipe, dataset,
    model source), 1 when a verification gate fails (the report is still written).

    \b
    Example:
      edgetune build recipes/intent-minilm.yaml --out runs/try1
    """


@click.command(help=BUILD_HELP)
@recipe_arg
@out_opt
@click.option(
    "--from",
    "from_stage",
    type=click.Choice(pipeline.STAGES),
    default=None,
    help="Redo this stage and every stage after it.",
)
@click.option("--force", is_flag=True, help="Redo every stage.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@handle_errors
def build(recipe: Path, out: Path | None, from_stage: str | None, force: bool, no_progress: bool) -> None:
    result = pipeline.build(load_recipe(recipe), out, from_stage, force, log=log, progress=not no_progress)
    click.echo(api.result_text(result))


def stage_command(name: str) -> click.Command:
    """`edgetune NAME RECIPE|RUN_DIR`: run just that stage (and any earlier one that never finished)."""

    @handle_errors
    def command(target: Path, out: Path | None) -> None:
        click.echo(api.result_text(api.run_stage(target, out, name, log)))

    command.__doc__ = f"""{pipeline.STAGE_HELP[name]}

    Runs just this stage on what the run directory holds (earlier stages run first only if they
    never finished). Use `edgetune build` to redo stale stages. RECIPE|RUN_DIR: a recipe (its
    run is --out, or runs/<recipe name>) or a run directory (the recipe it was built with).

    \b
    Examples:
      edgetune {name} recipes/intent-minilm.yaml
      edgetune {name} runs/intent-minilm
    """
    command.__name__ = name
    return click.command(name=name)(out_opt(target_arg(command)))


STAGE_COMMANDS = [stage_command(name) for name in pipeline.STAGES if name not in OWN_COMMANDS]
