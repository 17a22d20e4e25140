"""Tasks plug into the stages through tasks.base.Task; get_task() maps a recipe's task name to one."""

from __future__ import annotations

from .base import Task, TaskData


def get_task(name: str) -> Task:
    if name == "classification":
        from .classification import ClassificationTask

        return ClassificationTask()
    if name == "causal-lm":
        from .causal_lm import CausalLMTask

        return CausalLMTask()
    raise ValueError(f"unknown task {name!r}")


__all__ = ["Task", "TaskData", "get_task"]
