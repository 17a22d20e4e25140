"""The whole compression step with edgetune's task API: load the teacher, make and distill a student, score
both, save the student, and report it (build_student, StudentReport)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgetune.engines.compress.augment import augment_examples
from edgetune.engines.compress.distillation import EpochStats, distill
from edgetune.engines.compress.layout import num_layers
from edgetune.engines.compress.prune import _ffn_paths
from edgetune.engines.compress.student import count_parameters, make_student


@dataclass(frozen=True)
class StudentReport:
    """What compression made: the teacher layers the student kept, both sizes, the distillation history and
    both models' held-out accuracy (teacher first: the report keeps it beside the student's)."""

    kept_layers: tuple[int, ...]
    teacher_layers: int
    teacher_parameters: int
    student_parameters: int
    history: tuple[EpochStats, ...]
    teacher_accuracy: float
    student_accuracy: float
    seconds: float
    pruned_heads_per_layer: int = 0
    ffn_size: int | None = None  # the student's intermediate width when pruned, else None
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def accuracy_drop(self) -> float:
        """Teacher minus student held-out accuracy (positive: the student is worse)."""
        return self.teacher_accuracy - self.student_accuracy


def build_student(
    teacher_path: Path,
    task: Any,
    train: list[dict],
    evals: list[dict],
    labels: list[str],
    out: Path | None = None,
    *,
    keep_layers: list[int] | None = None,
    every: int | None = None,
    prune_heads: float = 0.0,
    prune_ffn: float = 0.0,
    epochs: int = 8,
    lr: float = 1e-4,
    temperature: float = 2.0,
    alpha: float = 0.9,
    hidden_weight: float = 0.0,
    batch_size: int = 16,
    max_length: int = 64,
    seed: int = 0,
    bf16: bool = False,
    augment: int = 0,
    eval_every_epoch: bool = True,
    log: Callable[[str], None] = lambda s: None,
    progress_seconds: float = 60.0,
    int8_aware_epochs: int = 0,
    int8_reduced: bool = False,
    int8_per_channel: bool = True,
    device: str = "cpu",
) -> StudentReport:
    """Load the merged teacher at `teacher_path` with `task` (a classification task: load_model, load_tokenizer,
    batches, evaluate), make a student, distill it on `train`, score both on `evals` and save the student with
    the teacher's tokenizer to `out` (when given). Held-out accuracy is measured in float32."""
    t0 = time.perf_counter()
    teacher = task.load_model(teacher_path, labels)
    tokenizer = task.load_tokenizer(teacher_path)
    student = make_student(teacher, keep_layers, every, prune_heads, prune_ffn)
    kept = list(student.kept_layers)
    n_teacher = num_layers(teacher)
    log(
        f"compress: student keeps teacher layers {kept} of {n_teacher}"
        + (f", prunes {prune_heads:.0%} of heads" if prune_heads else "")
        + (f", {prune_ffn:.0%} of FFN neurons" if prune_ffn else "")
    )

    def accuracy(model: Any) -> float:
        return float(task.evaluate(model, tokenizer, evals, batch_size * 2, max_length)[1]["accuracy"])

    teacher_acc = accuracy(teacher)
    if augment:
        train = augment_examples(train, augment, seed, getattr(tokenizer, "mask_token", None))
        log(f"compress: {len(train)} training texts for distillation ({augment} perturbed copies of each)")
    student, history = distill(
        student,
        teacher,
        lambda epoch: task.batches(train, tokenizer, batch_size, max_length, shuffle_seed=seed * 100_003 + epoch),
        epochs=epochs,
        lr=lr,
        temperature=temperature,
        alpha=alpha,
        hidden_weight=hidden_weight,
        seed=seed,
        log=log,
        progress_seconds=progress_seconds,
        eval_fn=accuracy if eval_every_epoch else None,
        bf16=bf16,
        int8_aware_epochs=int8_aware_epochs,
        int8_reduced=int8_reduced,
        int8_per_channel=int8_per_channel,
        device=device,
    )
    student_acc = history[-1].eval_accuracy if eval_every_epoch else None
    if student_acc is None:
        student_acc = accuracy(student)
    if out is not None:
        out = Path(out)
        student.save_pretrained(out)
        tokenizer.save_pretrained(out)
    cfg = student.config
    heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_heads", 0)
    return StudentReport(
        kept_layers=tuple(kept),
        teacher_layers=n_teacher,
        teacher_parameters=count_parameters(teacher),
        student_parameters=count_parameters(student),
        history=tuple(history),
        teacher_accuracy=teacher_acc,
        student_accuracy=float(student_acc),
        seconds=round(time.perf_counter() - t0, 2),
        pruned_heads_per_layer=int(math.floor(heads * prune_heads)) if prune_heads else 0,
        ffn_size=getattr(cfg, _ffn_paths(student)[2]) if prune_ffn else None,
        settings={
            "epochs": epochs,
            "lr": lr,
            "temperature": temperature,
            "alpha": alpha,
            "hidden_weight": hidden_weight,
            "batch_size": batch_size,
            "max_length": max_length,
            "seed": seed,
            "bf16": bf16,
            "augment": augment,
            "int8_aware_epochs": int8_aware_epochs,
            "int8_reduced": int8_reduced,
            "int8_per_channel": int8_per_channel,
        },
    )
