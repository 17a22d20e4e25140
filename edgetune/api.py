"""What the commands do beyond parsing their arguments, as library calls: which run a RECIPE|RUN_DIR argument means,
bench's modes (a recipe or run directory, an .onnx file, --adb, --ssh), packaging with its checks and device
bundles, doctor's verdict, recipe validation. Each takes `log` (progress, warnings: stderr) and, where a command
prints as it goes, `echo` (its output: stdout), so a caller sees the same lines in the same order as the CLI."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgetune import pipeline  # pipeline.build looked up at each call (tests stand in for it)
from edgetune.core.errors import CheckFailed, EdgetuneError, RecipeError
from edgetune.core.recipe import BenchmarkConfig, Recipe, load_recipe

if TYPE_CHECKING:
    from edgetune.core.artifacts import Benchmark, Report

Log = Callable[[str], None]

# Defaults of bench's settings where no recipe gives them: an .onnx file (the schema's defaults), --adb (the phone);
# with --ssh, the device bundle's (the recipe's when it was packaged). `edgetune bench --help` states these, and
# tests/test_cli_inputs.py checks them against what bench really uses.
BENCH_DEFAULTS = BenchmarkConfig()
ADB_DEFAULTS = {"threads": 2, "warmup": 10, "runs": 100, "rounds": BENCH_DEFAULTS.rounds}
DEFAULT_APK = Path("android_demo/app/build/outputs/apk/debug/app-debug.apk")


def one_line(text: str) -> str:
    """Escape line breaks and other unprintable characters (a dataset or key can hold any), so an error stays
    one line."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def recipe_and_run(target: Path, out: Path | None) -> tuple[Recipe, Path]:
    """A command's RECIPE|RUN_DIR argument as (recipe, run directory). A run directory's recipe is the one it was
    last built with (its recipe.json); a recipe file's run directory is --out, or runs/<recipe name>."""
    if target.is_dir():
        if out is not None and out.resolve() != target.resolve():
            raise RecipeError(f"--out {out}: {target} is a run directory already; give one or the other")
        return pipeline.load_run_recipe(target), target
    if not target.exists():
        raise RecipeError(f"{target}: no such recipe file or run directory")
    recipe = load_recipe(target)
    return recipe, out if out is not None else Path("runs") / recipe.name


def result_lines(result: pipeline.BuildResult) -> Iterator[str]:
    """What a build shows when it is done: the benchmark table, each model's headline metric, the package, the
    report and the run directory."""
    from edgetune.report.format import format_benchmark, headline

    if result.benchmark is not None:
        yield format_benchmark(result.benchmark)
    if result.verification is not None:
        for name, m in result.verification.models.items():
            key, value = headline(m) or ("-", float("nan"))
            yield (
                f"{name:<14} {key} {value:.4f}"
                + (
                    f"  max|diff| {m['max_abs_diff']:.2e}  top-1 agree {m['top1_agreement']:.4f}"
                    if "max_abs_diff" in m
                    else ""
                )
            )
    if result.package is not None:
        yield (
            f"package: {result.package.path} ({result.package.size_bytes / 1e6:.1f} MB model, "
            f"{result.package.golden_cases} golden cases)"
        )
    if result.report is not None:
        yield f"report: {result.report.markdown_path}"
    yield f"run dir: {result.run_dir}"


def result_text(result: pipeline.BuildResult) -> str:
    return "\n".join(result_lines(result))


def run_stage(target: Path, out: Path | None, stage: str, log: Log) -> pipeline.BuildResult:
    """`edgetune STAGE RECIPE|RUN_DIR`: run just `stage` on what the run directory holds."""
    recipe, run_dir = recipe_and_run(target, out)
    return pipeline.build(recipe, run_dir, until=stage, log=log)


def validate(path: Path, log: Log) -> str:
    """`edgetune recipe validate`: check the recipe, its model source and dataset without running anything; the
    summary line (warnings go to `log`)."""
    p = pipeline.prepare(load_recipe(path))
    d = p.data
    if p.recipe.model.trust_remote_code:
        log("warning: model.trust_remote_code is true: Python code shipped with the model will run")
    for w in p.data.warnings:
        log(f"warning: {w}")
    return (
        f"{path}: ok: task {p.recipe.task}, model {p.source.path} ({p.source.kind}), "
        f"{len(d.train)} train / {len(d.eval)} eval rows" + (f", {len(d.labels)} labels" if d.labels else "")
    )


def doctor(target: Path | None, out: Path | None, echo: Log) -> None:
    """`edgetune doctor [RECIPE|RUN_DIR]`: show each finding; EdgetuneError (exit 1) when one must be fixed."""
    from edgetune.doctor import doctor as run_doctor

    recipe, where = recipe_and_run(target, out) if target is not None else (None, out)
    findings = run_doctor(recipe, where)
    for f in findings:
        echo(f.line())
    failed = [f for f in findings if f.level == "fail"]
    if failed:
        raise EdgetuneError(
            f"{len(failed)} problem{'s' if len(failed) > 1 else ''} to fix: "
            + "; ".join(f"{f.topic}: {f.message}" for f in failed)
        )
    echo("ok: nothing to fix")


# -- bench ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BenchOptions:
    """What `edgetune bench` was given besides TARGET and --out (None or empty: not given)."""

    threads: int | None = None
    seqs: tuple[int, ...] = ()
    batch: int | None = None
    warmup: int | None = None
    runs: int | None = None
    rounds: int | None = None
    strict: bool = False
    on_adb: bool = False
    serial: str | None = None
    apk: Path | None = None
    ssh_dest: str | None = None
    port: int | None = None
    identity: Path | None = None
    python: str | None = None
    ssh_options: tuple[str, ...] = ()


def bench(target: Path, out: Path | None, o: BenchOptions, log: Log, echo: Log) -> None:
    """`edgetune bench`: a recipe or run directory (its models against PyTorch, then its report written again), an
    .onnx file, a package on a phone (--adb) or a device bundle on a board (--ssh). CheckFailed (exit 1) once the
    table is shown when --strict finds the machine busy, or a golden case fails on the board."""
    ssh_only = {"--port": o.port, "--identity": o.identity, "--python": o.python, "--ssh-option": o.ssh_options or None}
    if o.ssh_dest is None and any(v is not None for v in ssh_only.values()):
        raise RecipeError(f"{next(k for k, v in ssh_only.items() if v is not None)} needs --ssh USER@HOST")
    if (o.rounds is not None or o.strict) and o.ssh_dest is not None:
        raise RecipeError("--rounds and --strict: not with --ssh (the board runs the bundle's rounds)")
    if o.ssh_dest is not None:
        if o.on_adb:
            raise RecipeError("--ssh and --adb: choose one device")
        if o.batch not in (None, 1):
            raise RecipeError("--batch: the device runner measures batch 1, as the apps run")
        _bench_ssh(target, out, o.ssh_dest, o, log, echo)
        return
    from edgetune.report.format import format_benchmark

    if o.on_adb:
        from edgetune.device.android import bench_on_device

        result = bench_on_device(
            package_dir(target, out),
            o.serial,
            o.threads or ADB_DEFAULTS["threads"],
            ADB_DEFAULTS["warmup"] if o.warmup is None else o.warmup,
            o.runs or ADB_DEFAULTS["runs"],
            o.rounds or ADB_DEFAULTS["rounds"],
            o.apk or DEFAULT_APK,
            log,
        )
        echo(format_benchmark(result))
        _check_quiet(result, o.strict)
        return
    given = {
        "threads": o.threads,
        "batch_size": o.batch,
        "warmup": o.warmup,
        "runs": o.runs,
        "rounds": o.rounds,
        "sequence_lengths": list(o.seqs) or None,
    }
    overrides: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    if target.suffix == ".onnx":
        from edgetune.engines.bench.run import bench_file

        if not target.is_file():
            raise RecipeError(f"ONNX file not found: {target}")
        if (target.parent / "genai_config.json").is_file():
            raise RecipeError(
                f"{target} is a causal LM with a KV cache: benchmark it through its recipe "
                f"(edgetune bench RECIPE), which measures tokens/s against PyTorch"
            )
        result = bench_file(target, BenchmarkConfig(**overrides), log=log)
        echo(format_benchmark(result))
        _check_quiet(result, o.strict)
        return
    recipe, run_dir = recipe_and_run(target, out)
    recipe = recipe.model_copy(update={"benchmark": recipe.benchmark.model_copy(update=overrides)})
    built = pipeline.build(recipe, run_dir, until="bench", log=log)
    built.report = _refresh_report(recipe, run_dir, log)
    echo(result_text(built))
    if built.benchmark is not None:
        _check_quiet(built.benchmark, o.strict)


def _refresh_report(recipe: Recipe, run_dir: Path, log: Log) -> Report | None:
    """The report written again from the new benchmark, so report.md and report.json do not show the old one. A
    failed verification gate (exit 1 for build and report) is a warning here: bench measured what it was asked."""
    try:
        return pipeline.build(recipe, run_dir, until="report", log=log).report
    except CheckFailed as e:
        log(f"warning: {one_line(e.message)}")
        return None


def _check_quiet(result: Benchmark, strict: bool) -> None:
    """bench --strict: a benchmark taken on a busy machine exits 1."""
    if strict and result.noise.get("busy"):
        raise CheckFailed("bench --strict: the machine was busy (" + "; ".join(result.noise["reasons"]) + ")")


def _bench_ssh(target: Path, out: Path | None, dest: str, o: BenchOptions, log: Log, echo: Log) -> None:
    """bench --ssh: run the device bundle on the board, show its table; a failed golden case exits 1."""
    from edgetune.device.golden import golden_failure, golden_summary
    from edgetune.device.results import format_device, host_results
    from edgetune.device.ssh import bench_on_board
    from edgetune.device.transport import SshTarget
    from edgetune.report.write import add_devices
    from edgetune.tasks import record_types

    if not target.is_dir() and target.suffix in (".yaml", ".yml"):
        target = recipe_and_run(target, out)[1]
    where = SshTarget(dest, o.port, o.identity, tuple(o.ssh_options))
    run = bench_on_board(
        target, where, o.python or "python3", o.threads, o.warmup, o.runs, list(o.seqs) or None, log=log
    )
    report = add_devices(run.run_dir, record_types) if run.saved is not None and run.run_dir else None
    echo(format_device({**run.doc, "ssh": where.label()}, host_results(run.run_dir)))
    echo(golden_summary(run.doc))
    if run.saved is not None:
        echo(
            f"device result: {run.saved}"
            + (f"; report: {report}" if report else " (it goes into the report when the run's report is written)")
        )
    if run.doc["status"] == "golden_failed":
        raise golden_failure(run.doc, where.label())


def package_dir(target: Path, out: Path | None) -> Path:
    """The package folder of a run dir, a recipe's run, or `target` itself when it holds a manifest."""
    if (target / "manifest.json").is_file() and (target / "golden.json").is_file():
        return target
    run_dir = target if target.is_dir() else recipe_and_run(target, out)[1]
    folder = run_dir / "package"
    if not (folder / "manifest.json").is_file():
        raise RecipeError(f"{folder}: no packaged model: run `edgetune package {target} --android android_demo` first")
    return folder


# -- package ----------------------------------------------------------------------------------------------------
def package(
    target: Path,
    out: Path | None,
    android: Path | None,
    check: bool,
    targets: tuple[str, ...],
    dest: Path | None,
    log: Log,
    echo: Log,
) -> None:
    """`edgetune package`: package the run's model (into --android, and device bundles for `targets`, one copied
    to `dest`), or with `check` only check the package installed in the Android project against the run."""
    if dest is not None and len(targets) != 1:
        raise RecipeError("--dest: give exactly one --target (the bundle to copy there)")
    if check and targets:
        raise RecipeError("--check checks the Android app's package; it does not take --target")
    recipe, out = recipe_and_run(target, out)
    if android is not None:
        recipe = recipe.model_copy(
            update={"package": recipe.package.model_copy(update={"android": str(android.resolve())})}
        )
    if targets:
        linux = list(dict.fromkeys([*recipe.package.linux, *(t.removeprefix("linux-") for t in targets)]))
        recipe = recipe.model_copy(update={"package": recipe.package.model_copy(update={"linux": linux})})
    if check:
        where = pipeline.check_installed(recipe, out)
        echo(f"{where}: ok, matches the run's model")
        return
    result = pipeline.build(recipe, out, until="package", log=log)
    echo(result_text(result))
    if targets and result.package is None:
        raise CheckFailed(
            f"no device bundle written: a verification gate failed (edgetune verify "
            f"{target} shows which); a model that fails verify is not packaged"
        )
    if result.package is not None:
        from edgetune.device.bundle import bundle_dir, export_bundle

        for t in targets:
            echo(f"device bundle: {bundle_dir(result.package.path, t)}")
        if dest is not None:
            echo(f"device bundle copied to: {export_bundle(bundle_dir(result.package.path, targets[0]), dest)}")
