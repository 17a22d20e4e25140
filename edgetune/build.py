"""The protocols stages, tasks and the pipeline share (importing none of them): a task, its data, and what
every stage is: a name, the stages whose records it reads, a key built from exactly what it reads, and
`run(ctx, inputs, out) -> record`. `pipeline.build()` loops over the task's stage list: key, reuse or run,
record. A stage never imports another stage and never asks which task it serves: the task chooses stages."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

if TYPE_CHECKING:
    from edgetune.core.artifacts import Record
    from edgetune.core.families import AdapterPlan, ModelInfo
    from edgetune.core.recipe import Recipe
    from edgetune.core.rundir import RunDir
    from edgetune.core.sources import ModelSource


@dataclass(frozen=True)
class TaskData:
    """Validated training and held-out examples, plus what identifies them for caching."""

    train: list[dict]
    eval: list[dict]
    labels: list[str] = field(default_factory=list)
    fingerprint: str = ""
    sources: dict[str, str] = field(default_factory=dict)  # file -> sha256
    warnings: list[str] = field(default_factory=list)  # e.g. texts truncated while reading
    # causal-lm: the chat template the rows were encoded with when it is not the tokenizer's own
    # (dataset.chat_template, or the raw prompt of prompt/completion rows); finetune loads the tokenizer with it
    chat_template: str | None = None
    # rows carved out of the training set before finetune, for quantize.auto's layout search (causal-lm): the
    # search measures layouts on rows the model never trained on (empty when the recipe does not search)
    selection: list[dict] = field(default_factory=list)


class Task(Protocol):
    """What the pipeline and the stages call on a task, and nothing else (mypy checks both implementations
    against it: see edgetune/tasks/__init__.py)."""

    name: str
    peft_task_type: str  # peft.TaskType value
    # quantize.auto measures its candidates on rows carved out of training before finetune (TaskData.selection)
    auto_carves_selection: bool

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

    def load_model(
        self, path: Path, labels: list[str] | None = None, trust_remote_code: bool = False, dtype: str = "float32"
    ) -> Any:
        """Load the base (or merged) model for this task, in eval mode (`labels`: a classifier's classes), in
        `dtype`: "float32", or "auto" for the checkpoint's own (bf16 stays bf16)."""
        ...

    def load_tokenizer(self, path: Path, trust_remote_code: bool = False, chat_template: str | None = None) -> Any:
        """Load the tokenizer that goes with the model at `path`; with `chat_template` (TaskData.chat_template),
        carrying that chat template, so that every folder it is saved into has it."""
        ...

    def batches(
        self, examples: list[dict], tokenizer: Any, batch_size: int, max_length: int, shuffle_seed: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Yield torch tensors the model takes, plus `labels` (the training targets)."""
        ...

    def loss(self, model: Any, batch: dict[str, Any]) -> Any:
        """The training loss of `model` (a peft model) on one batch from `batches` (or a slice of one): a mean
        over `loss_items(batch)` items."""
        ...

    def loss_items(self, batch: dict[str, Any]) -> int:
        """How many items `loss` averages over in `batch` (examples, target tokens): the weight of a slice of a
        batch when training splits it over processes and micro-batches."""
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


@dataclass(frozen=True)
class Key:
    """What a stage's output depends on besides its upstream stages' outputs (which the pipeline hashes):
    the configuration it reads, and fingerprints of other inputs (dataset, model source). `version`: the shape of
    this key; bump KEY_VERSION when what a key holds changes, instead of keeping old keys valid with branches: a
    run directory written with another version is rebuilt from its first such stage, with one line saying so."""

    config: Any
    reads: list[str] = field(default_factory=list)
    version: int = 1


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
    # the recipe's adapters: entries with a dataset of their own, by name: their validated data
    adapter_data: dict[str, TaskData] = field(default_factory=dict)


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
    def distributed(self) -> bool:
        """Whether every process of a launch runs this stage (training), not rank 0 alone; only rank 0 writes."""
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
    distributed: ClassVar[bool] = False

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
