"""Run by tests/test_distributed.py as each rank of `torchrun --nproc-per-node 2`: the edgetune command (argv),
with a Python audit hook that records every file this process creates, writes, renames or removes under
$WATCH; at exit the list goes to $WRITES_LOG.<rank> (outside $WATCH).

    torchrun --standalone --nproc-per-node 2 tests/dist_build.py build RECIPE --out RUN
"""

import atexit
import json
import os
import sys

WRITES: list[str] = []
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
CHANGES = {"os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "shutil.rmtree", "os.truncate"}


def _under(path) -> bool:
    try:
        where, watch = os.path.realpath(os.fsdecode(path)), os.path.realpath(os.environ["WATCH"])
        return where == watch or where.startswith(watch + os.sep)
    except (TypeError, ValueError):
        return False  # a file descriptor, not a path


def _hook(event: str, args: tuple) -> None:
    if event == "open":
        path, mode, flags = args
        writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & WRITE_FLAGS)
        if writes and _under(path):
            WRITES.append(f"open {os.fsdecode(path)}")
    elif event in CHANGES and args and _under(args[0]):
        WRITES.append(f"{event} {os.fsdecode(args[0])}")


def _dump() -> None:
    with open(f"{os.environ['WRITES_LOG']}.{os.environ.get('RANK', '0')}", "w") as f:
        json.dump(WRITES, f)


# processes it spawns (bench workers) import this file as __mp_main__: only the launched process is watched
if __name__ == "__main__":
    rank = os.environ["RANK"]  # read now: rank 0 forgets the launch once training is over
    atexit.register(lambda: os.environ.__setitem__("RANK", rank) or _dump())
    sys.addaudithook(_hook)

    from edgetune.cli import cli  # after the hook, so that imports' writes are seen too

    cli(args=sys.argv[1:])
