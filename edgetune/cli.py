"""The edgetune command line: a thin layer over edgetune.pipeline and the stages."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from . import __version__
from .errors import EdgetuneError, RecipeError

STAGE_HELP = {
    "finetune": "Fine-tune the base model with LoRA on the recipe's data and evaluate it each epoch.",
    "merge": "Merge the LoRA adapter into the base weights; fail if merged outputs differ from the adapter model's.",
    "export": "Export the merged model to ONNX (dynamic batch and sequence axes) with optimum-onnx.",
    "quantize": "Quantize the exported ONNX model to int8 with ONNX Runtime.",
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
            click.echo(f"Error: {e.message}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted; run the same command again to resume.", err=True)
            sys.exit(130)

    return wrapper


def _log(msg: str) -> None:
    click.echo(msg, err=True)


def _load(recipe: Path):
    from .recipe import load_recipe

    return load_recipe(recipe)


recipe_arg = click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
out_opt = click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=None,
                       help="Run directory [default: runs/<recipe name>].")


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
@click.option("--from", "from_stage", type=click.Choice(["finetune", "merge", "export", "quantize", "verify", "bench", "report"]),
              default=None, help="Redo this stage and every stage after it.")
@click.option("--force", is_flag=True, help="Redo every stage.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@handle_errors
def build(recipe: Path, out: Path | None, from_stage: str | None, force: bool, no_progress: bool) -> None:
    """Run every stage of RECIPE: finetune, merge, export, quantize, verify, bench, report.

    Stages whose inputs and outputs are unchanged are skipped. Exits 2 on bad input (recipe, dataset,
    model source), 1 when a verification gate fails (the report is still written).

    \b
    Example:
      edgetune build recipes/intent-minilm.yaml --out runs/try1
    """
    from .pipeline import build as run_build

    result = run_build(_load(recipe), out, from_stage, force, log=_log, progress=not no_progress)
    _print_result(result)


def _print_result(result) -> None:
    if result.benchmark is not None:
        from .stages.bench import format_benchmark

        click.echo(format_benchmark(result.benchmark))
    if result.verification is not None:
        v = result.verification
        from .stages.report import headline

        for name, m in v.models.items():
            key, value = headline(m) or ("-", float("nan"))
            click.echo(f"{name:<14} {key} {value:.4f}" + (f"  max|diff| {m['max_abs_diff']:.2e}  top-1 agree {m['top1_agreement']:.4f}"
                                                          if "max_abs_diff" in m else ""))
    if result.report is not None:
        click.echo(f"report: {result.report.markdown_path}")
    click.echo(f"run dir: {result.run_dir}")


def _stage_command(name: str) -> None:
    @handle_errors
    def command(recipe: Path, out: Path | None) -> None:
        from .pipeline import build as run_build

        result = run_build(_load(recipe), out, until=name, log=_log)
        _print_result(result)

    command.__doc__ = f"""{STAGE_HELP[name]}

    Runs just this stage on what the run directory holds (earlier stages run first only if they
    never finished). Use `edgetune build` to redo stale stages.

    \b
    Example:
      edgetune {name} recipes/intent-minilm.yaml
    """
    command.__name__ = name
    cli.command(name=name)(out_opt(recipe_arg(command)))


for _name in STAGE_HELP:
    _stage_command(_name)


@cli.command(name="bench")
@click.argument("target", type=click.Path(path_type=Path))
@out_opt
@click.option("--threads", type=click.IntRange(1, 256), default=None, help="Intra-op threads [default: recipe, or 2].")
@click.option("--seq", "seqs", type=click.IntRange(1, 8192), multiple=True, help="Sequence length; repeat for several [default 16 32 128].")
@click.option("--batch", type=click.IntRange(1, 1024), default=None, help="Batch size [default: 1].")
@click.option("--warmup", type=click.IntRange(0, 100000), default=None, help="Untimed runs first [default 20].")
@click.option("--runs", type=click.IntRange(1, 1000000), default=None, help="Timed runs [default 100].")
@handle_errors
def bench_cmd(target: Path, out: Path | None, threads, seqs, batch, warmup, runs) -> None:
    """Benchmark latency on this CPU. TARGET is a recipe (its run's models against PyTorch) or any .onnx file.

    With a recipe, PyTorch eager fp32 is measured in the same run as the baseline and every ONNX
    result is shown as a ratio to it. With an .onnx file, inputs are generated from its metadata.

    \b
    Examples:
      edgetune bench recipes/intent-minilm.yaml --threads 1
      edgetune bench runs/intent-minilm/quantize/model_int8.onnx --seq 32 --runs 500
    """
    from .recipe import BenchmarkConfig
    from .stages.bench import bench, format_benchmark

    overrides = {k: v for k, v in {"threads": threads, "batch_size": batch, "warmup": warmup, "runs": runs,
                                   "sequence_lengths": list(seqs) or None}.items() if v is not None}
    if target.suffix == ".onnx":
        if not target.is_file():
            raise RecipeError(f"ONNX file not found: {target}")
        if (target.parent / "genai_config.json").is_file():
            raise RecipeError(f"{target} is a causal LM with a KV cache: benchmark it through its recipe "
                              f"(edgetune bench RECIPE), which measures tokens/s against PyTorch")
        from .stages.common import describe_onnx

        model = describe_onnx(target, "onnx")
        cfg = BenchmarkConfig(**overrides)
        click.echo(format_benchmark(bench([model], cfg, log=_log)))
        return
    recipe = _load(target)
    recipe = recipe.model_copy(update={"benchmark": recipe.benchmark.model_copy(update=overrides)})
    from .pipeline import build as run_build

    _print_result(run_build(recipe, out, until="bench", log=_log))


run_arg = click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
model_opts = [
    click.option("--precision", type=click.Choice(["int4", "int8", "fp32"]), default=None,
                 help="Which exported model [default: the smallest there is]."),
    click.option("--max-tokens", type=click.IntRange(1, 4096), default=128, help="Most new tokens per reply."),
    click.option("--threads", type=click.IntRange(0, 256), default=0, help="Intra-op threads [default: onnxruntime's]."),
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
    from .chat import generate as run_generate

    run_generate(run_dir, prompt, max_tokens, precision, threads, system,
                 on_text=lambda t: click.echo(t, nl=False))
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
    from .chat import Chat, model_folder, opening_messages

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
    from .pipeline import prepare

    p = prepare(_load(recipe))
    d = p.data
    click.echo(f"{recipe}: ok: task {p.recipe.task}, model {p.source.path} ({p.source.kind}), "
               f"{len(d.train)} train / {len(d.eval)} eval rows" + (f", {len(d.labels)} labels" if d.labels else ""))


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
