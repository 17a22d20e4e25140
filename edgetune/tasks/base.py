"""The small interface every task implements; stages call only these methods."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from ..stages.base import Stage


@dataclass(frozen=True)
class TaskData:
    """Validated training and held-out examples, plus what identifies them for caching."""

    train: list[dict]
    eval: list[dict]
    labels: list[str] = field(default_factory=list)
    fingerprint: str = ""
    sources: dict[str, str] = field(default_factory=dict)  # file -> sha256
    warnings: list[str] = field(default_factory=list)  # e.g. texts truncated while reading


class Task(Protocol):
    """What the pipeline and the stages call on a task, and nothing else (mypy checks both implementations
    against it: see edgetune/tasks/__init__.py)."""

    name: str
    peft_task_type: str  # peft.TaskType value

    def stages(self) -> list[Stage]:
        """The stages of a build of this task, in order (edgetune/stages/)."""
        ...

    def load_data(self, cfg: Any, base_dir: Path, source: Any = None, max_length: int | None = None) -> TaskData:
        """Read and validate the dataset section (against the model `source` and training.max_length where it
        matters); raise RecipeError."""
        ...

    def check_model(self, info: Any, source: Any, package: Any, trust_remote_code: bool = False) -> list[str]:
        """Check what the task (and its `package` section) needs of the model beyond its architecture; raise
        RecipeError, or return warnings."""
        ...

    def load_model(self, path: Path, labels: list[str] | None = None, trust_remote_code: bool = False) -> Any:
        """Load the base (or merged) model for this task, in eval mode (`labels`: a classifier's classes)."""
        ...

    def load_tokenizer(self, path: Path, trust_remote_code: bool = False) -> Any:
        """Load the tokenizer that goes with the model at `path`."""
        ...

    def batches(
        self, examples: list[dict], tokenizer: Any, batch_size: int, max_length: int, shuffle_seed: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Yield torch tensors the model takes, plus `labels` (the training targets)."""
        ...

    def loss(self, model: Any, batch: dict[str, Any]) -> Any:
        """The training loss of `model` (a peft model) on one batch from `batches`."""
        ...

    def evaluate(
        self, model: Any, tokenizer: Any, examples: list[dict], batch_size: int, max_length: int, generate: int = 0
    ) -> tuple[np.ndarray, dict]:
        """Comparable outputs of `model` (PyTorch, or what `load_onnx` returns) on `examples` (float64 for a
        float64 model) and the task's metrics; with `generate`, greedy generations too (metrics['generations'])."""
        ...

    def load_onnx(self, path: Path, threads: int = 0) -> Any:
        """An ONNX Runtime model that `evaluate` takes in place of the PyTorch model."""
        ...

    def checks(self, precision: str, cfg: Any, ref_metrics: dict, metrics: dict) -> list[tuple[str, float, float, str]]:
        """The verification gates for one ONNX model: (name, value, threshold, op)."""
        ...
