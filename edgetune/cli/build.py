"""`edgetune build` and one command per stage (`edgetune finetune`, `edgetune export`, ...), all from the pipeline's
list of stages."""

from __future__ import annotations

from pathlib import Path

import click

from edgetune import api, pipeline
from edgetune.cli.common import handle_errors, log, out_opt, processes_opt, recipe_arg, relaunch, target_arg
from edgetune.core.recipe import load_recipe

# stages with a command of their own, with more options than a plain stage command (see bench.py and package.py)
OWN_COMMANDS = ("package", "bench")

BUILD_HELP = f"""Run every stage of RECIPE: {", ".join(pipeline.STAGES)}.

    The compress stage runs when the recipe has a compress: section, the package stage when it names an Android project (package.android). Stages whose inputs and outputs are unchanged are skipped. Exits 2 on bad input (recipe, dataset,
    model source), 1 when a verification gate fails (the report is still written).

    \b
    Examples:
      edgetune build recipes/intent-minilm.yaml --out runs/try1
      edgetune build recipes/intent-minilm.yaml --processes 2      # train with 2 processes (DDP)
      torchrun --nnodes 2 --nproc-per-node 8 ... -m edgetune build R  # or: accelerate launch -m edgetune build R
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
@processes_opt
@handle_errors
def build(
    recipe: Path, out: Path | None, from_stage: str | None, force: bool, no_progress: bool, processes: int
) -> None:
    flags = (["--out", str(out)] if out else []) + (["--from", from_stage] if from_stage else [])
    flags += ["--force"] * force + ["--no-progress"] * no_progress
    relaunch(processes, ["build", str(recipe), *flags])
    result = pipeline.build(load_recipe(recipe), out, from_stage, force, log=log, progress=not no_progress)
    if result.rank == 0:
        click.echo(api.result_text(result))


def stage_command(name: str) -> click.Command:
    """`edgetune NAME RECIPE|RUN_DIR`: run just that stage (and any earlier one that never finished)."""

    @handle_errors
    def command(target: Path, out: Path | None, processes: int) -> None:
        relaunch(processes, [name, str(target), *(["--out", str(out)] if out else [])])
        result = api.run_stage(target, out, name, log)
        if result.rank == 0:
            click.echo(api.result_text(result))

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
    return click.command(name=name)(processes_opt(out_opt(target_arg(command))))


STAGE_COMMANDS = [stage_command(name) for name in pipeline.STAGES if name not in OWN_COMMANDS]
