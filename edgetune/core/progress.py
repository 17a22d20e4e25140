"""One-line progress for training loops whose output is not a terminal (a log file, CI, `nohup`): step, rate and
ETA at most every few seconds, through the stage's log function, where a terminal would show a tqdm bar."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable


def on_terminal() -> bool:
    """True when stderr (where tqdm draws its bar) is a terminal."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def quiet_library_bars() -> None:
    """Turn off the bars transformers and huggingface_hub draw themselves ("Loading weights", downloads): where
    edgetune shows no bar of its own (--no-progress, or output not a terminal) they would only fill the log."""
    import huggingface_hub.utils
    import transformers.utils.logging

    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()


def duration(seconds: float) -> str:
    """45s, 12m05s, 3h07m."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class StepProgress:
    """Call `epoch(e, done)` before an epoch's steps (`done`: steps already done in it, on a resume) and `step()`
    after each step; every `every` seconds (0: every step) it logs e.g.
    `finetune: epoch 2/10 step 120/400 (30%) 3.1 steps/s, ETA 1m30s for the epoch, 12m05s for the stage`.
    The rate counts training steps only; the stage's ETA adds the measured time between epochs (evaluation,
    checkpoints) for each evaluation still to come. `enabled=False` logs nothing (a bar shows progress)."""

    def __init__(
        self,
        log: Callable[[str], None],
        name: str,
        epochs: int,
        steps_per_epoch: int,
        every: float = 60.0,
        enabled: bool = True,
    ) -> None:
        self.log, self.name, self.epochs, self.steps = log, name, epochs, steps_per_epoch
        self.every, self.enabled = every, enabled
        self.busy = 0.0  # seconds spent in steps
        self.ran = 0  # steps this process ran
        self.between: list[float] = []  # seconds from an epoch's last step to the next epoch's start
        self.mark: float | None = None  # end of the last step (or the start of the epoch)
        self.last_line = time.monotonic()
        self.current, self.done = 0, 0

    def epoch(self, epoch: int, done: int = 0) -> None:
        now = time.monotonic()
        if self.mark is not None:
            self.between.append(now - self.mark)
        self.current, self.done, self.mark = epoch, done, now

    def step(self) -> None:
        now = time.monotonic()
        self.busy += now - (self.mark if self.mark is not None else now)
        self.mark, self.ran, self.done = now, self.ran + 1, self.done + 1
        if not self.enabled or now - self.last_line < self.every:
            return
        self.last_line = now
        rate = self.ran / self.busy if self.busy > 0 else math.inf
        left = self.steps - self.done
        evals = self.epochs - self.current  # this epoch's evaluation and those of the epochs after it
        stage = (left + (self.epochs - self.current - 1) * self.steps) / rate
        stage += evals * (sum(self.between) / len(self.between) if self.between else 0.0)
        speed = f"{rate:.1f} steps/s" if rate >= 1 else f"{1 / rate:.1f} s/step"
        self.log(
            f"{self.name}: epoch {self.current + 1}/{self.epochs} step {self.done}/{self.steps} "
            f"({self.done / self.steps:.0%}) {speed}, ETA {duration(left / rate)} for the epoch, "
            f"{duration(stage)} for the stage"
        )
