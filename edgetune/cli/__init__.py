"""The edgetune command line: click parsing and printing over edgetune.pipeline and edgetune.api, one module per
concern (common.py: errors and shared options; build.py: build and the stage commands; bench.py; package.py;
chat.py: generate and chat; doctor.py: doctor and recipe validate)."""

from __future__ import annotations

import click

from edgetune import __version__
from edgetune.cli.bench import bench_cmd
from edgetune.cli.build import STAGE_COMMANDS, build
from edgetune.cli.chat import chat, generate
from edgetune.cli.doctor import doctor, recipe
from edgetune.cli.package import package_cmd


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="edgetune")
def cli() -> None:
    """Fine-tune a Hugging Face model with LoRA, export it to ONNX, quantize, verify and benchmark it.

    Every stage writes into a run directory (runs/<recipe name>/ by default) with a manifest, so a build
    that is interrupted resumes where it stopped and finished stages are not redone.

    \b
    Quick start:
      edgetune recipe validate recipes/intent-minilm.yaml
      edgetune build recipes/intent-minilm.yaml
      edgetune bench runs/intent-minilm/quantize/model_int8.onnx
    """


for _command in [build, *STAGE_COMMANDS, bench_cmd, package_cmd, generate, chat, doctor, recipe]:
    cli.add_command(_command)


def main() -> None:
    cli()


__all__ = ["cli", "main"]
