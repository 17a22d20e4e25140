"""Int4-aware LoRA fine-tuning: train against the exact int4 rounding the export will apply.

The int4 export (onnxruntime-genai's model builder, MatMulNBits) rounds every weight of the merged model to
symmetric 4-bit blocks. LoRA deltas are small next to one int4 step, so plain round-to-nearest of a merged model
loses much of what fine-tuning learned (SmolLM2 home-assistant: held-out JSON exact match 0.817 -> 0.500). For the
last `training.int4_aware_epochs` epochs each LoRA layer instead computes with int4(W + scale * B @ A), the same
numbers MatMulNBits will hold, and passes gradients straight through the rounding (straight-through estimator).
Weights that training does not change but the export rounds (lm_head, and with it a tied embedding table) are
rounded once before training, so the model that is trained, merged and verified is the one the int4 file holds.

`fake_int4` reproduces onnxruntime's blockwise quantizer (MLAS, `quantize_matmul_4bits`, symmetric) bit for bit;
tests/test_int4.py checks it against that function. Written here because no library offers it: peft has no
quantization-aware LoRA, and torch.ao's fake-quantize ops work per tensor or per channel, not per block of
MatMulNBits, and round halves to even.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# int4 blocks of quantize.int4_block_size: auto, by the int8 kernels the model will run on (README, "Against
# llama.cpp"): where VNNI or AMX add int8 products, blocks of 64 (fewer scales per token) measured faster; on
# AVX2 without VNNI as fast as 32 (AMD EPYC Zen 3, benchmarks/int4_layouts.py), so 64 on every x86.
VNNI_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")


def int4_block(
    setting: int | str, android: bool = False, linux: tuple[str, ...] | list[str] = (), flags: set[str] | None = None
) -> tuple[int, str]:
    """The int4 block size for quantize.int4_block_size `setting`, and why, in a sentence for the log and record.
    `android`, `linux`: the package's targets (package.android set; package.linux); `flags`: this CPU's (tests)."""
    from edgetune.runtime.cpu import cpu_flags, cpu_isa

    if setting != "auto":
        return int(setting), f"quantize.int4_block_size: {setting} in the recipe"
    if android or "arm64" in linux:
        return 32, "the package runs on ARM (package.android or package.linux arm64): blocks of 32 (not measured there)"
    flags = cpu_flags() if flags is None else flags
    if any(f in flags for f in VNNI_FLAGS):
        return 64, f"this machine ({cpu_isa(flags)}) has VNNI/AMX int8 kernels: blocks of 64 are faster there"
    # Zen 3 (AVX2 only), benchmarks/int4_layouts.py, 3 runs of 15-21 interleaved rounds: a layer's MatMulNBits in
    # blocks of 64 took 0.96-1.00x the time of blocks of 32 at 64 tokens, 0.99-1.00x at one token
    return 64, f"this machine ({cpu_isa(flags)}): blocks of 64 are as fast as 32 without VNNI, and the file smaller"


def int4_training_block(recipe: Any) -> int | None:
    """The int4 block size the recipe's training rounds in (with training.int4_aware_epochs), or None."""
    return int4_block_of(recipe)[0] if recipe.training.int4_aware_epochs else None


def int4_block_of(recipe: Any) -> tuple[int, str]:
    """int4_block for a recipe: its quantize.int4_block_size and its package's targets."""
    p = recipe.package
    return int4_block(recipe.quantize.int4_block_size, p.android is not None, p.linux)


def fake_int4(w: Any, block: int) -> Any:
    """`w` [out, in] rounded as MatMulNBits stores it: blocks of `block` along `in` (zero-padded), scale = the
    block's signed absolute maximum (the negative one on a tie) / -8, q = roundf(w / scale + 8) clamped to 0..15
    (halves away from zero, computed in float32 with the reciprocal), value = scale * (q - 8)."""
    import torch

    n, k = w.shape
    pad = -k % block
    b = torch.nn.functional.pad(w.float(), (0, pad)).reshape(n, -1, block)
    hi, lo = b.amax(-1, keepdim=True), b.amin(-1, keepdim=True)
    scale = torch.where(hi.abs() > lo.abs(), hi, lo) / -8.0
    recip = torch.where(scale != 0, 1.0 / scale, torch.zeros_like(scale))
    t = b * recip + 8
    low = torch.floor(t)
    q = torch.clamp(torch.where(t - low == 0.5, low + 1, torch.round(t)), 0, 15)
    return (scale * (q - 8)).reshape(n, -1)[:, :k].to(w.dtype)


def round_frozen_for_int4(model: Any, block: int) -> list[str]:
    """Round in place the weight of every nn.Linear of a peft `model` that LoRA does not train: lm_head at least,
    and a tied input-embedding table with it. Returns their names."""
    return _round_linears(model, block, base_layers=False)


def round_base_for_int4(model: Any, block: int) -> list[str]:
    """Round in place every base weight of a peft `model`'s linears (LoRA's base layers too; not the LoRA A and
    B matrices) as the int4 file of the base model holds them: an adapter kept apart from an int4 base then
    trains against what the device computes, int4(W) x + B A x. Returns the rounded linears' names."""
    return _round_linears(model, block, base_layers=True)


def _round_linears(model: Any, block: int, base_layers: bool) -> list[str]:
    """fake_int4 in place on every nn.Linear of a peft `model` but LoRA's A and B (and, unless `base_layers`,
    the base layers LoRA adapts); their names, as in the base model."""
    import torch
    from peft.tuners.lora import LoraLayer

    skip = set()
    for m in model.modules():
        if isinstance(m, LoraLayer):
            skip |= {
                id(x) for x in [*([] if base_layers else [m.base_layer]), *m.lora_A.modules(), *m.lora_B.modules()]
            }
    names = []
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.Linear) and id(m) not in skip:
                m.weight.copy_(fake_int4(m.weight, block))
                names.append(name.removeprefix("base_model.model."))
    return names


@contextmanager
def int4_forward(model: Any, block: int) -> Iterator[int]:
    """Inside the block, each LoRA layer of the peft `model` computes x @ int4(W + scale * B @ A)^T, with gradients
    passed straight through the rounding to A and B (the LoRA dropout is not applied: the merged weight has none).
    The merged weight is formed in float32 outside any autocast, as merge_and_unload forms it. Yields the number
    of layers so wrapped."""
    import torch
    import torch.nn.functional as F
    from peft.tuners.lora import Linear as LoraLinear

    layers = [m for m in model.modules() if isinstance(m, LoraLinear)]

    def wrap(layer: Any) -> None:
        original = layer.forward

        def forward(x: Any, *args: Any, **kwargs: Any) -> Any:
            if layer.disable_adapters or layer.merged or len(layer.active_adapters) != 1:
                return original(x, *args, **kwargs)
            name = layer.active_adapters[0]
            with torch.autocast("cpu", enabled=False):
                a, b = layer.lora_A[name].weight, layer.lora_B[name].weight
                w = layer.base_layer.weight + (b @ a) * layer.scaling[name]
                frozen = w.detach()
                w = w + (fake_int4(frozen, block) - frozen)  # value int4(w), gradient of w
            return F.linear(x, w, layer.base_layer.bias)

        layer.forward = forward  # an instance attribute, shadowing the class's forward until removed

    for layer in layers:
        wrap(layer)
    try:
        yield len(layers)
    finally:
        for layer in layers:
            layer.__dict__.pop("forward", None)
