"""Tasks plug into the pipeline through tasks.base.Task; get_task() maps a recipe's task name to one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgetune.build import Task, TaskData

TASKS = ("classification", "causal-lm")


def get_task(name: str) -> Task:
    if name == "classification":
        from edgetune.tasks.classification import ClassificationTask

        return ClassificationTask()
    if name == "causal-lm":
        from edgetune.tasks.causal_lm import CausalLMTask

        return CausalLMTask()
    raise ValueError(f"unknown task {name!r}")


def record_types(name: str) -> dict[str, type]:
    """Each stage of task `name`'s builds, and the type of record it writes (to read a manifest back)."""
    return {stage.name: stage.record for stage in get_task(name).stages()}


if TYPE_CHECKING:  # mypy holds each implementation to the protocol here (CI: mypy edgetune)
    from edgetune.tasks.causal_lm import CausalLMTask
    from edgetune.tasks.classification import ClassificationTask

    _classification: Task = ClassificationTask()
    _causal_lm: Task = CausalLMTask()

__all__ = ["TASKS", "Task", "TaskData", "get_task", "record_types"]
