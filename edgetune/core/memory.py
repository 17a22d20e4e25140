"""What a stage costs in memory: the peak resident set of this process and all its descendants (the model
builder, the benchmark's workers) while it runs, and handing freed memory back to the system between stages."""

from __future__ import annotations

import gc
import resource
import threading
from pathlib import Path

import psutil

MB = 2**20


def tree_rss() -> int:
    """Bytes resident now in this process and all its descendants (a page two of them share counts twice)."""
    me = psutil.Process()
    try:
        procs = [me, *me.children(recursive=True)]
    except psutil.Error:
        procs = [me]
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:  # ended between listing and reading
            pass
    return total


def _own_hwm() -> int | None:
    """This process's peak resident set (VmHWM) in bytes, or None without /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_hwm() -> bool:
    """Reset VmHWM to the current resident set (Linux: "5" into /proc/self/clear_refs); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _children_maxrss() -> int:
    """The peak resident set of the largest child (or descendant) waited for so far, in bytes (Linux: KiB)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


class TreePeak:
    """`with TreePeak() as m: ...` then `m.peak_mb`: the peak resident memory of this process and its descendants
    during the block. A thread samples the tree every `interval` s; this process's own peak comes from VmHWM (reset
    on entry where the kernel allows), which no sampling interval misses, and a child that ran and ended between
    two samples from getrusage (which keeps the largest peak of any child so far, so it tells of one that beat
    every earlier child). The figure is the largest of the three: a lower bound of the true peak of the sum, short
    of it by at most what the tree grew and shrank within one interval."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._hwm = False
        self._children = 0

    def __enter__(self) -> TreePeak:
        self._hwm = _reset_hwm()
        self._children = _children_maxrss()
        self.peak = tree_rss()
        self._thread = threading.Thread(target=self._sample, name="edgetune-tree-peak", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, tree_rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        own = _own_hwm() if self._hwm else None
        children = _children_maxrss()
        # a child's ru_maxrss starts from this process's peak when it was started (Linux copies it over fork and
        # exec), which is within the tree's peak only once VmHWM was reset for this block
        ended = children if self._hwm and children > self._children else 0
        self.peak = max(self.peak, tree_rss(), own or 0, ended)

    @property
    def peak_mb(self) -> float:
        return round(self.peak / MB, 1)


# below this resident set a process holds no model worth handing back, and a full collection (~0.2 s with torch
# loaded, measured on the dev VM) would only slow small builds down
RELEASE_ABOVE = 2 * 2**30


def release_memory() -> None:
    """Collect garbage and hand the C heap's free pages back to the system (glibc's malloc_trim), so the next
    stage, and the processes it starts, find the memory a finished stage used; nothing below RELEASE_ABOVE."""
    if psutil.Process().memory_info().rss < RELEASE_ABOVE:
        return
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
