"""Tasks plug into the pipeline through tasks.base.Task; get_task() maps a recipe's task name to one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Task, TaskData

TASKS = ("classification", "causal-lm")


def get_task(name: str) -> Task:
    if name == "classification":
        from .classification import ClassificationTask

        return ClassificationTask()
    if name == "causal-lm":
        from .causal_lm import CausalLMTask

        return CausalLMTask()
    raise ValueError(f"unknown task {name!r}")


if TYPE_CHECKING:  # mypy holds each implementation to the protocol here (CI: mypy edgetune)
    from .causal_lm import CausalLMTask
    from .classification import ClassificationTask

    _classification: Task = ClassificationTask()
    _causal_lm: Task = CausalLMTask()

__all__ = ["TASKS", "Task", "TaskData", "get_task"]
