"""Distilling a student from its teacher: the losses (soft labels, hidden states), the teacher's cached
logits and the training loop, optionally int8-aware."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from edgetune.core.progress import StepProgress
from edgetune.engines.compress.layout import num_layers
from edgetune.engines.int8 import int8_forward
from edgetune.engines.training import Setup, Trainer


@dataclass(frozen=True)
class EpochStats:
    """One distillation epoch: mean losses over its steps, held-out accuracy after it (None without an
    evaluation function), its training wall time and the evaluation's."""

    epoch: int
    loss: float
    kd_loss: float
    ce_loss: float
    hidden_loss: float
    eval_accuracy: float | None
    seconds: float
    eval_seconds: float = 0.0


def kd_loss(student_logits: Any, teacher_logits: Any, temperature: float) -> Any:
    """KL(teacher || student) between the temperature-softened distributions, times T^2 (Hinton et al.), so its
    gradients keep their scale across temperatures; mean over the batch."""
    import torch.nn.functional as F

    t = float(temperature)
    log_s = F.log_softmax(student_logits.float() / t, dim=-1)
    log_t = F.log_softmax(teacher_logits.float() / t, dim=-1)
    return F.kl_div(log_s, log_t, log_target=True, reduction="batchmean") * (t * t)


def hidden_loss(student_hidden: Sequence[Any], teacher_hidden: Sequence[Any], kept: Sequence[int], mask: Any) -> Any:
    """Mean squared error between student layer i's output and teacher layer kept[i]'s, over real tokens
    (`mask`: the attention mask), averaged over the mapped layers. hidden_states[0] is the embeddings."""
    m = mask.unsqueeze(-1).float()
    tokens = m.sum() * student_hidden[1].shape[-1]
    total = 0.0
    for i, t in enumerate(kept):
        diff = (student_hidden[i + 1].float() - teacher_hidden[t + 1].float()) * m
        total = total + diff.pow(2).sum() / tokens
    return total / len(kept)


class _TeacherLogits:
    """The teacher's logits per example, computed once: keyed by the example's real tokens, so a batch of another
    epoch (other order, other padding) reuses them. Only valid for a teacher in eval mode (no dropout)."""

    def __init__(self, teacher: Any) -> None:
        self.teacher, self.cache = teacher, {}  # type: dict

    @staticmethod
    def _keys(batch: dict) -> list[bytes]:
        """One key per row: its unpadded input ids (and token type ids), as bytes."""
        ids, mask, types = batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids")
        keys = []
        for i in range(ids.shape[0]):
            real = slice(None) if mask is None else mask[i].bool()
            key = ids[i][real].numpy().tobytes()
            if types is not None:
                key += b"|" + types[i][real].numpy().tobytes()
            keys.append(key)
        return keys

    def __call__(self, batch: dict, inputs: dict) -> Any:
        import torch

        keys = self._keys(batch)
        missing = [i for i, k in enumerate(keys) if k not in self.cache]
        if missing:
            with torch.inference_mode():
                logits = self.teacher(**inputs).logits.float()
            for i in missing:
                self.cache[keys[i]] = logits[i].clone()
        return torch.stack([self.cache[k] for k in keys])


def distill(
    student: Any,
    teacher: Any,
    train_batches_fn: Callable[[int], Iterable[dict]],
    epochs: int = 8,
    lr: float = 1e-4,
    temperature: float = 2.0,
    alpha: float = 0.9,
    hidden_weight: float = 0.0,
    seed: int = 0,
    log: Callable[[str], None] = lambda s: None,
    *,
    kept_layers: Sequence[int] | None = None,
    eval_fn: Callable[[Any], float] | None = None,
    warmup_fraction: float = 0.1,
    weight_decay: float = 0.01,
    bf16: bool = False,
    cache_teacher: bool = True,
    progress_seconds: float = 60.0,
    int8_aware_epochs: int = 0,
    int8_reduced: bool = False,
    int8_per_channel: bool = True,
    device: str = "cpu",
) -> tuple[Any, list[EpochStats]]:
    """Train `student` (in place; also returned) to match `teacher` on the batches `train_batches_fn(epoch)` gives
    (dicts of tensors with `labels`, e.g. a task's `batches` with a per-epoch shuffle seed).

    Loss per batch: alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy(student, labels)
    + hidden_weight * MSE(student layer i, teacher layer kept_layers[i]) (kept_layers: default the student's
    `kept_layers` from make_student). AdamW, linear schedule with `warmup_fraction` warmup; the teacher stays in
    eval mode and its logits are computed once per example (`cache_teacher`, unless the hidden loss needs its
    hidden states every step). `bf16`: the student's forward pass in bfloat16 mixed precision (the CPU needs
    native bf16 units to gain). Optimizer, schedule, precision and `device` are the fine-tuning loop's
    (edgetune/engines/training.py), in this process alone. `eval_fn(student) -> accuracy` runs after every epoch. Every `progress_seconds` (0: every
    step) a line with step, rate and ETA goes to `log`. The last `int8_aware_epochs` epochs run the student as its
    dynamic-int8 ONNX file will compute (edgetune/engines/int8.py: weights int8 per channel, or per tensor, 7-bit with
    `int8_reduced`; inputs uint8 per text), so that what is distilled is the int8 model. Returns (student, history)."""
    import numpy as np
    import torch

    if epochs < 1:
        raise ValueError(f"epochs: {epochs} must be at least 1")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: {alpha} must be in [0, 1]")
    if temperature <= 0:
        raise ValueError(f"temperature: {temperature} must be positive")
    if not 0 <= int8_aware_epochs <= epochs:
        raise ValueError(f"int8_aware_epochs: {int8_aware_epochs} must be between 0 and the {epochs} epochs")
    kept = list(kept_layers if kept_layers is not None else getattr(student, "kept_layers", []) or [])
    if hidden_weight and len(kept) != num_layers(student):
        raise ValueError(
            f"hidden_weight: needs the teacher layer of each of the student's {num_layers(student)} layers "
            f"(kept_layers: {kept or 'not given'})"
        )
    torch.manual_seed(seed)
    teacher.eval()
    steps_per_epoch = sum(1 for _ in train_batches_fn(0))
    cached = _TeacherLogits(teacher) if cache_teacher and not hidden_weight else None
    parts: list[Any] = []  # the last batch's kd, ce and hidden losses, for the epoch's means

    def loss(model: Any, batch: dict) -> Any:
        labels = batch["labels"]
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        t_hidden = None
        if cached is not None:
            t_logits = cached(batch, inputs)
        else:
            with torch.inference_mode():
                t_out = teacher(**inputs, output_hidden_states=bool(hidden_weight))
            t_logits, t_hidden = t_out.logits.float(), t_out.hidden_states
        s_out = model(**inputs, output_hidden_states=bool(hidden_weight))
        kd = kd_loss(s_out.logits, t_logits, temperature)
        ce = torch.nn.functional.cross_entropy(s_out.logits.float(), labels)
        total = alpha * kd + (1.0 - alpha) * ce
        hid = torch.zeros(())
        if hidden_weight:
            hid = hidden_loss(s_out.hidden_states, t_hidden, kept, batch["attention_mask"])
            total = total + hidden_weight * hid
        parts[:] = [kd.item(), ce.item(), hid.item()]
        return total

    # the fine-tuning loop's machinery (edgetune/engines/training.py), in this process: distillation runs once
    trainer = Trainer(
        student,
        loss,
        lambda batch: int(batch["labels"].shape[0]),
        Setup(device=device, precision="bf16" if bf16 else "fp32"),
        lr=lr,
        weight_decay=weight_decay,
        warmup_fraction=warmup_fraction,
        total_steps=steps_per_epoch * epochs,
        seed=seed,
        distributed=False,
        log=lambda s: log(f"distill: {s}"),
    )
    teacher.to(trainer.acc.device)
    history: list[EpochStats] = []
    meter = StepProgress(log, "distill", epochs, steps_per_epoch, progress_seconds)
    for epoch in range(epochs):
        student.train()
        t0 = time.perf_counter()
        sums = np.zeros(4)
        steps = 0
        meter.epoch(epoch)
        aware = epoch >= epochs - int8_aware_epochs
        rounding = int8_forward(student, int8_reduced, int8_per_channel) if aware else contextlib.nullcontext()
        with rounding:  # the training steps only: the epoch's evaluation measures the float student
            for batch in train_batches_fn(epoch):
                result = trainer.step(batch)
                sums += [result.loss, *parts]
                steps += 1
                meter.step()
        means = sums / max(steps, 1)
        seconds, acc = time.perf_counter() - t0, None
        if eval_fn is not None:
            student.eval()
            acc = float(eval_fn(student))
        stats = EpochStats(
            epoch + 1,
            float(means[0]),
            float(means[1]),
            float(means[2]),
            float(means[3]),
            acc,
            round(seconds, 2),
            round(time.perf_counter() - t0 - seconds, 2),
        )
        history.append(stats)
        log(
            f"distill: epoch {stats.epoch}/{epochs} loss={stats.loss:.4f} kd={stats.kd_loss:.4f} "
            f"ce={stats.ce_loss:.4f}"
            + (f" hidden={stats.hidden_loss:.4f}" if hidden_weight else "")
            + (" (int8-aware)" if aware else "")
            + (f" eval_accuracy={acc:.4f}" if acc is not None else "")
            + f" ({stats.seconds:.1f} s + {stats.eval_seconds:.1f} s eval)"
        )
    student.eval()
    return student, history
