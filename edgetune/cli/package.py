"""`edgetune package`: for the Android demo app and Linux boards (edgetune.api.package does the work)."""

from __future__ import annotations

from pathlib import Path

import click

from edgetune import api
from edgetune.cli.common import handle_errors, log, out_opt


@click.command(name="package")
@click.argument("target", type=click.Path(path_type=Path))
@out_opt
@click.option(
    "--android",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The demo app project to install into [default: the recipe's package.android].",
)
@click.option("--check", is_flag=True, help="Only check the package in --android against the run: exit 1 if stale.")
@click.option(
    "--target",
    "targets",
    type=click.Choice(["linux-arm64", "linux-x86_64"]),
    multiple=True,
    help="Also write a device bundle for a Linux board into the run's package/<target>/ (repeat for "
    "several); `edgetune bench RUN_DIR --ssh` runs it there.",
)
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="With one --target: also copy the bundle to this folder (to copy to a board yourself).",
)
@handle_errors
def package_cmd(
    target: Path, out: Path | None, android: Path | None, check: bool, targets: tuple[str, ...], dest: Path | None
) -> None:
    """Package a run's quantized model for the Android demo app, or for Linux boards, and check it.

    TARGET is a run directory or a recipe. The package holds the model (ONNX, plus ORT format for
    arm64) with the tokenizer inside the graph, labels, a manifest (inputs, outputs, versions, hashes)
    and golden vectors: inputs with the outputs PyTorch computed. It is checked in ONNX Runtime
    before it is installed.

    With --target linux-arm64, package/linux-arm64/ also gets a device bundle: the same model files,
    golden.json, manifest.json and run_device.py, which checks the golden cases and benchmarks on a
    board with only Python 3.9+, numpy and onnxruntime installed (+ onnxruntime-extensions for a
    classifier, onnxruntime-genai for a chat model). The recipe key package.linux: [arm64] does the same.

    \b
    Examples:
      edgetune package runs/intent-minilm --android android_demo
      edgetune package runs/intent-minilm --android android_demo --check
      edgetune package runs/intent-minilm --target linux-arm64 --dest /tmp/intent-arm64
    """
    api.package(target, out, android, check, targets, dest, log=log, echo=click.echo)
