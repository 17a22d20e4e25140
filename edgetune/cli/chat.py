"""`edgetune generate` and `edgetune chat`: the causal LM a run exported, in onnxruntime-genai."""

from __future__ import annotations

from pathlib import Path

import click

from edgetune.cli.common import handle_errors, with_options

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
    click.option(
        "--adapter",
        default=None,
        metavar="NAME",
        help="Run the int4 base with this adapter of the recipe's adapters: list (the adapters stage's output).",
    ),
]


@click.command()
@run_arg
@click.option("--prompt", required=True, help="The user message.")
@with_options(model_opts)
@handle_errors
def generate(run_dir: Path, prompt: str, precision, max_tokens: int, threads: int, system, adapter) -> None:
    """Answer one PROMPT with the causal LM exported in RUN_DIR (onnxruntime-genai), streaming the reply.

    \b
    Examples:
      edgetune generate runs/home-assistant-smollm2 --prompt "dim the kitchen lights to 30"
      edgetune generate runs/my-run --adapter timers --prompt "tea timer, 4 minutes"
    """
    from edgetune.chat import generate as run_generate

    run_generate(
        run_dir,
        prompt,
        max_tokens,
        precision,
        threads,
        system,
        on_text=lambda t: click.echo(t, nl=False),
        adapter=adapter,
    )
    click.echo()


@click.command()
@run_arg
@with_options(model_opts)
@handle_errors
def chat(run_dir: Path, precision, max_tokens: int, threads: int, system, adapter) -> None:
    """Chat with the causal LM exported in RUN_DIR; replies stream as they are generated. Ctrl-D ends.

    With --adapter, the int4 base runs with that adapter; `/adapter NAME` switches to another one (and
    `/adapter` to the bare base) without reloading the base model, starting a new conversation.

    \b
    Examples:
      edgetune chat runs/home-assistant-smollm2 --precision int4
      edgetune chat runs/my-run --adapter home
    """
    from edgetune.chat import Chat, adapters_folder, model_folder, opening_messages
    from edgetune.core.errors import EdgetuneError

    folder = adapters_folder(run_dir, precision) if adapter else model_folder(run_dir, precision)
    session = Chat(folder, threads, adapter)
    history = opening_messages(run_dir, system, adapter)
    while True:
        try:
            line = input("> ")
        except EOFError:
            click.echo()
            return
        if not line.strip():
            continue
        if line.split()[0] == "/adapter" and session.adapters:
            name = line.split()[1] if len(line.split()) > 1 else None
            try:
                session.use(name)
            except EdgetuneError as e:
                click.echo(e.message, err=True)
                continue
            history = opening_messages(run_dir, system, name)
            click.echo(f"(adapter: {name or 'none, the bare base'}; a new conversation)")
            continue
        history.append({"role": "user", "content": line})
        reply = []
        for piece in session.stream(history, max_tokens):
            reply.append(piece)
            click.echo(piece, nl=False)
        click.echo()
        history.append({"role": "assistant", "content": "".join(reply)})
