"""`edgetune bench`: the options and their help; edgetune.api.bench does the measuring (a recipe or run directory,
an .onnx file, --adb, --ssh)."""

from __future__ import annotations

from pathlib import Path

import click

from edgetune import api
from edgetune.api import ADB_DEFAULTS, BENCH_DEFAULTS
from edgetune.cli.common import handle_errors, log, out_opt

SSH_DEFAULT = "with --ssh, the device bundle's (the recipe's when it was packaged)"


@click.command(name="bench")
@click.argument("target", type=click.Path(path_type=Path))
@out_opt
@click.option(
    "--threads",
    type=click.IntRange(1, 256),
    default=None,
    help=f"Intra-op threads [default: the recipe's benchmark.threads; {BENCH_DEFAULTS.threads} for an .onnx "
    f"file; {ADB_DEFAULTS['threads']} with --adb; {SSH_DEFAULT}].",
)
@click.option(
    "--seq",
    "seqs",
    type=click.IntRange(1, 8192),
    multiple=True,
    help="Sequence length; repeat for several [default: the recipe's benchmark.sequence_lengths; "
    f"{' '.join(map(str, BENCH_DEFAULTS.sequence_lengths))} for an .onnx file; {SSH_DEFAULT}].",
)
@click.option(
    "--batch",
    type=click.IntRange(1, 1024),
    default=None,
    help=f"Batch size [default: the recipe's benchmark.batch_size; {BENCH_DEFAULTS.batch_size} for an .onnx file].",
)
@click.option(
    "--warmup",
    type=click.IntRange(0, 100000),
    default=None,
    help=f"Untimed runs first [default: the recipe's benchmark.warmup; {BENCH_DEFAULTS.warmup} for an .onnx "
    f"file; {ADB_DEFAULTS['warmup']} with --adb; {SSH_DEFAULT}].",
)
@click.option(
    "--runs",
    type=click.IntRange(1, 1000000),
    default=None,
    help="Timed runs in all, split over the rounds [default: the recipe's benchmark.runs (300 in "
    f"recipes/intent-minilm.yaml); {BENCH_DEFAULTS.runs} for an .onnx file; {ADB_DEFAULTS['runs']} with --adb; "
    f"{SSH_DEFAULT}].",
)
@click.option(
    "--rounds",
    type=click.IntRange(1, 100),
    default=None,
    help="Interleaved rounds, each running every model once in a fresh process; the p50 is the median of the "
    f"round p50s [default: the recipe's benchmark.rounds; {BENCH_DEFAULTS.rounds} for an .onnx file; "
    f"{ADB_DEFAULTS['rounds']} with --adb].",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Exit 1 when the machine was busy (other processes' CPU use, steal, or round spread over the limits; "
    "with --adb: the phone's load average, steal, or round spread).",
)
@click.option(
    "--adb",
    "on_adb",
    is_flag=True,
    help="Run on an Android phone through the demo app. TARGET: a run dir, recipe or package folder.",
)
@click.option("--serial", default=None, help="With --adb: the device to use (see `adb devices`).")
@click.option(
    "--apk",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"With --adb: install this APK if the app is missing [default: {api.DEFAULT_APK}].",
)
@click.option(
    "--ssh",
    "ssh_dest",
    default=None,
    metavar="USER@HOST",
    help="Run on a Linux board over ssh (key login). TARGET: a run dir with a device bundle, or a bundle.",
)
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="With --ssh: the ssh port [default: 22].")
@click.option(
    "--identity",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="With --ssh: the private key to log in with [default: ssh's].",
)
@click.option(
    "--python",
    "python",
    default=None,
    help="With --ssh: the board's Python 3.9+ with numpy and onnxruntime; ~/ and relative paths are "
    "under the login directory [default: python3].",
)
@click.option(
    "-o",
    "--ssh-option",
    "ssh_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="With --ssh: an ssh -o option, e.g. UserKnownHostsFile=~/.ssh/boards (repeat for several).",
)
@handle_errors
def bench_cmd(target: Path, out: Path | None, **options) -> None:
    """Benchmark latency on this CPU. TARGET is a recipe or a run directory (the run's models against
    PyTorch), or any .onnx file.

    With a recipe or a run directory, PyTorch eager fp32 is measured in the same run as the baseline,
    every ONNX result is shown as a ratio to it, and the run's report is written again with the new
    figures. With an .onnx file, inputs are generated from its metadata; a model that takes text
    (the package stage's model.onnx, the tokenizer inside the graph) gets a text of each sequence
    length, run with onnxruntime-extensions' custom ops.

    With --adb, the packaged model runs on an attached phone in the demo app's BenchmarkActivity
    (installed from --apk if missing), in --rounds rounds, each in a fresh app process; the rounds'
    JSON results are printed in the same table, with the phone's load average and CPU use.

    With --ssh, the run's device bundle (edgetune package RUN_DIR --target linux-arm64) is copied to
    the board (only when the copy there differs), its golden cases are checked and it is benchmarked
    there by run_device.py; the result is printed, saved in RUN_DIR/devices/ and added to the report.
    Exits 2 when the board cannot be reached or cannot run the bundle, 1 when a golden case fails.

    On this CPU the models run in interleaved rounds (--rounds), each in a fresh process; the table
    gives each row's round-to-round spread and a last line says whether the machine was quiet:
    other processes' CPU use, hypervisor steal and the spread, measured around the benchmark. With
    --strict a busy machine exits 1, so a script does not keep a noisy result. With --adb the
    same, from the phone's load average (its other processes' CPU time is not measured there).

    \b
    Examples:
      edgetune bench recipes/intent-minilm.yaml --threads 1
      edgetune bench runs/intent-minilm --runs 100
      edgetune bench runs/intent-minilm/quantize/model_int8.onnx --seq 32 --runs 500
      edgetune bench runs/intent-minilm/package/model.onnx --seq 16
      edgetune bench runs/intent-minilm --adb --serial emulator-5554 --runs 200
      edgetune bench runs/intent-minilm --ssh pi@raspberrypi.local --threads 4
    """
    api.bench(target, out, api.BenchOptions(**options), log=log, echo=click.echo)
