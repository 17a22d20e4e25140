"""edgetune's fine-tuning loop with peft (LoRA, DoRA, AdaLoRA or IA3) on accelerate (engines/training.py):
resumable from its last checkpoint (every epoch, and every training.checkpoint_minutes within one). The finetune
stage trains the recipe's adapter with it, the train-adapters stage each task of the recipe's adapters: list."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import os
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgetune.core.artifacts import Adapter
from edgetune.core.families import AdapterPlan
from edgetune.core.progress import StepProgress, on_terminal
from edgetune.core.recipe import LoraConfig, TrainingConfig
from edgetune.core.rundir import config_key
from edgetune.core.sources import ModelSource
from edgetune.engines.int4 import int4_forward, round_base_for_int4, round_frozen_for_int4
from edgetune.engines.training import Setup, StepResult, Team, Trainer, enable_gradient_checkpointing

# how training reports, checkpoints, and where it runs, not what it computes (batch_size is the effective batch
# whatever the processes and micro-batches): left out of the keys, so changing them neither reruns a finished
# stage nor orphans a checkpoint
NOT_IN_KEY = {
    "progress_seconds",
    "checkpoint_minutes",
    "device",
    "gradient_accumulation",
    "gradient_checkpointing",
    "strategy",
}

CHECKPOINT_FORMAT = 2  # 2: optimizer, schedule and every rank's random state under "trainer"


def training_key(training: TrainingConfig) -> dict:
    """The training settings that change the trained adapter."""
    return training.model_dump(exclude=NOT_IN_KEY)


def run_key(lora: LoraConfig, training: TrainingConfig, fingerprint: str, *more: Any) -> str:
    """The key of one training run (its checkpoint folder's name, an adapter kept while it is unchanged): the
    checkpoint format, the adapter and training settings, the data's fingerprint, and `more`."""
    return config_key(CHECKPOINT_FORMAT, lora.model_dump(), training_key(training), fingerprint, *more)[:16]


class Examples(Protocol):
    """What training reads of a task's data (edgetune.build.TaskData has it)."""

    train: list[dict]
    eval: list[dict]
    labels: list[str]
    chat_template: str | None


class Trainable(Protocol):
    """What training calls on a task (edgetune.build.Task has it)."""

    peft_task_type: str

    def load_model(
        self, path: Path, labels: list[str] | None = None, trust_remote_code: bool = False, dtype: str = "float32"
    ) -> Any: ...

    def load_tokenizer(self, path: Path, trust_remote_code: bool = False, chat_template: str | None = None) -> Any: ...

    def batches(
        self, examples: list[dict], tokenizer: Any, batch_size: int, max_length: int, shuffle_seed: int | None = None
    ) -> Iterator[dict[str, Any]]: ...

    def loss(self, model: Any, batch: dict[str, Any]) -> Any: ...

    def loss_items(self, batch: dict[str, Any]) -> int: ...

    def evaluate(
        self, model: Any, tokenizer: Any, examples: list[dict], batch_size: int, max_length: int, generate: int = 0
    ) -> tuple[np.ndarray, dict]: ...


def finetune(
    base: ModelSource,
    data: Examples,
    lora: LoraConfig,
    plan: AdapterPlan,
    training: TrainingConfig,
    task: Trainable,
    out: Path,
    checkpoint_dir: Path,
    trust_remote_code: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = lambda s: None,
    int4_block: int | None = None,
    on_step: Callable[[Trainer, StepResult], None] | None = None,
    int4_base: int | None = None,
    label: str = "finetune",
) -> Adapter:
    """Train the recipe's adapter (`plan`: method and modules) on `data.train`, evaluate each epoch on
    `data.eval`; save it to `out/adapter`. Runs on accelerate (edgetune/engines/training.py): in one process, or
    on every rank of a launch, where rank 0 alone evaluates, logs and writes.
    With `int4_block`, the untrained linears are rounded to int4 first and the last training.int4_aware_epochs
    epochs train against int4 rounding (see edgetune/engines/int4.py).
    `checkpoint_dir/state.pt` is written after every epoch and every training.checkpoint_minutes within one; a
    run that finds it continues from there (the epoch's batch order rebuilt, its finished batches skipped, every
    rank's random state restored) and ends with the weights an uninterrupted run gets. Without a progress bar
    (`progress` off or stderr not a terminal), a line with step, rate and ETA is logged every
    training.progress_seconds. `on_step(trainer, result)` runs after every optimizer step (tests).
    With `int4_base` (a block size; not with `int4_block`), every base weight is rounded to int4 first and the
    adapter trains in float on top of it: what an adapter kept apart from an int4 base computes on the device.
    `label` starts every log line and the bar (the stage's name, and an adapter's)."""
    import torch
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
    from tqdm.auto import tqdm

    torch.manual_seed(training.seed)
    setup = Setup.of(training)
    _, bf16 = setup.resolved()
    tokenizer = task.load_tokenizer(base.path, trust_remote_code, data.chat_template)
    # bf16 training keeps a bf16 checkpoint in bf16 (half the memory); float32 training computes in float32
    model = task.load_model(base.path, data.labels, trust_remote_code, dtype="auto" if bf16 else "float32")
    steps_per_epoch = -(-len(data.train) // training.batch_size)
    total_steps = steps_per_epoch * training.epochs
    # modules the base checkpoint lacks (set by Task.load_model) are trained in full and saved with the adapter
    new = [m for m in getattr(model, "new_modules", []) if m not in (plan.modules_to_save or [])]
    if new:
        plan = dataclasses.replace(plan, modules_to_save=[*(plan.modules_to_save or []), *new])
    if training.gradient_checkpointing and not enable_gradient_checkpointing(model):
        log(f"{label}: {type(model).__name__} does not support gradient checkpointing; training without it")
    with warnings.catch_warnings():
        # peft 0.21 reads `is_gradient_checkpointing`, which transformers 5 renamed (a FutureWarning per build)
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
        model = get_peft_model(model, peft_config(plan, lora, task.peft_task_type, total_steps))
    if int4_block:
        rounded = round_frozen_for_int4(model, int4_block)
        log(
            f"{label}: int4-aware: {', '.join(rounded)} rounded to int4 (blocks of {int4_block}); the last "
            f"{training.int4_aware_epochs} epoch(s) train against int4 rounding"
        )
    if int4_base:
        rounded = round_base_for_int4(model, int4_base)
        log(
            f"{label}: {len(rounded)} base linears rounded to int4 (blocks of {int4_base}), as the shared base holds them"
        )
    trainable, total = model.get_nb_trainable_parameters()
    # AdaLoRA moves rank budget between layers from gradient-based importance, updated after every step.
    allocator = model.base_model if plan.method == "adalora" else None
    ckpt = checkpoint_dir / "state.pt"
    # rank 0 reads the checkpoint and hands it to the others (one machine's disk holds it); the adapter goes into
    # the model before the Trainer wraps it (FSDP shards it there)
    team = Team(training.device)  # the launch's process group, as the Trainer sets it up
    state = team.broadcast(torch.load(ckpt, weights_only=True) if team.is_main and ckpt.exists() else None)
    if state is not None:
        set_peft_model_state_dict(model, state["adapter"])
        if allocator is not None:
            _set_allocator_state(model, state["allocator"])
    trainer = Trainer(
        model,
        task.loss,
        task.loss_items,
        setup,
        lr=training.learning_rate,
        weight_decay=training.weight_decay,
        warmup_fraction=training.warmup_fraction,
        total_steps=total_steps,
        seed=training.seed,
        log=lambda s: log(f"{label}: {s}"),
    )
    main = trainer.is_main
    if not main:
        progress, log = False, lambda s: None
    history: list[dict] = []
    start_epoch, start_step, losses, elapsed = 0, 0, [], 0.0
    if state is not None:
        trainer.load_state(state["trainer"], log=lambda s: log(f"{label}: {s}"))
        history, start_epoch = state["history"], state["epoch"]
        # a checkpoint from within an epoch: `step` batches of epoch `epoch` (0-based) done, their losses
        start_step, losses, elapsed = state.get("step", 0), state.get("losses", []), state.get("seconds", 0.0)
        if start_step:
            log(
                f"{label}: resuming at epoch {start_epoch + 1}/{training.epochs} step {start_step}/"
                f"{steps_per_epoch} from {ckpt}"
            )
        else:
            log(f"{label}: resuming after epoch {start_epoch}/{training.epochs} from {ckpt}")

    def save(epoch: int, step: int = 0, seconds: float = 0.0) -> None:
        """Checkpoint: `epoch` epochs finished, and `step` batches of the next one (whose losses are `losses`).
        Every rank takes part (random states are gathered); rank 0 writes."""
        full_state = trainer.model_state()
        trainer_state = trainer.state()
        if not main:
            return
        adapter = get_peft_model_state_dict(model, state_dict=full_state)
        _save_checkpoint(
            ckpt,
            {
                "adapter": adapter,
                "trainer": trainer_state,
                "history": history,
                "epoch": epoch,
                **({"step": step, "losses": list(losses), "seconds": seconds} if step else {}),
                **({"allocator": _allocator_state(model)} if allocator is not None else {}),
            },
        )

    bar_shown = progress and on_terminal()
    meter = StepProgress(log, label, training.epochs, steps_per_epoch, training.progress_seconds, enabled=not bar_shown)
    every = training.checkpoint_minutes * 60
    for epoch in range(start_epoch, training.epochs):
        model.train()
        done = start_step if epoch == start_epoch else 0
        if not done:
            losses, elapsed = [], 0.0
        t0 = time.perf_counter() - elapsed
        batches = task.batches(
            data.train,
            tokenizer,
            training.batch_size,
            training.max_length,
            shuffle_seed=training.seed * 100_003 + epoch,
        )
        aware = bool(int4_block) and epoch >= training.epochs - training.int4_aware_epochs
        bar = tqdm(
            itertools.islice(batches, done, None),  # the same order as before an interruption, minus what ran
            total=steps_per_epoch,
            initial=done,
            disable=not bar_shown,
            leave=False,
            desc=f"{label} epoch {epoch + 1}/{training.epochs}{' (int4-aware)' if aware else ''}",
        )
        meter.epoch(epoch, done)
        saved = time.monotonic()
        with int4_forward(model, int4_block) if aware else contextlib.nullcontext():
            for step, batch in enumerate(bar, start=epoch * steps_per_epoch + done):
                allocate = None if allocator is None else functools.partial(allocator.update_and_allocate, step)
                result = trainer.step(batch, after_update=allocate)
                losses.append(result.loss)
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
                meter.step()
                if on_step is not None:
                    on_step(trainer, result)
                # every rank decides alike: rank 0's clock
                if every and trainer.broadcast(time.monotonic() - saved >= every):
                    save(epoch, step + 1 - epoch * steps_per_epoch, time.perf_counter() - t0)
                    saved = time.monotonic()
        metrics: dict = {}
        if main or trainer.evaluates_everywhere:
            with trainer.evaluating():  # bf16: 2.4x faster than fp32 here
                _, metrics = task.evaluate(model, tokenizer, data.eval, training.batch_size * 2, training.max_length)
        row = {
            "epoch": epoch + 1,
            "loss": float(np.mean(losses)),
            **{f"eval_{k}": v for k, v in metrics.items()},
            "seconds": round(time.perf_counter() - t0, 2),
        }
        history.append(row)
        log(f"{label}: " + "  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        save(epoch + 1)

    full_state = trainer.model_state()  # peft picks the adapter's weights out of it
    trainer.wait()
    adapter_dir = out / "adapter"
    if main:
        model.save_pretrained(adapter_dir, state_dict=full_state)
        tokenizer.save_pretrained(adapter_dir)
    return Adapter(
        path=adapter_dir,
        epochs=history,
        eval_metrics={k[len("eval_") :]: v for k, v in history[-1].items() if k.startswith("eval_")},
        trainable_params=int(trainable),
        total_params=int(total),
        train_examples=len(data.train),
        eval_examples=len(data.eval),
        int4_block_size=int4_block,
        int4_base=int4_base or None,
    )


def peft_config(plan: AdapterPlan, lora: LoraConfig, task_type: str, total_steps: int) -> Any:
    """peft's config for the recipe's method, on the modules `plan` resolved for this model."""
    from peft import AdaLoraConfig, IA3Config
    from peft import LoraConfig as PeftLoraConfig

    common = {"task_type": task_type, "target_modules": plan.target_modules, "modules_to_save": plan.modules_to_save}
    if plan.method == "ia3":
        return IA3Config(feedforward_modules=plan.feedforward_modules or [], **common)
    if plan.method == "adalora":
        # r is the average rank AdaLoRA ends with; every layer starts at 1.5x r (peft's 12 -> 8 ratio). The first
        # 10% of steps train at the initial rank, the last 20% at the final rank pattern.
        tinit, tfinal = total_steps // 10, total_steps // 5
        return AdaLoraConfig(
            init_r=lora.r + (lora.r + 1) // 2,
            target_r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            total_step=total_steps,
            tinit=tinit,
            tfinal=tfinal,
            **common,
        )
    return PeftLoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, use_dora=plan.method == "dora", **common
    )


def _allocator_state(model: Any) -> dict:
    """AdaLoRA's importance estimates (tensors by parameter name), so a resumed run allocates ranks as an
    uninterrupted one would."""
    ra = model.base_model.rankallocator
    return {"ipt": dict(ra.ipt), "exp_avg_ipt": dict(ra.exp_avg_ipt), "exp_avg_unc": dict(ra.exp_avg_unc)}


def _set_allocator_state(model: Any, state: dict) -> None:
    ra = model.base_model.rankallocator
    ra.ipt, ra.exp_avg_ipt, ra.exp_avg_unc = dict(state["ipt"]), dict(state["exp_avg_ipt"]), dict(state["exp_avg_unc"])


def _save_checkpoint(path: Path, state: dict) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())  # the rename below never puts a file whose bytes are not on disk under the name
    os.replace(tmp, path)
