"""Is the machine quiet enough to believe a benchmark? Measured around the benchmark: the load average, the CPU
time other processes took (the whole machine's busy time from /proc/stat minus this process tree's own CPU time)
and the hypervisor's steal; and, across interleaved rounds, how far each model's round medians spread. `assess`
judges figures measured elsewhere too: a phone's (edgetune/android.py), where the load average stands in for other
processes' CPU time."""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

# Above these, a result is flagged busy (and `bench --strict` exits 1).
MAX_OTHER_CORES = 0.3  # other processes' CPU use during the benchmark, in cores on average
MAX_STEAL = 0.05  # share of CPU time the hypervisor gave to other guests
MAX_SPREAD = 0.20  # (max - min) / median of a model's round p50s
MIN_SPREAD_MS = 0.05  # spreads of rows faster than this are timer jitter, not load
# A phone (bench --adb), where the app's CPU time is not told from other processes': the 1-min load average that
# is not the benchmark's own, per core. Android counts tasks in uninterruptible sleep too, hence the loose bound.
MAX_LOAD_PER_CORE = 0.5


def _proc_stat() -> tuple[float, float, float] | None:
    """(busy, steal, total) CPU seconds of the whole machine since boot, or None without /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    ticks = [int(x) for x in fields]
    hz = os.sysconf("SC_CLK_TCK")
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    steal = ticks[7] if len(ticks) > 7 else 0
    total = sum(ticks[:8])
    return (total - idle - steal) / hz, steal / hz, total / hz


def _own_cpu() -> float:
    """CPU seconds of this process and its finished (waited-for) children."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


@dataclass
class Probe:
    """Started before a benchmark, finished after it."""

    t0: float
    stat0: tuple[float, float, float] | None
    own0: float
    load0: float

    @classmethod
    def start(cls) -> Probe:
        return cls(time.monotonic(), _proc_stat(), _own_cpu(), os.getloadavg()[0])

    def finish(self, spreads: dict[str, float]) -> dict:
        """The noise record: figures, the verdict, and the reasons for it. `spreads` maps a row ('model seq') to
        its round spread, for rows slow enough for the spread to mean load."""
        elapsed = max(1e-9, time.monotonic() - self.t0)
        stat1, own = _proc_stat(), _own_cpu() - self.own0
        other = steal = None
        if self.stat0 and stat1:
            busy, st, total = (b - a for a, b in zip(self.stat0, stat1))
            other = max(0.0, (busy - own) / elapsed)
            steal = st / total if total > 0 else 0.0
        return assess(self.load0, os.getloadavg()[0], other, steal, spreads, os.cpu_count())


def assess(
    load_before: float | None,
    load_after: float | None,
    other_cores: float | None,
    steal: float | None,
    spreads: dict[str, float],
    cores: int | None,
    others_load: float | None = None,
) -> dict:
    """The noise record from figures measured here (Probe) or on a device (edgetune/android.py); None where a
    figure was not measured. Busy when other processes used more than MAX_OTHER_CORES, steal exceeded MAX_STEAL,
    a row's round spread exceeded MAX_SPREAD, or, where other processes' CPU time cannot be told from the
    benchmark's own (a phone), `others_load`, the load average others put on the machine, exceeded
    MAX_LOAD_PER_CORE of its cores."""
    worst = max(spreads.items(), key=lambda kv: kv[1], default=(None, 0.0))
    reasons = []
    if other_cores is not None and other_cores > MAX_OTHER_CORES:
        reasons.append(f"other processes used {other_cores:.2f} of {cores} cores")
    if others_load is not None and cores and others_load > MAX_LOAD_PER_CORE * cores:
        reasons.append(f"load average {others_load:.2f} on {cores} cores")
    if steal is not None and steal > MAX_STEAL:
        reasons.append(f"the hypervisor stole {steal:.0%} of the CPU")
    if worst[1] > MAX_SPREAD:
        reasons.append(f"round-to-round spread {worst[1]:.0%} ({worst[0]})")
    return {
        "load_before": None if load_before is None else round(load_before, 2),
        "load_after": None if load_after is None else round(load_after, 2),
        "other_cores": None if other_cores is None else round(other_cores, 3),
        "steal": None if steal is None else round(steal, 4),
        "max_spread": round(worst[1], 4),
        "busy": bool(reasons),
        "reasons": reasons,
    }


def spread(values: list[float]) -> float:
    """(max - min) / median of a model's round figures; 0 for one round."""
    import statistics

    if len(values) < 2:
        return 0.0
    mid = statistics.median(values)
    return (max(values) - min(values)) / mid if mid > 0 else 0.0


def verdict(noise: dict) -> str:
    """One line for the table and the report."""
    if not noise:
        return ""
    if noise["busy"]:
        return (
            "WARNING: the machine was busy during this benchmark ("
            + "; ".join(noise["reasons"])
            + "): ratios may be off by that much; rerun on a quiet machine (--strict exits 1 on this)"
        )
    if "cpu_busy" in noise:  # a phone (edgetune/android.py): the device's CPU use, the app's own included
        busy = noise["cpu_busy"]
        return (
            f"device quiet: round spread <= {noise['max_spread']:.0%}, load {noise['load_before']} -> "
            f"{noise['load_after']} on {noise.get('cores') or '?'} cores, CPU "
            f"{'?' if busy is None else f'{busy:.0%}'} busy (the app's own use included)"
        )
    other = noise.get("other_cores")
    return (
        f"machine quiet: other processes {other if other is not None else '?'} cores, round spread <= "
        f"{noise['max_spread']:.0%}, load {noise['load_before']} -> {noise['load_after']}"
    )
