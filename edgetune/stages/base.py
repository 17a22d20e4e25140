"""What every stage is: a name, the stages whose records it reads, a key built from exactly what it reads, and
`run(ctx, inputs, out) -> record`. `pipeline.build()` loops over the task's stage list: key, reuse or run,
record. A stage never imports another stage and never asks which task it serves: the task chooses stages."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from ..artifacts import Record
    from ..families import AdapterPlan, ModelInfo
    from ..recipe import Recipe
    from ..rundir import RunDir
    from ..sources import ModelSource
    from ..tasks.base import Task, TaskData


@dataclass(frozen=True)
class Key:
    """What a stage's output depends on besides its upstream stages' outputs (which the pipeline hashes):
    the configuration it reads, and fingerprints of other inputs (dataset, model source)."""

    config: Any
    reads: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BuildContext:
    """Everything validated before stage one, shared by the stages of one build."""

    recipe: Recipe
    task: Task
    data: TaskData
    source: ModelSource
    info: ModelInfo
    adapter: AdapterPlan
    run: RunDir
    base: Callable[[], ModelSource]  # the base model, loaded (a GGUF dequantized) on first use
    log: Callable[[str], None] = lambda s: None
    progress: bool = True
    until: str | None = None  # the stage `edgetune <stage>` asked for, if any
    stopped: tuple[str, str] | None = None  # (stage, error) when a stage of this build failed


class Stage(Protocol):
    @property
    def name(self) -> str:
        """The stage's folder in the run directory and its entry in the manifest."""
        ...

    @property
    def needs(self) -> tuple[str, ...]:
        """Stages whose records `run` receives (those the build has)."""
        ...

    @property
    def record(self) -> type:
        """The record type `run` returns (what the manifest's entry is read back as)."""
        ...

    @property
    def after_failure(self) -> tuple[str, ...] | None:
        """None: this stage does not run once a stage of the build has failed. Otherwise it still runs (to
        write what finished: bench, report) when the stages named here have records."""
        ...

    def key(self, ctx: BuildContext) -> Key:
        """The configuration and non-stage inputs that change this stage's output."""
        ...

    def check(self, recipe: Recipe, info: ModelInfo) -> None:
        """Before stage one: RecipeError for what this stage cannot do with the recipe or the model."""
        ...

    def skip(self, ctx: BuildContext, inputs: dict[str, Record]) -> str | None:
        """Why this stage does not run in this build (None: it runs)."""
        ...

    def run(self, ctx: BuildContext, inputs: dict[str, Record], out: Path) -> Record:
        """Write the stage's files into `out` (a scratch folder, renamed into place after) and return its record."""
        ...

    def finish(self, ctx: BuildContext, record: Record) -> None:
        """After the record is run or reused: effects outside the run directory (installing into an app)."""
        ...


class BaseStage:
    """Defaults for the optional parts of Stage."""

    name: ClassVar[str]
    needs: ClassVar[tuple[str, ...]] = ()
    record: ClassVar[type]
    after_failure: ClassVar[tuple[str, ...] | None] = None

    def check(self, recipe: Recipe, info: ModelInfo) -> None:
        """Before stage one: RecipeError for what this stage cannot do with the recipe or the model."""
        return None

    def skip(self, ctx: BuildContext, inputs: dict[str, Any]) -> str | None:
        return None

    def finish(self, ctx: BuildContext, record: Any) -> None:
        return None


def trained_model(inputs: dict[str, Any]) -> Any:
    """The model later stages export, verify and time: the distilled student when the build made one
    (compress), else the merged model."""
    return inputs.get("compress") or inputs["merge"]
