"""What the commands share: errors shown as one line with their exit code, the log on stderr, and the arguments
and options several commands take."""

from __future__ import annotations

import errno
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from edgetune.api import one_line
from edgetune.core.errors import EdgetuneError

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(fn: F) -> F:
    """Show EdgetuneError as one line on stderr and exit with its code; other exceptions are bugs."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EdgetuneError as e:
            click.echo(f"Error: {one_line(e.message)}", err=True)
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

    return wrapper  # type: ignore[return-value]


def log(msg: str) -> None:
    """Progress and warnings: stderr, so that stdout holds only a command's result."""
    click.echo(msg, err=True)


def with_options(opts: list[Callable[[F], F]]) -> Callable[[F], F]:
    """Apply several click options at once, in the order given."""

    def deco(fn: F) -> F:
        for o in reversed(opts):
            fn = o(fn)
        return fn

    return deco


recipe_arg = click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
# a recipe file or a run directory (see edgetune.api.recipe_and_run)
target_arg = click.argument("target", metavar="RECIPE|RUN_DIR", type=click.Path(path_type=Path))
out_opt = click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run directory [default: runs/<recipe name>].",
)

processes_opt = click.option(
    "--processes",
    type=click.IntRange(1, 1024),
    default=1,
    show_default=True,
    help="Train with N processes on this machine (data-parallel; torchrun starts them): the finetune stage runs "
    "on every process, everything after it once. For several machines use torchrun or accelerate launch "
    "with `-m edgetune`.",
)


def relaunch(processes: int, args: list[str]) -> None:
    """Run `edgetune ARGS` as `processes` processes under torchrun (on 127.0.0.1), and exit with its status.
    Nothing to do for 1, or inside a launch already."""
    import os
    import subprocess

    if processes <= 1 or "WORLD_SIZE" in os.environ:
        return
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1"]
    cmd += ["--nproc-per-node", str(processes), "-m", "edgetune", *args]
    sys.exit(subprocess.call(cmd))
