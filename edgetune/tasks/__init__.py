"""The task registry: a recipe's `task:` (core/recipe.py's Recipe.task, a test holds the two lists equal) names
one; each is registered by import path and loaded on first use, so a build imports only its own task. The
pipeline, the CLI and the report read a task's stages from it."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from edgetune.build import Task, TaskData

_REGISTRY: dict[str, str] = {
    "classification": "edgetune.tasks.classification:ClassificationTask",
    "causal-lm": "edgetune.tasks.causal_lm:CausalLMTask",
}
TASKS = tuple(_REGISTRY)


def get_task(name: str) -> Task:
    entry = _REGISTRY.get(name)
    if entry is None:
        raise ValueError(f"unknown task {name!r} (tasks: {', '.join(_REGISTRY)})")
    module, cls = entry.split(":")
    return getattr(importlib.import_module(module), cls)()


def record_types(name: str) -> dict[str, type]:
    """Each stage of task `name`'s builds, and the type of record it writes (to read a manifest back)."""
    return {stage.name: stage.record for stage in get_task(name).stages()}


if TYPE_CHECKING:  # mypy holds each implementation to the protocol here (CI: mypy edgetune)
    from edgetune.tasks.causal_lm import CausalLMTask
    from edgetune.tasks.classification import ClassificationTask

    _classification: Task = ClassificationTask()
    _causal_lm: Task = CausalLMTask()

__all__ = ["TASKS", "Task", "TaskData", "get_task", "record_types"]
