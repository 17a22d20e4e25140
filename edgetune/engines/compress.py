"""Smaller students: drop encoder layers (and optionally prune heads and FFN neurons) of a fine-tuned, merged
sequence classifier, then distill the student from that teacher.

    student = make_student(teacher, every=2)                  # 6 -> 3 layers (teacher layers 1, 3, 5)
    student, history = distill(student, teacher, batches_fn, epochs=8, lr=1e-4, temperature=2.0, alpha=0.9)

`build_student` does both with edgetune's task API (batches, held-out evaluation) and returns a `StudentReport`
with the teacher's figures beside the student's. Nothing here knows about stages or recipes: a stage wires it.

Supported layouts (found through the generic module tree, `model.base_model`):
  - `encoder.layer`: BERT, RoBERTa, XLM-RoBERTa, ELECTRA, CamemBERT, DeBERTa(-v2), MPNet and other BERT-style
    encoders; FFN pruning: `intermediate.dense` / `output.dense`;
  - `transformer.layer`: DistilBERT; FFN pruning: `ffn.lin1` / `ffn.lin2`.
Anything else raises ValueError.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgetune.core.progress import StepProgress
from edgetune.engines.int8 import int8_forward

# every=2 keeps the layer that ends each group of `every` (1, 3, 5 of 6), so the teacher's last layer, whose output
# the trained pooler and head read, stays. Measured on the default recipe's merged model (3 of 6 layers, same
# distillation settings): see STUDENT_NOTES below.
EVERY_KEEPS_LAST = True
# Layers of a `model.base_model`, tried in order: (path to the ModuleList, what the layout is called).
_LAYOUTS = (("encoder.layer", "BERT-style encoder.layer"), ("transformer.layer", "DistilBERT transformer.layer"))
# Per layer: (value projection, attention output projection), the first that exists (BERT-likes, DeBERTa-v2,
# MPNet, DistilBERT), and (FFN in -> intermediate, intermediate -> out, config field of the intermediate width).
_ATTENTION = (
    ("attention.self.value", "attention.output.dense"),
    ("attention.self.value_proj", "attention.output.dense"),
    ("attention.attn.v", "attention.attn.o"),
    ("attention.v_lin", "attention.out_lin"),
)
_FFN = (("intermediate.dense", "output.dense", "intermediate_size"), ("ffn.lin1", "ffn.lin2", "hidden_dim"))


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


# -- the layout --------------------------------------------------------------------------------------------------
def _get(module: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


def encoder_layers(model: Any) -> tuple[Any, str, str]:
    """(the module holding the layer list, the attribute name, the layout path) of a transformers encoder; raises
    ValueError for a layout this module does not handle."""
    import torch

    base = getattr(model, "base_model", None)
    config = getattr(model, "config", None)
    name = type(model).__name__
    if base is None or config is None:
        raise ValueError(f"{name}: not a transformers model (no base_model/config); a student needs one")
    for path, _ in _LAYOUTS:
        layers = _get(base, path)
        if isinstance(layers, torch.nn.ModuleList) and len(layers) > 0:
            holder_path, attr = path.rsplit(".", 1)
            return _get(base, holder_path), attr, path
    kinds = "; ".join(f"{what} (base_model.{path})" for path, what in _LAYOUTS)
    model_type = getattr(config, "model_type", "?")
    raise ValueError(
        f"{name} (model_type {model_type}): unsupported layout for a student: make_student handles {kinds}; "
        f"this model has neither (decoders, ALBERT's shared layers and other layouts are not supported)"
    )


def num_layers(model: Any) -> int:
    """How many encoder layers the model has (ValueError for an unsupported layout)."""
    holder, attr, _ = encoder_layers(model)
    return len(getattr(holder, attr))


def choose_layers(n: int, keep_layers: Sequence[int] | None = None, every: int | None = None) -> list[int]:
    """The teacher layers a student keeps: `keep_layers` as given (validated), or one in every `every` layers
    ending each group (every=2 of 6: 1, 3, 5; see EVERY_KEEPS_LAST), default every=2."""
    if keep_layers is not None and every is not None:
        raise ValueError("give keep_layers or every, not both")
    if keep_layers is not None:
        kept = [int(i) for i in keep_layers]
        if not kept:
            raise ValueError("keep_layers: empty; a student keeps at least one layer")
        bad = [i for i in kept if not 0 <= i < n]
        if bad:
            raise ValueError(f"keep_layers: {bad} out of range for a teacher with {n} layers (0..{n - 1})")
        if kept != sorted(set(kept)):
            raise ValueError(f"keep_layers: {kept} must be strictly increasing (each teacher layer once, in order)")
        return kept
    every = 2 if every is None else int(every)
    if not 1 <= every <= n:
        raise ValueError(f"every: {every} must be between 1 and the teacher's {n} layers")
    if EVERY_KEEPS_LAST:
        return [i for i in range(n) if (i + 1) % every == 0]
    return list(range(0, n, every))


# -- making a student --------------------------------------------------------------------------------------------
def make_student(
    teacher: Any,
    keep_layers: list[int] | None = None,
    every: int | None = None,
    prune_heads: float = 0.0,
    prune_ffn: float = 0.0,
) -> Any:
    """A deep copy of `teacher` that keeps only the chosen encoder layers (their weights unchanged), with
    config.num_hidden_layers updated so that save_pretrained/from_pretrained and ONNX export see the new depth.

    `keep_layers` (teacher indices, increasing) or `every` (default 2: see `choose_layers`). Optional structured
    pruning, the same count in every layer so that the config can describe it: `prune_heads`, the fraction of
    attention heads removed per layer (transformers' prune_heads, recorded in config.pruned_heads), and
    `prune_ffn`, the fraction of FFN neurons removed per layer (config.intermediate_size shrinks); both by a
    weight-magnitude importance (see `head_importance`, `ffn_importance`). The student gets `kept_layers` (a
    Python attribute, not saved) for `distill`'s hidden-state mapping. Raises ValueError for an unsupported
    layout or bad arguments; the teacher is not modified."""
    import torch

    for what, frac in (("prune_heads", prune_heads), ("prune_ffn", prune_ffn)):
        if not 0.0 <= frac < 1.0:
            raise ValueError(f"{what}: {frac} must be in [0, 1)")
    holder, attr, _ = encoder_layers(teacher)
    n = len(getattr(holder, attr))
    kept = choose_layers(n, keep_layers, every)
    student = copy.deepcopy(teacher)
    s_holder, _, _ = encoder_layers(student)
    old = getattr(s_holder, attr)
    setattr(s_holder, attr, torch.nn.ModuleList([old[i] for i in kept]))
    cfg = student.config
    cfg.num_hidden_layers = len(kept)  # DistilBERT maps it to n_layers
    _renumber(getattr(s_holder, attr), cfg, kept, n)
    if prune_heads:
        _prune_heads(student, prune_heads)
    if prune_ffn:
        _prune_ffn(student, prune_ffn)
    student.kept_layers = list(kept)
    return student


def _renumber(layers: Any, cfg: Any, kept: list[int], n: int) -> None:
    """Per-layer bookkeeping after dropping layers: the modules' own layer indices (attention caches use them),
    per-layer config lists, and heads pruned before (config.pruned_heads, by layer index)."""
    for new, layer in enumerate(layers):
        for module in layer.modules():
            for name in ("layer_idx", "layer_id"):
                if isinstance(getattr(module, name, None), int):
                    setattr(module, name, new)
    for name in ("layer_types",):
        value = getattr(cfg, name, None)
        if isinstance(value, (list, tuple)) and len(value) == n:
            setattr(cfg, name, [value[i] for i in kept])
    pruned = getattr(cfg, "pruned_heads", None) or {}
    if pruned:
        cfg.pruned_heads = {new: list(pruned[old]) for new, old in enumerate(kept) if old in pruned}


def head_importance(model: Any) -> list[Any]:
    """Per layer, a tensor with one score per attention head: the norm of the head's value projection times the
    norm of its columns in the output projection (what the head can add to the residual stream)."""
    holder, attr, _ = encoder_layers(model)
    cfg = model.config
    heads = getattr(cfg, "num_attention_heads", None) or cfg.n_heads
    size = (getattr(cfg, "hidden_size", None) or cfg.dim) // heads
    out = []
    for layer in getattr(holder, attr):
        value, proj = (m.weight.detach() for m in _linears(layer, _ATTENTION, "prune_heads"))
        v = value.reshape(-1, size * value.shape[1]).norm(dim=1)  # rows of head h: h*size .. (h+1)*size
        o = proj.reshape(proj.shape[0], -1, size).transpose(0, 1).reshape(v.shape[0], -1).norm(dim=1)
        out.append(v * o)
    return out


def _linears(layer: Any, candidates: Sequence[Sequence[str]], what: str) -> list[Any]:
    """The linear layers of the first candidate whose modules all exist in `layer`; ValueError if none does."""
    import torch

    for names in candidates:
        mods = [_get(layer, n) for n in names]
        if all(isinstance(m, torch.nn.Linear) for m in mods):
            return mods
    raise ValueError(f"{what}: {type(layer).__name__} has none of the known projections ({candidates})")


def _prune_heads(model: Any, fraction: float) -> None:
    """Remove the same number of least important heads in every layer (transformers' prune_heads)."""
    cfg = model.config
    heads = getattr(cfg, "num_attention_heads", None) or cfg.n_heads
    if getattr(cfg, "pruned_heads", None):
        raise ValueError("prune_heads: the teacher already has pruned heads; prune it once")
    drop = int(math.floor(heads * fraction))
    if drop == 0:
        return
    if drop >= heads:
        raise ValueError(f"prune_heads: {fraction} would remove all {heads} heads")
    plan = {i: sorted(score.argsort()[:drop].tolist()) for i, score in enumerate(head_importance(model))}
    try:
        model.prune_heads(plan)
    except NotImplementedError as e:
        raise ValueError(f"prune_heads: {type(model).__name__} cannot prune heads ({e})") from None


def ffn_importance(model: Any) -> list[Any]:
    """Per layer, one score per FFN neuron: the norm of its input row times the norm of its output column."""
    holder, attr, _ = encoder_layers(model)
    out = []
    for layer in getattr(holder, attr):
        lin1, lin2 = _linears(layer, [f[:2] for f in _FFN], "prune_ffn")
        out.append(lin1.weight.detach().norm(dim=1) * lin2.weight.detach().norm(dim=0))
    return out


def _ffn_paths(model: Any) -> tuple[str, str, str]:
    """(in linear, out linear, config width field) of this model's FFN layers; ValueError if unknown."""
    holder, attr, _ = encoder_layers(model)
    layer = getattr(holder, attr)[0]
    _linears(layer, [f[:2] for f in _FFN], "prune_ffn")
    for names in _FFN:
        if _get(layer, names[0]) is not None and hasattr(model.config, names[2]):
            return names
    raise ValueError(f"prune_ffn: the config of {type(model).__name__} has no intermediate width field")


def _prune_ffn(model: Any, fraction: float) -> None:
    """Keep the same number of most important FFN neurons in every layer; the config's width follows."""
    from transformers.pytorch_utils import prune_linear_layer

    holder, attr, _ = encoder_layers(model)
    w_in, w_out, field_name = _ffn_paths(model)
    width = getattr(model.config, field_name)
    keep = width - int(math.floor(width * fraction))
    if keep == width:
        return
    for layer, score in zip(getattr(holder, attr), ffn_importance(model)):
        index = score.argsort(descending=True)[:keep].sort().values
        for dotted, dim in ((w_in, 0), (w_out, 1)):
            parent_path, name = dotted.rsplit(".", 1)
            parent = _get(layer, parent_path)
            setattr(parent, name, prune_linear_layer(getattr(parent, name), index, dim=dim))
    setattr(model.config, field_name, keep)


def count_parameters(model: Any) -> int:
    """All parameters of a model (shared ones once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


# -- distillation ------------------------------------------------------------------------------------------------
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
) -> tuple[Any, list[EpochStats]]:
    """Train `student` (in place; also returned) to match `teacher` on the batches `train_batches_fn(epoch)` gives
    (dicts of tensors with `labels`, e.g. a task's `batches` with a per-epoch shuffle seed).

    Loss per batch: alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy(student, labels)
    + hidden_weight * MSE(student layer i, teacher layer kept_layers[i]) (kept_layers: default the student's
    `kept_layers` from make_student). AdamW, linear schedule with `warmup_fraction` warmup; the teacher stays in
    eval mode and its logits are computed once per example (`cache_teacher`, unless the hidden loss needs its
    hidden states every step). `bf16`: autocast the student's forward pass to bfloat16 (the CPU needs native
    bf16 units to gain). `eval_fn(student) -> accuracy` runs after every epoch. Every `progress_seconds` (0: every
    step) a line with step, rate and ETA goes to `log`. The last `int8_aware_epochs` epochs run the student as its
    dynamic-int8 ONNX file will compute (edgetune/int8.py: weights int8 per channel, or per tensor, 7-bit with
    `int8_reduced`; inputs uint8 per text), so that what is distilled is the int8 model. Returns (student, history)."""
    import numpy as np
    import torch
    from transformers import get_linear_schedule_with_warmup

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
    total = steps_per_epoch * epochs
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(total * warmup_fraction), total)
    cached = _TeacherLogits(teacher) if cache_teacher and not hidden_weight else None
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
                labels = batch["labels"]
                inputs = {k: v for k, v in batch.items() if k != "labels"}
                t_hidden = None
                if cached is not None:
                    t_logits = cached(batch, inputs)
                else:
                    with torch.inference_mode():
                        t_out = teacher(**inputs, output_hidden_states=bool(hidden_weight))
                    t_logits, t_hidden = t_out.logits.float(), t_out.hidden_states
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    s_out = student(**inputs, output_hidden_states=bool(hidden_weight))
                kd = kd_loss(s_out.logits, t_logits, temperature)
                ce = torch.nn.functional.cross_entropy(s_out.logits.float(), labels)
                loss = alpha * kd + (1.0 - alpha) * ce
                hid = torch.zeros(())
                if hidden_weight:
                    hid = hidden_loss(s_out.hidden_states, t_hidden, kept, batch["attention_mask"])
                    loss = loss + hidden_weight * hid
                loss.backward()
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                sums += [loss.item(), kd.item(), ce.item(), hid.item()]
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


# -- more text for the teacher to label ---------------------------------------------------------------------------
def augment_examples(
    examples: list[dict],
    copies: int,
    seed: int = 0,
    mask_token: str | None = None,
    p_drop: float = 0.1,
    p_mask: float = 0.1,
    p_swap: float = 0.1,
) -> list[dict]:
    """`examples` followed by `copies` perturbed copies of each: every word is dropped with p_drop, replaced by
    `mask_token` (or, without one, by a random word of the training texts) with p_mask, and swapped with its
    right neighbour with p_swap. The copies keep their gold label; in distillation mostly the teacher's
    soft labels on them teach the student (small data: the student sees more of the teacher's function than
    the training texts alone show). Deterministic for a seed; a copy never comes out empty."""
    import random

    if copies <= 0:
        return list(examples)
    rng = random.Random(seed)
    vocab = sorted({w for e in examples for w in e["text"].split()})
    out = list(examples)
    for c in range(copies):
        for e in examples:
            words = e["text"].split()
            new = []
            for w in words:
                r = rng.random()
                if r < p_drop:
                    continue
                if r < p_drop + p_mask:
                    new.append(mask_token if mask_token else rng.choice(vocab))
                else:
                    new.append(w)
            for i in range(len(new) - 1):
                if rng.random() < p_swap:
                    new[i], new[i + 1] = new[i + 1], new[i]
            text = " ".join(new) if new else rng.choice(words)
            out.append({**e, "text": text, "augmented": c + 1})
    return out


# -- the whole step, with a task ---------------------------------------------------------------------------------
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
