"""LoRA fine-tuning with peft: a plain loop, resumable at epoch boundaries."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..artifacts import Adapter
from ..int4 import int4_forward, round_frozen_for_int4
from ..recipe import LoraConfig, TrainingConfig
from ..sources import ModelSource
from ..tasks.base import Task, TaskData


def finetune(
    base: ModelSource,
    data: TaskData,
    lora: LoraConfig,
    training: TrainingConfig,
    task: Task,
    out: Path,
    checkpoint_dir: Path,
    trust_remote_code: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = lambda s: None,
    int4_block: int | None = None,
) -> Adapter:
    """Train a LoRA adapter on `data.train`, evaluate each epoch on `data.eval`; save it to `out/adapter`.
    With `int4_block`, the untrained linears are rounded to int4 first and the last training.int4_aware_epochs
    epochs train against int4 rounding (see edgetune/int4.py)."""
    import torch
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model, set_peft_model_state_dict, get_peft_model_state_dict
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(training.seed)
    tokenizer = task.load_tokenizer(base.path, trust_remote_code)
    model = task.load_model(base.path, data, trust_remote_code)
    peft_cfg = PeftLoraConfig(
        task_type=task.peft_task_type,
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        modules_to_save=lora.modules_to_save,
    )
    model = get_peft_model(model, peft_cfg)
    if int4_block:
        rounded = round_frozen_for_int4(model, int4_block)
        log(f"finetune: int4-aware: {', '.join(rounded)} rounded to int4 (blocks of {int4_block}); the last "
            f"{training.int4_aware_epochs} epoch(s) train against int4 rounding")
    trainable, total = model.get_nb_trainable_parameters()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=training.learning_rate, weight_decay=training.weight_decay)
    steps_per_epoch = -(-len(data.train) // training.batch_size)
    total_steps = steps_per_epoch * training.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(total_steps * training.warmup_fraction), total_steps)

    bf16 = use_bf16(training.precision)
    log(f"finetune: {'bfloat16 autocast' if bf16 else 'float32'} training")
    history: list[dict] = []
    start_epoch = 0
    ckpt = checkpoint_dir / "state.pt"
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=True)  # tensors and plain containers only: no pickled code
        set_peft_model_state_dict(model, state["adapter"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        history, start_epoch = state["history"], state["epoch"]
        log(f"finetune: resuming after epoch {start_epoch}/{training.epochs} from {ckpt}")

    for epoch in range(start_epoch, training.epochs):
        model.train()
        t0, losses = time.perf_counter(), []
        batches = task.batches(data.train, tokenizer, training.batch_size, training.max_length,
                               shuffle_seed=training.seed * 100_003 + epoch)
        aware = bool(int4_block) and epoch >= training.epochs - training.int4_aware_epochs
        bar = tqdm(batches, total=steps_per_epoch, disable=None if progress else True, leave=False,  # None: on a tty
                   desc=f"finetune epoch {epoch + 1}/{training.epochs}{' (int4-aware)' if aware else ''}")
        with int4_forward(model, int4_block) if aware else contextlib.nullcontext():
            for batch in bar:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    loss = task.loss(model, batch)
                loss.backward()
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(loss.item())
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # 2.4x faster than fp32 here
            _, metrics = task.evaluate(model, tokenizer, data.eval, training.batch_size * 2, training.max_length)
        row = {"epoch": epoch + 1, "loss": float(np.mean(losses)), **{f"eval_{k}": v for k, v in metrics.items()},
               "seconds": round(time.perf_counter() - t0, 2)}
        history.append(row)
        log("finetune: " + "  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        _save_checkpoint(ckpt, {
            "adapter": get_peft_model_state_dict(model),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "history": history,
            "epoch": epoch + 1,
        })

    adapter_dir = out / "adapter"
    model.save_pretrained(adapter_dir)
    tokenizer.save_pretrained(adapter_dir)
    return Adapter(
        path=adapter_dir,
        epochs=history,
        eval_metrics={k[len("eval_"):]: v for k, v in history[-1].items() if k.startswith("eval_")},
        trainable_params=int(trainable),
        total_params=int(total),
        train_examples=len(data.train),
        eval_examples=len(data.eval),
        int4_block_size=int4_block,
    )


def use_bf16(precision: str) -> bool:
    """bf16 autocast for 'bf16', or for 'auto' when the CPU has native bf16 matrix units (AMX or AVX512-BF16);
    without them bf16 is emulated and slower than float32."""
    from ..runtime import NATIVE_BF16, cpu_flags

    if precision != "auto":
        return precision == "bf16"
    return bool(NATIVE_BF16 & cpu_flags())


def _save_checkpoint(path: Path, state: dict) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
