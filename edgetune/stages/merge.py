"""Merge the adapter (LoRA, DoRA, AdaLoRA, IA3) into the base weights and prove the merged model computes the
same outputs."""

from __future__ import annotations

import gc
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from copy import deepcopy
from pathlib import Path
from typing import Any

import numpy as np

from edgetune.build import BaseStage, BuildContext, Key, Task, TaskData
from edgetune.core.artifacts import Adapter, MergedModel
from edgetune.core.errors import CheckFailed, EdgetuneError
from edgetune.core.sources import ModelSource


class Merge(BaseStage):
    """Merge the adapter into the base weights and prove, in float64, that nothing changed."""

    name = "merge"
    needs = ("finetune",)
    record = MergedModel

    def key(self, ctx: BuildContext) -> Key:
        v, tr = ctx.recipe.verify, ctx.recipe.training
        return Key([v.merge_max_abs_diff, v.merge_check_rows, tr.max_length], [ctx.data.fingerprint])

    def run(self, ctx: BuildContext, inputs: dict, out: Path) -> MergedModel:
        r = ctx.recipe
        return merge(
            inputs["finetune"],
            ctx.base(),
            ctx.data,
            ctx.task,
            out,
            r.verify.merge_max_abs_diff,
            r.training.batch_size * 2,
            r.training.max_length,
            r.model.trust_remote_code,
            r.verify.merge_check_rows,
        )


def merge(
    adapter: Adapter,
    base: ModelSource,
    data: TaskData,
    task: Task,
    out: Path,
    max_abs_diff: float = 1e-5,
    batch_size: int = 32,
    max_length: int = 128,
    trust_remote_code: bool = False,
    check_rows: int = 0,
) -> MergedModel:
    """Merge the adapter into the base weights, proving each adapted layer equal before and after.

    The base loads in its checkpoint's dtype and runs in float32 with the adapter on the first `check_rows` eval
    rows (0: all), each adapted layer's inputs sampled on the way. Then layer by layer, in float64 (so that the
    check measures the merge, not float32 summation order): a copy of the layer with its adapter and the same
    copy merged (peft's own `merge`) take those inputs; the largest output difference over all layers is the
    gate (> max_abs_diff raises CheckFailed). The merged weights, rounded to float32 once, replace the base
    layer's, and `unload` leaves the plain model, which is evaluated on all eval rows and saved in shards. Only one
    float32 copy of the model is held at any time."""
    import torch
    from peft import PeftModel

    tokenizer = task.load_tokenizer(adapter.path, trust_remote_code)
    model = task.load_model(base.path, data.labels, trust_remote_code, dtype="auto")
    try:
        with warnings.catch_warnings():
            # peft 0.21 checks an AdaLoRA rank_pattern (keys of lora_E parameters) as if it named modules and warns
            # that it matched none; AdaLoRA then applies it itself (resize_modules_by_rank_pattern).
            warnings.filterwarnings("ignore", "The following rank_pattern keys did not match", RuntimeWarning)
            # peft 0.21 reads `is_gradient_checkpointing`, which transformers 5 renamed
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
            peft_model = PeftModel.from_pretrained(model, adapter.path)
    except Exception as e:  # a mismatched adapter surfaces as shape or key errors deep in peft
        raise EdgetuneError(
            f"merge: cannot load adapter {adapter.path} onto {base.spec}: {str(e).splitlines()[0]}"
        ) from None
    del model
    peft_model.eval().float()  # module by module: one float32 copy, whatever the checkpoint stored
    if adapter.int4_block_size:  # trained int4-aware: on a base whose untrained linears were rounded to int4
        from edgetune.engines.int4 import round_frozen_for_int4

        round_frozen_for_int4(peft_model, adapter.int4_block_size)
    _unwrap_trained_in_full(peft_model)  # modules trained in full (modules_to_save) take their wrappers' place
    rows = data.eval[:check_rows] if check_rows else data.eval
    layers = _tuner_layers(peft_model)
    with _sampled_inputs(layers) as inputs:
        before, _ = task.evaluate(peft_model, tokenizer, rows, batch_size, max_length)
    diff, worst = 0.0, ""
    with torch.no_grad():
        for name, layer in layers.items():
            d = _merge_layer(layer, inputs.pop(name, None))
            if d is not None and not d <= diff:  # NaN counts as a failure too
                diff, worst = d, name
    if not diff <= max_abs_diff:
        raise CheckFailed(
            f"merge: max |merged - adapter| = {diff:.3g} > {max_abs_diff:g} on {len(rows)} eval rows "
            f"(layer {worst}, float64)"
        )
    merged = peft_model.unload().eval()  # the base layers already hold the merged weights
    del peft_model, layers
    after, metrics = task.evaluate(merged, tokenizer, data.eval, batch_size, max_length)
    folder = out / "model"
    # shards: serialization copies one shard at a time, not the whole model
    merged.save_pretrained(folder, safe_serialization=True, max_shard_size=SHARD)
    tokenizer.save_pretrained(folder)
    del merged
    gc.collect()
    size = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    return MergedModel(
        path=folder,
        merge_max_abs_diff=diff,
        eval_metrics=metrics,
        size_bytes=size,
        fp32_max_abs_diff=float(np.max(np.abs(after[: len(rows)] - before))),
    )


SHARD = "500MB"  # the merged model's safetensors shards
SAMPLES = 64  # input vectors per adapted layer that the float64 merge check runs


def _tuner_layers(peft_model: Any) -> dict[str, Any]:
    """Every adapter layer of the peft model (LoRA, DoRA, AdaLoRA, IA3: peft's BaseTunerLayer), by name."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return {n: m for n, m in peft_model.base_model.model.named_modules() if isinstance(m, BaseTunerLayer)}


def _rowwise(layer: Any) -> bool:
    """Whether the layer maps each vector of its input's last axis on its own (Linear, GPT-2's Conv1D, Embedding),
    so that a sample of input positions is an input it takes."""
    import torch
    from transformers.pytorch_utils import Conv1D

    return isinstance(layer.get_base_layer(), (torch.nn.Linear, Conv1D, torch.nn.Embedding))


@contextmanager
def _sampled_inputs(layers: dict[str, Any]) -> Iterator[dict[str, list]]:
    """While open, each call of a layer in `layers` leaves (a sample of) its input: for a layer applied position
    by position, up to SAMPLES positions spread over the call; for another, its first call's arguments whole.
    Yields {name: [tensors, or (args, kwargs)]}."""
    got: dict[str, list] = {}

    def hook(name: str, layer: Any) -> Any:
        rowwise = _rowwise(layer)

        def keep(module: Any, args: tuple, kwargs: dict) -> None:
            seen = got.setdefault(name, [])
            if rowwise:
                x = args[0]
                x = x.reshape(-1, x.shape[-1]) if x.is_floating_point() else x.reshape(-1)
                pick = np.unique(np.linspace(0, len(x) - 1, min(len(x), SAMPLES)).round().astype(int))
                seen.append(x[pick].detach().clone())
            elif not seen:
                seen.append((_detached(args), _detached(kwargs)))

        return layer.register_forward_pre_hook(keep, with_kwargs=True)

    handles = [hook(name, layer) for name, layer in layers.items()]
    try:
        yield got
    finally:
        for h in handles:
            h.remove()


def _map_tensors(value: Any, fn: Any) -> Any:
    """`value` (a tensor, or tuples, lists and dicts holding tensors) with `fn` applied to every tensor in it."""
    import torch

    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, (tuple, list)):
        return type(value)(_map_tensors(v, fn) for v in value)
    if isinstance(value, dict):
        return {k: _map_tensors(v, fn) for k, v in value.items()}
    return value


def _detached(value: Any) -> Any:
    return _map_tensors(value, lambda t: t.detach().clone())


def _float64(value: Any) -> Any:
    return _map_tensors(value, lambda t: t.double() if t.is_floating_point() else t)


def _merge_layer(layer: Any, seen: list | None) -> float | None:
    """Merge one adapter layer: a float64 copy of it computes its sampled inputs with the adapter and again after
    peft merges it; the merged float64 weights, rounded to float32, go into the layer's base layer. Returns the
    largest output difference; a row-wise layer the check rows never reached takes random inputs instead (None:
    another kind of layer that never ran, merged unchecked)."""
    import torch

    copy = deepcopy(layer).double()
    calls: list[tuple[tuple, dict]]
    if _rowwise(layer):
        x = torch.cat(seen) if seen else _random_input(layer.get_base_layer())
        x = x[np.unique(np.linspace(0, len(x) - 1, min(len(x), SAMPLES)).round().astype(int))]
        calls = [((x.double() if x.is_floating_point() else x,), {})]
    else:
        calls = [(_float64(args), _float64(kwargs)) for args, kwargs in seen or []]
    adapted = [copy(*args, **kwargs) for args, kwargs in calls]
    copy.merge(safe_merge=False)
    plain = copy.get_base_layer()
    merged = [plain(*args, **kwargs) for args, kwargs in calls]
    diff = max((_max_abs_diff(a, m) for a, m in zip(adapted, merged)), default=None)
    target = layer.get_base_layer()
    for name, p in plain.named_parameters():
        target.get_parameter(name).data.copy_(p.data)
    del copy, plain, adapted, merged
    return diff


def _random_input(base: Any) -> Any:
    """Inputs for a layer the check rows never reached (a row-wise layer): standard normal vectors, or token ids."""
    import torch

    g = torch.Generator().manual_seed(0)
    if isinstance(base, torch.nn.Embedding):
        return torch.randint(0, base.num_embeddings, (SAMPLES,), generator=g)
    width = base.in_features if isinstance(base, torch.nn.Linear) else base.weight.shape[0]  # Conv1D: (in, out)
    return torch.randn(SAMPLES, width, generator=g, dtype=torch.float64)


def _max_abs_diff(a: Any, b: Any) -> float:
    """Largest |a - b| over the tensors of two outputs (a tensor, or a tuple holding tensors)."""
    import torch

    if isinstance(a, torch.Tensor):
        return float((a - b).abs().max()) if a.numel() else 0.0
    return max((_max_abs_diff(x, y) for x, y in zip(a, b) if x is not None), default=0.0)


def _unwrap_trained_in_full(peft_model) -> None:
    """Put each module trained in full (modules_to_save) in place of its wrapper. peft 0.21's IA3 unload fails on
    a wrapped module without a .weight (AttributeError: 'BertPooler' object has no attribute 'weight')."""
    from peft.utils import ModulesToSaveWrapper

    for name, module in list(peft_model.base_model.model.named_modules()):
        if isinstance(module, ModulesToSaveWrapper):
            parent, _, child = name.rpartition(".")
            owner = peft_model.base_model.model.get_submodule(parent) if parent else peft_model.base_model.model
            setattr(
                owner,
                child,
                module.unload_and_optionally_merge_module(merge=True, safe_merge=False, adapter_names=None),
            )
