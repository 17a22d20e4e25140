"""Frozen records passed between stages. Paths are absolute in memory, relative to the run dir on disk."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar


@dataclass(frozen=True)
class Adapter:
    """A LoRA adapter in peft's standard format (loads with PeftModel.from_pretrained)."""

    path: Path
    epochs: list[dict] = field(default_factory=list)  # per epoch: loss, eval_accuracy, seconds
    eval_metrics: dict = field(default_factory=dict)
    trainable_params: int = 0
    total_params: int = 0
    train_examples: int = 0
    eval_examples: int = 0
    # set when trained int4-aware: the base's untrained linears were rounded to int4 blocks of this size, and
    # merge must round them the same way
    int4_block_size: int | None = None
    name: str = ""  # with the recipe's adapters: section, the task's name
    # fields of older edgetunes' records, read past (the adapters: tasks moved to the train-adapters stage)
    RETIRED: ClassVar[frozenset[str]] = frozenset({"tasks"})
    # trained against the base rounded to int4 in blocks of this size, as the unmerged path computes (None: float)
    int4_base: int | None = None


@dataclass(frozen=True)
class MergedModel:
    """A transformers model folder with the adapter merged into its weights."""

    path: Path
    merge_max_abs_diff: float = 0.0  # float64 merged vs adapter outputs: the merge gate
    eval_metrics: dict = field(default_factory=dict)
    size_bytes: int = 0
    fp32_max_abs_diff: float = 0.0  # the saved float32 merged model vs the float64 adapter model


@dataclass(frozen=True)
class Student(MergedModel):
    """A smaller model made from the merged one (fewer layers, pruned) and distilled from it; later stages
    export it in place of the merged model. The teacher's figures stay beside the student's."""

    kept_layers: list[int] = field(default_factory=list)
    teacher_layers: int = 0
    teacher_parameters: int = 0
    student_parameters: int = 0
    teacher_accuracy: float = 0.0
    epochs: list[dict] = field(default_factory=list)
    settings: dict = field(default_factory=dict)


@dataclass(frozen=True)
class OnnxModel:
    """One ONNX file (plus tokenizer/config files beside it)."""

    path: Path
    precision: str  # "fp32" | "int8"
    sha256: str = ""
    size_bytes: int = 0
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    notes: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Quantized:
    """The quantized models of one run, one per precision the recipe asks for."""

    models: list[OnnxModel]


@dataclass(frozen=True)
class Check:
    """One verification gate: a measured figure against its threshold."""

    stage: str
    name: str
    value: float
    threshold: float
    op: str  # "<=" or ">="
    passed: bool

    def describe(self) -> str:
        return f"{self.stage}: {self.name} = {self.value:.6g} (must be {self.op} {self.threshold:g})"


@dataclass(frozen=True)
class Verification:
    """Parity of every exported model against PyTorch on the held-out split."""

    passed: bool
    checks: list[Check]
    models: dict  # name -> metrics (accuracy, max_abs_diff, cosine, top1_agreement, ...)
    rows: int = 0
    details_path: Path | None = None
    # the instruction set the ONNX models ran on ("x86_64 AVX2 (no VNNI)"): int8 results depend on it
    isa: str = ""

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]


@dataclass(frozen=True)
class ShippedAdapter:
    """One task's `.onnx_adapter` file over the shared base."""

    name: str
    path: Path
    size_bytes: int = 0
    int4_base: int | None = None  # trained against the base rounded to int4 in blocks of this size (Adapter's)
    trained: Path | None = None  # its peft adapter folder (the PyTorch reference: base + it, merged)


@dataclass(frozen=True)
class TrainedAdapters:
    """The adapters trained for the recipe's adapters: list apart from the finetune stage (see stages/adapters.py),
    in the recipe's order."""

    adapters: list[Adapter]


@dataclass(frozen=True)
class AdapterSet:
    """The int4 base model (with a LoRA input at each adapted projection) and every task's adapter over it,
    each verified against its own PyTorch model (base + that adapter, merged in float)."""

    model: OnnxModel
    adapters: list[ShippedAdapter]
    verification: Verification


@dataclass(frozen=True)
class Benchmark:
    """Latency of every model at each sequence length, with ratios to the PyTorch baseline.

    kind "latency": one forward pass per row (p50/p90/p99 ms); kind "decode": a causal LM generating tokens
    (time to first token, prefill and decode tokens/s)."""

    kind: str  # "latency" | "decode"
    results: list[dict]  # one per (model, seq_len)
    models: dict  # name -> {load_seconds, peak_rss_mb, size_bytes, ...}
    settings: dict
    machine: dict
    baseline: str = "pytorch_fp32"
    noise: dict = field(default_factory=dict)  # edgetune/runner.py: load, other processes, spread, busy


@dataclass(frozen=True)
class Package:
    """What the Android demo app needs: model, manifest (labels, inputs, versions, hashes) and golden vectors."""

    path: Path
    manifest_path: Path
    model_sha256: str
    size_bytes: int
    files: list[str] = field(default_factory=list)
    golden_cases: int = 0


@dataclass(frozen=True)
class Report:
    json_path: Path
    markdown_path: Path
    plot_path: Path | None = None


Record = (
    Adapter
    | TrainedAdapters
    | MergedModel
    | Student
    | OnnxModel
    | Quantized
    | Verification
    | AdapterSet
    | Benchmark
    | Package
    | Report
)


def to_json(record: Any, root: Path) -> dict:
    """Serialize a record; Path fields become paths relative to `root`, nested records are serialized too."""
    return {f.name: _encode(getattr(record, f.name), root) for f in dataclasses.fields(record)}


def _encode(v: Any, root: Path) -> Any:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return to_json(v, root)
    if isinstance(v, Path):
        return Path(v).resolve().relative_to(root.resolve()).as_posix()
    if isinstance(v, dict):
        return {k: _encode(x, root) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_encode(x, root) for x in v]
    return v


def from_json(cls: type, data: dict, root: Path) -> Any:
    """Inverse of to_json, driven by the record's type hints (KeyError/TypeError on another layout)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    data = {k: v for k, v in data.items() if k not in getattr(cls, "RETIRED", ())}
    unknown = data.keys() - fields
    if unknown:
        raise TypeError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
    return cls(**{name: _decode(hints[name], value, root) for name, value in data.items()})


def _decode(hint: Any, v: Any, root: Path) -> Any:
    if v is None:
        return None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if v is False and type(None) in args and bool not in args:
            return None  # an older layout's flag, off, where an optional number is now (Adapter.int4_base)
        return _decode(next(a for a in args if a is not type(None)), v, root)
    if hint is int and isinstance(v, bool):  # that flag on: the number it stands for is not known
        raise TypeError(f"{v!r} where a number is expected")
    if hint is Path:
        return root / v
    if origin is list and args and dataclasses.is_dataclass(args[0]):
        return [_decode(args[0], x, root) for x in v]
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return from_json(hint, v, root)
    return v


def rebase(record: Any, old: Path, new: Path) -> Any:
    """Return `record` with every Path under `old` (nested records too) moved under `new` (after a stage dir
    is renamed); a path elsewhere (another stage's output the record names) stays."""
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        v = getattr(record, f.name)
        if isinstance(v, Path) and Path(v).is_relative_to(old):
            changes[f.name] = new / Path(v).relative_to(old)
        elif isinstance(v, list) and v and dataclasses.is_dataclass(v[0]):
            changes[f.name] = [rebase(x, old, new) for x in v]
        elif dataclasses.is_dataclass(v):
            changes[f.name] = rebase(v, old, new)
    return dataclasses.replace(record, **changes)
