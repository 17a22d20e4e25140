"""Frozen records passed between stages. Paths are absolute in memory, relative to the run dir on disk."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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


@dataclass(frozen=True)
class MergedModel:
    """A transformers model folder with the adapter merged into its weights."""

    path: Path
    merge_max_abs_diff: float = 0.0  # float64 merged vs adapter outputs: the merge gate
    eval_metrics: dict = field(default_factory=dict)
    size_bytes: int = 0
    fp32_max_abs_diff: float = 0.0  # the saved float32 merged model vs the float64 adapter model


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

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]


@dataclass(frozen=True)
class Benchmark:
    """Latency of every model at each sequence length, with ratios to the PyTorch baseline."""

    results: list[dict]  # one per (model, seq_len)
    models: dict  # name -> {load_seconds, peak_rss_mb, size_bytes, ...}
    settings: dict
    machine: dict
    baseline: str = "pytorch_fp32"


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


def _path_fields(cls: type) -> set[str]:
    hints = typing.get_type_hints(cls)
    return {f.name for f in dataclasses.fields(cls) if Path in (hints[f.name], *typing.get_args(hints[f.name]))}


def to_json(record: Any, root: Path) -> dict:
    """Serialize a record; Path fields become paths relative to `root`."""
    out: dict = {}
    paths = _path_fields(type(record))
    for f in dataclasses.fields(record):
        v = getattr(record, f.name)
        if f.name in paths and v is not None:
            out[f.name] = Path(v).resolve().relative_to(root.resolve()).as_posix()
        elif isinstance(v, list) and v and isinstance(v[0], OnnxModel):
            out[f.name] = [to_json(m, root) for m in v]
        else:
            out[f.name] = _plain(v)
    return out


def _plain(v: Any) -> Any:
    if dataclasses.is_dataclass(v):
        return {f.name: _plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    return v


def from_json(cls: type, data: dict, root: Path) -> Any:
    """Inverse of to_json for the record types above."""
    kwargs = dict(data)
    for name in _path_fields(cls):
        if kwargs.get(name) is not None:
            kwargs[name] = root / kwargs[name]
    if cls is Verification:
        kwargs["checks"] = [Check(**c) for c in kwargs["checks"]]
    if cls is Quantized:
        kwargs["models"] = [from_json(OnnxModel, m, root) for m in kwargs["models"]]
    return cls(**kwargs)


def rebase(record: Any, old: Path, new: Path) -> Any:
    """Return `record` with Path fields under `old` moved under `new` (after a stage dir is renamed)."""
    if isinstance(record, Quantized):
        return Quantized([rebase(m, old, new) for m in record.models])
    changes = {}
    for name in _path_fields(type(record)):
        v = getattr(record, name)
        if v is not None:
            changes[name] = new / Path(v).relative_to(old)
    return dataclasses.replace(record, **changes)
