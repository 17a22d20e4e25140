"""An emulated arm64 Linux board over ssh, for tests (how it is built: arm64_board.py).

In a test module (tests/ is on sys.path under pytest):

    from board import arm64_boards  # noqa: F401  (the session fixture)

    def test_something(arm64_boards):
        b = arm64_boards("cortex-a53")          # started once per session and CPU, stopped at the end
        b.put(model_path, "model.onnx")         # scp into the board's home
        out = b.run("python3 -c 'import platform; print(platform.machine())'").stdout   # 'aarch64\\n'
        out = b.python("import onnxruntime; print(onnxruntime.__version__)").stdout
        b.host, b.port, b.user, b.identity_file, b.cpu, b.ssh_config, b.alias    # for ssh/scp of your own

or, outside the session fixture, `with running_board("max") as b: ...`. The same cache also gives OpenSSH's sshd
(`sshd()`: tests run their own sshd servers with it, so no openssh-server is installed on the host) and
qemu-x86_64 (`x86_64_emulator()`: a program of this host on an emulated AVX2-only x86 CPU).

Provisioning (first use: 16-35 s on the 2-core dev VM, then cached in ${EDGETUNE_CACHE:-~/.cache/edgetune}/
arm64-board) or a start that fails FAILS the test; with EDGETUNE_SKIP_BOARD=1 the test is skipped instead.
"""

from __future__ import annotations

import contextlib
import os

import pytest

from .arm64_board import (
    Board,
    ProvisionError,
    cache_dir,
    provision,
    run_onnx_files,
    sshd,
    start,
    stop,
    x86_64_emulator,
)

__all__ = [
    "Board",
    "ProvisionError",
    "arm64_boards",
    "cache_dir",
    "provision",
    "run_onnx_files",
    "running_board",
    "sshd",
    "start",
    "stop",
    "x86_64_emulator",
]


def _unavailable(err: Exception):
    msg = f"arm64 board unavailable: {type(err).__name__}: {err}"
    if os.environ.get("EDGETUNE_SKIP_BOARD") == "1":
        pytest.skip(msg + " (EDGETUNE_SKIP_BOARD=1)")
    pytest.fail(msg + "\n(set EDGETUNE_SKIP_BOARD=1 to skip the board's tests instead)", pytrace=False)


@contextlib.contextmanager
def running_board(cpu: str = "max", cache: str | None = None):
    """Provision (cached), start a board whose python3 emulates `cpu`, yield its Board, stop it."""
    board = error = None
    try:
        provision(cache, quiet=True)
        board = start(cpu, cache)
    except (ProvisionError, OSError) as err:
        error = err
    if error is not None:  # outside the except block: no "during handling of..." chain in the report
        _unavailable(error)
    try:
        yield board
    finally:
        stop(board)


@pytest.fixture(scope="session")
def arm64_boards():
    """A function cpu -> Board: one sshd board per CPU, started on first request, stopped after the session."""
    boards: dict[str, Board] = {}
    failed: list[Exception] = []

    def get(cpu: str = "max") -> Board:
        if cpu not in boards and not failed:
            try:
                if not boards:
                    provision(quiet=True)
                boards[cpu] = start(cpu)
            except (ProvisionError, OSError) as err:
                failed.append(err)  # reported outside the except block, and to every later request
        if cpu not in boards:
            _unavailable(failed[0])
        return boards[cpu]

    yield get
    for board in boards.values():
        stop(board)
