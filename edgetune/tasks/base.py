"""The small interface every task implements; stages call only these methods."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol

import numpy as np


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
    name: str
    onnx_task: str  # optimum-onnx export task name
    peft_task_type: str  # peft.TaskType value

    def load_data(self, cfg: Any, base_dir: Path, source: Any = None, max_length: int | None = None) -> TaskData:
        """Read and validate the dataset section (against the model `source` and training.max_length where it
        matters); raise RecipeError."""

    def check_model(self, info: Any, source: Any, package: Any, trust_remote_code: bool = False) -> list[str]:
        """Check what the task (and its `package` section) needs of the model beyond its architecture; raise
        RecipeError, or return warnings."""

    def load_model(self, path: Path, data: TaskData, trust_remote_code: bool = False) -> Any:
        """Load the base (or merged) model for this task, in eval mode."""

    def load_tokenizer(self, path: Path, trust_remote_code: bool = False) -> Any:
        """Load the tokenizer that goes with the model at `path`."""

    def batches(
        self, examples: list[dict], tokenizer: Any, batch_size: int, max_length: int, shuffle_seed: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Yield torch tensors the model takes (with `labels` for training)."""

    def loss(self, model: Any, batch: dict[str, Any]) -> Any:
        """The training loss of `model` (a peft model) on one batch from `batches`."""

    def model_inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The subset of a batch the exported model takes (no labels)."""

    def evaluate(self, model: Any, tokenizer: Any, examples: list[dict], batch_size: int, max_length: int) -> tuple[np.ndarray, dict]:
        """Comparable outputs of `model` on `examples` (float64 for a float64 model) and the task's metrics."""

    def dummy_inputs(self, tokenizer: Any, batch_size: int, seq_len: int) -> dict[str, np.ndarray]:
        """Inputs of a given shape for benchmarking."""
