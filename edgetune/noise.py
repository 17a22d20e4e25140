"""Is the machine quiet enough to believe a benchmark? Measured around the benchmark: the load average, the CPU
time other processes took (the whole machine's busy time from /proc/stat minus this process tree's own CPU time)
and the hypervisor's steal; and, across interleaved rounds, how far each model's round medians spread."""

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
        worst = max(spreads.items(), key=lambda kv: kv[1], default=(None, 0.0))
        reasons = []
        if other is not None and other > MAX_OTHER_CORES:
            reasons.append(f"other processes used {other:.2f} of {os.cpu_count()} cores")
        if steal is not None and steal > MAX_STEAL:
            reasons.append(f"the hypervisor stole {steal:.0%} of the CPU")
        if worst[1] > MAX_SPREAD:
            reasons.append(f"round-to-round spread {worst[1]:.0%} ({worst[0]})")
        return {
            "load_before": round(self.load0, 2),
            "load_after": round(os.getloadavg()[0], 2),
            "other_cores": None if other is None else round(other, 3),
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
    other = noise.get("other_cores")
    return (
        f"machine quiet: other processes {other if other is not None else '?'} cores, round spread <= "
        f"{noise['max_spread']:.0%}, load {noise['load_before']} -> {noise['load_after']}"
    )
