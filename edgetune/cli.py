"""The edgetune command line: a thin layer over edgetune.pipeline and the stages."""

from __future__ import annotations

import errno
import functools
import sys
from pathlib import Path

import click

from edgetune import __version__
from edgetune.core.errors import CheckFailed, EdgetuneError, RecipeError
from edgetune.core.recipe import BenchmarkConfig

STAGE_HELP = {
    "finetune": "Fine-tune the base model with LoRA on the recipe's data and evaluate it each epoch.",
    "merge": "Merge the adapter into the base weights; fail if merged outputs differ from the adapter model's.",
    "compress": "Make a smaller student from the merged model (the recipe's compress: section) and distill it.",
    "export": "Export the merged model to ONNX: encoders with optimum-onnx (dynamic batch and sequence axes), "
    "decoders with onnxruntime-genai's model builder (KV cache).",
    "quantize": "Quantize the exported model: int8 with ONNX Runtime (encoders); int4 and/or int8 weight-only "
    "(MatMulNBits) with onnxruntime-genai's model builder (decoders), as quantize.precisions says.",
    "verify": "Compare PyTorch and every ONNX model on the held-out split; exit 1 if a gate fails.",
    "report": "Write report.json, report.md and latency.png from the finished stages.",
}


def handle_errors(fn):
    """Show EdgetuneError as one line on stderr and exit with its code; other exceptions are bugs."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EdgetuneError as e:
            click.echo(f"Error: {_one_line(e.message)}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted; run the same command again to resume.", err=True)
            sys.exit(130)
        except OSError as e:  # disk full, permissions: the environment, not a bug; finished stages are intact
            where = f": {e.filename}" if e.filename else ""
            hint = (
                "; free some space (or pass --out on another disk) and run the same command again"
                if e.errno in (errno.ENOSPC, errno.EDQUOT)
                else ""
            )
            click.echo(f"Error: {e.strerror or e}{where}{hint}", err=True)
            sys.exit(1)

    return wrapper


def _one_line(text: str) -> str:
    """Escape line breaks and other unprintable characters (a dataset or key can hold any), so an error stays
    one line."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _log(msg: str) -> None:
    click.echo(msg, err=True)


def _load(recipe: Path):
    from edgetune.core.recipe import load_recipe

    return load_recipe(recipe)


def _recipe_and_run(target: Path, out: Path | None):
    """A command's RECIPE|RUN_DIR argument as (recipe, run directory). A run directory's recipe is the one it was
    last built with (its recipe.json); a recipe file's run directory is --out, or runs/<recipe name>."""
    from edgetune.pipeline import load_run_recipe

    if target.is_dir():
        if out is not None and out.resolve() != target.resolve():
            raise RecipeError(f"--out {out}: {target} is a run directory already; give one or the other")
        return load_run_recipe(target), target
    if not target.exists():
        raise RecipeError(f"{target}: no such recipe file or run directory")
    recipe = _load(target)
    return recipe, out if out is not None else Path("runs") / recipe.name


recipe_arg = click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
# a recipe file or a run directory (see _recipe_and_run)
target_arg = click.argument("target", metavar="RECIPE|RUN_DIR", type=click.Path(path_type=Path))
out_opt = click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run directory [default: runs/<recipe name>].",
)


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


@cli.command()
@recipe_arg
@out_opt
@click.option(
    "--from",
    "from_stage",
    type=click.Choice(["finetune", "merge", "export", "quantize", "verify", "package", "bench", "report"]),
    default=None,
    help="Redo this stage and every stage after it.",
)
@click.option("--force", is_flag=True, help="Redo every stage.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@handle_errors
def build(recipe: Path, out: Path | None, from_stage: str | None, force: bool, no_progress: bool) -> None:
    """Run every stage of RECIPE: finetune, merge, export, quantize, verify, package, bench, report.

    The package stage runs when the recipe names an Android project (package.android). Stages whose inputs and outputs are unchanged are skipped. Exits 2 on bad input (recipe, dataset,
    model source), 1 when a verification gate fails (the report is still written).

    \b
    Example:
      edgetune build recipes/intent-minilm.yaml --out runs/try1
    """
    from edgetune.pipeline import build as run_build

    result = run_build(_load(recipe), out, from_stage, force, log=_log, progress=not no_progress)
    _print_result(result)


def _print_result(result) -> None:
    if result.benchmark is not None:
        from edgetune.report.format import format_benchmark

        click.echo(format_benchmark(result.benchmark))
    if result.verification is not None:
        v = result.verification
        from edgetune.report.format import headline

        for name, m in v.models.items():
            key, value = headline(m) or ("-", float("nan"))
            click.echo(
                f"{name:<14} {key} {value:.4f}"
                + (
                    f"  max|diff| {m['max_abs_diff']:.2e}  top-1 agree {m['top1_agreement']:.4f}"
                    if "max_abs_diff" in m
                    else ""
                )
            )
    if result.package is not None:
        click.echo(
            f"package: {result.package.path} ({result.package.size_bytes / 1e6:.1f} MB model, "
            f"{result.package.golden_cases} golden cases)"
        )
    if result.report is not None:
        click.echo(f"report: {result.report.markdown_path}")
    click.echo(f"run dir: {result.run_dir}")


def _stage_command(name: str) -> None:
    @handle_errors
    def command(target: Path, out: Path | None) -> None:
        from edgetune.pipeline import build as run_build

        recipe, run_dir = _recipe_and_run(target, out)
        result = run_build(recipe, run_dir, until=name, log=_log)
        _print_result(result)

    command.__doc__ = f"""{STAGE_HELP[name]}

    Runs just this stage on what the run directory holds (earlier stages run first only if they
    never finished). Use `edgetune build` to redo stale stages. RECIPE|RUN_DIR: a recipe (its
    run is --out, or runs/<recipe name>) or a run directory (the recipe it was built with).

    \b
    Examples:
      edgetune {name} recipes/intent-minilm.yaml
      edgetune {name} runs/intent-minilm
    """
    command.__name__ = name
    cli.command(name=name)(out_opt(target_arg(command)))


for _name in STAGE_HELP:
    _stage_command(_name)


# Defaults of `bench`'s options where no recipe gives them: an .onnx file (the schema's defaults), --adb (the
# phone), --ssh (the device bundle's, which are the recipe's when it was packaged). The option help is built from
# these, and tests/test_cli_inputs.py checks it against what bench really uses.
BENCH_DEFAULTS = BenchmarkConfig()
ADB_DEFAULTS = {"threads": 2, "warmup": 10, "runs": 100, "rounds": BENCH_DEFAULTS.rounds}
SSH_DEFAULT = "with --ssh, the device bundle's (the recipe's when it was packaged)"


@cli.command(name="bench")
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
    help="With --adb: install this APK if the app is missing "
    "[default: android_demo/app/build/outputs/apk/debug/app-debug.apk].",
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
def bench_cmd(
    target: Path,
    out: Path | None,
    threads,
    seqs,
    batch,
    warmup,
    runs,
    rounds,
    strict,
    on_adb,
    serial,
    apk,
    ssh_dest,
    port,
    identity,
    python,
    ssh_options,
) -> None:
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
    from edgetune.engines.bench.run import bench_file
    from edgetune.report.format import format_benchmark

    ssh_only = {"--port": port, "--identity": identity, "--python": python, "--ssh-option": ssh_options or None}
    if ssh_dest is None and any(v is not None for v in ssh_only.values()):
        raise RecipeError(f"{next(k for k, v in ssh_only.items() if v is not None)} needs --ssh USER@HOST")
    if (rounds is not None or strict) and ssh_dest is not None:
        raise RecipeError("--rounds and --strict: not with --ssh (the board runs the bundle's rounds)")
    if ssh_dest is not None:
        if on_adb:
            raise RecipeError("--ssh and --adb: choose one device")
        if batch not in (None, 1):
            raise RecipeError("--batch: the device runner measures batch 1, as the apps run")
        _bench_ssh(
            target,
            out,
            ssh_dest,
            port,
            identity,
            python or "python3",
            ssh_options,
            threads,
            warmup,
            runs,
            list(seqs) or None,
        )
        return
    if on_adb:
        from edgetune.device.android import bench_on_device

        package_dir = _package_dir(target, out)
        apk = apk or Path("android_demo/app/build/outputs/apk/debug/app-debug.apk")
        result = bench_on_device(
            package_dir,
            serial,
            threads or ADB_DEFAULTS["threads"],
            ADB_DEFAULTS["warmup"] if warmup is None else warmup,
            runs or ADB_DEFAULTS["runs"],
            rounds or ADB_DEFAULTS["rounds"],
            apk,
            _log,
        )
        click.echo(format_benchmark(result))
        _check_quiet(result, strict)
        return
    overrides = {
        k: v
        for k, v in {
            "threads": threads,
            "batch_size": batch,
            "warmup": warmup,
            "runs": runs,
            "rounds": rounds,
            "sequence_lengths": list(seqs) or None,
        }.items()
        if v is not None
    }
    if target.suffix == ".onnx":
        if not target.is_file():
            raise RecipeError(f"ONNX file not found: {target}")
        if (target.parent / "genai_config.json").is_file():
            raise RecipeError(
                f"{target} is a causal LM with a KV cache: benchmark it through its recipe "
                f"(edgetune bench RECIPE), which measures tokens/s against PyTorch"
            )
        result = bench_file(target, BenchmarkConfig(**overrides), log=_log)
        click.echo(format_benchmark(result))
        _check_quiet(result, strict)
        return
    recipe, run_dir = _recipe_and_run(target, out)
    recipe = recipe.model_copy(update={"benchmark": recipe.benchmark.model_copy(update=overrides)})
    from edgetune.pipeline import build as run_build

    built = run_build(recipe, run_dir, until="bench", log=_log)
    built.report = _refresh_report(recipe, run_dir)
    _print_result(built)
    if built.benchmark is not None:
        _check_quiet(built.benchmark, strict)


def _refresh_report(recipe, run_dir: Path):
    """The report written again from the new benchmark, so report.md and report.json do not show the old one. A
    failed verification gate (exit 1 for build and report) is a warning here: bench measured what it was asked."""
    from edgetune.pipeline import build as run_build

    try:
        return run_build(recipe, run_dir, until="report", log=_log).report
    except CheckFailed as e:
        _log(f"warning: {_one_line(e.message)}")
        return None


def _check_quiet(result, strict: bool) -> None:
    """bench --strict: a benchmark taken on a busy machine exits 1."""
    if strict and result.noise.get("busy"):
        raise CheckFailed("bench --strict: the machine was busy (" + "; ".join(result.noise["reasons"]) + ")")


def _bench_ssh(
    target: Path, out: Path | None, dest: str, port, identity, python: str, options, threads, warmup, runs, seqs
) -> None:
    """bench --ssh: run the device bundle on the board, print its table; a failed golden case exits 1."""
    from edgetune.device.results import format_device, host_results
    from edgetune.device.ssh import SshTarget, bench_on_board, golden_failure, golden_summary
    from edgetune.report.write import add_devices
    from edgetune.tasks import record_types

    if not target.is_dir() and target.suffix in (".yaml", ".yml"):
        target = _recipe_and_run(target, out)[1]
    where = SshTarget(dest, port, identity, tuple(options))
    run = bench_on_board(target, where, python, threads, warmup, runs, seqs, log=_log)
    report = add_devices(run.run_dir, record_types) if run.saved is not None and run.run_dir else None
    click.echo(format_device({**run.doc, "ssh": where.label()}, host_results(run.run_dir)))
    click.echo(golden_summary(run.doc))
    if run.saved is not None:
        click.echo(
            f"device result: {run.saved}"
            + (f"; report: {report}" if report else " (it goes into the report when the run's report is written)")
        )
    if run.doc["status"] == "golden_failed":
        raise golden_failure(run.doc, where.label())


def _package_dir(target: Path, out: Path | None) -> Path:
    """The package folder of a run dir, a recipe's run, or `target` itself when it holds a manifest."""
    if (target / "manifest.json").is_file() and (target / "golden.json").is_file():
        return target
    run_dir = target if target.is_dir() else _recipe_and_run(target, out)[1]
    folder = run_dir / "package"
    if not (folder / "manifest.json").is_file():
        raise RecipeError(f"{folder}: no packaged model: run `edgetune package {target} --android android_demo` first")
    return folder


@cli.command(name="package")
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
    from edgetune.pipeline import build as run_build

    if dest is not None and len(targets) != 1:
        raise RecipeError("--dest: give exactly one --target (the bundle to copy there)")
    if check and targets:
        raise RecipeError("--check checks the Android app's package; it does not take --target")
    recipe, out = _recipe_and_run(target, out)
    if android is not None:
        recipe = recipe.model_copy(
            update={"package": recipe.package.model_copy(update={"android": str(android.resolve())})}
        )
    if targets:
        linux = list(dict.fromkeys([*recipe.package.linux, *(t.removeprefix("linux-") for t in targets)]))
        recipe = recipe.model_copy(update={"package": recipe.package.model_copy(update={"linux": linux})})
    if check:
        from edgetune.pipeline import check_installed

        where = check_installed(recipe, out)
        click.echo(f"{where}: ok, matches the run's model")
        return
    result = run_build(recipe, out, until="package", log=_log)
    _print_result(result)
    if targets and result.package is None:
        raise CheckFailed(
            f"no device bundle written: a verification gate failed (edgetune verify "
            f"{target} shows which); a model that fails verify is not packaged"
        )
    if result.package is not None:
        from edgetune.device.bundle import bundle_dir, export_bundle

        for t in targets:
            click.echo(f"device bundle: {bundle_dir(result.package.path, t)}")
        if dest is not None:
            click.echo(f"device bundle copied to: {export_bundle(bundle_dir(result.package.path, targets[0]), dest)}")


run_arg = click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
model_opts = [
    click.option(
        "--precision",
        type=click.Choice(["int4", "int8", "fp32"]),
        default=None,
        help="Which exported model [default: the smallest there is].",
    ),
    click.option("--max-tokens", type=click.IntRange(1, 4096), default=128, help="Most new tokens per reply."),
    click.option(
        "--threads", type=click.IntRange(0, 256), default=0, help="Intra-op threads [default: onnxruntime's]."
    ),
    click.option("--system", default=None, help="System prompt [default: the recipe's]."),
]


def _with(opts):
    def deco(fn):
        for o in reversed(opts):
            fn = o(fn)
        return fn

    return deco


@cli.command()
@run_arg
@click.option("--prompt", required=True, help="The user message.")
@_with(model_opts)
@handle_errors
def generate(run_dir: Path, prompt: str, precision, max_tokens: int, threads: int, system) -> None:
    """Answer one PROMPT with the causal LM exported in RUN_DIR (onnxruntime-genai), streaming the reply.

    \b
    Example:
      edgetune generate runs/home-assistant-smollm2 --prompt "dim the kitchen lights to 30"
    """
    from edgetune.chat import generate as run_generate

    run_generate(run_dir, prompt, max_tokens, precision, threads, system, on_text=lambda t: click.echo(t, nl=False))
    click.echo()


@cli.command()
@run_arg
@_with(model_opts)
@handle_errors
def chat(run_dir: Path, precision, max_tokens: int, threads: int, system) -> None:
    """Chat with the causal LM exported in RUN_DIR; replies stream as they are generated. Ctrl-D ends.

    \b
    Example:
      edgetune chat runs/home-assistant-smollm2 --precision int4
    """
    from edgetune.chat import Chat, model_folder, opening_messages

    session = Chat(model_folder(run_dir, precision), threads)
    history = opening_messages(run_dir, system)
    while True:
        try:
            line = input("> ")
        except EOFError:
            click.echo()
            return
        if not line.strip():
            continue
        history.append({"role": "user", "content": line})
        reply = []
        for piece in session.stream(history, max_tokens):
            reply.append(piece)
            click.echo(piece, nl=False)
        click.echo()
        history.append({"role": "assistant", "content": "".join(reply)})


@cli.command()
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
    from edgetune.doctor import doctor as run_doctor

    recipe, where = _recipe_and_run(target, out) if target is not None else (None, out)
    findings = run_doctor(recipe, where)
    for f in findings:
        click.echo(f.line())
    failed = [f for f in findings if f.level == "fail"]
    if failed:
        raise EdgetuneError(
            f"{len(failed)} problem{'s' if len(failed) > 1 else ''} to fix: "
            + "; ".join(f"{f.topic}: {f.message}" for f in failed)
        )
    click.echo("ok: nothing to fix")


@cli.group()
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
    from edgetune.pipeline import prepare

    p = prepare(_load(recipe))
    d = p.data
    if p.recipe.model.trust_remote_code:
        _log("warning: model.trust_remote_code is true: Python code shipped with the model will run")
    for w in p.data.warnings:
        _log(f"warning: {w}")
    click.echo(
        f"{recipe}: ok: task {p.recipe.task}, model {p.source.path} ({p.source.kind}), "
        f"{len(d.train)} train / {len(d.eval)} eval rows" + (f", {len(d.labels)} labels" if d.labels else "")
    )


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
