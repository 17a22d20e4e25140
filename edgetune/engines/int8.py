"""int8 as ONNX Runtime's dynamic quantizer makes it: which weight range a CPU needs, and int8-aware training.

**The weight range.** `quantize_dynamic` stores weights as symmetric int8 and quantizes each call's activations
to uint8; the kernels then multiply uint8 x int8. x86 CPUs without VNNI (AVX2, and AVX512 before VNNI) do that
with VPMADDUBSW, which adds each pair of products into a 16-bit integer and clamps it at 32767: 255 x 127 twice
is 64770, so large activations meeting large weights come out wrong. VNNI, AMX and ARM's kernels accumulate in 32
bits. With 7-bit weights (`reduce_range`: -64..64) a pair is at most 255 x 64 x 2 = 32640 and cannot clamp, so one
file computes the same on every CPU, at one bit less precision. `reduce_range` decides per build: on where a CPU
the model is built for clamps (this machine, measured by `runtime.int8_saturates`; an x86_64 board, whose CPU is
not known when building), off where all of them accumulate in 32 bits.

**int8-aware training.** `int8_forward` makes a transformers encoder compute as its dynamic-int8 ONNX file will:
every nn.Linear with its weight rounded per output channel (or per tensor) to symmetric int8 (7 bits with
reduce_range) and its input rounded to uint8 with one scale and zero point per text (DynamicQuantizeLinear at the
deployed batch of 1: the min and max over the text's real tokens), every nn.Embedding table rounded to uint8 per
tensor (quantize_dynamic's Gather), gradients passed straight through the rounding. tests/test_int8.py checks
the roundings against onnxruntime's quantizer and a whole encoder against its int8 ONNX file.

Written here because no library offers it for ONNX Runtime's scheme: torch.ao's fake-quantize observers keep
running min/max statistics (static quantization), not one scale per call over the real tokens of one text.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from edgetune.runtime.cpu import cpu_isa, int8_saturates

FULL, REDUCED = 127, 64  # symmetric int8 weight range: quantize_dynamic's, and with reduce_range


def reduce_range(setting: str | bool, linux_targets: list[str] | tuple[str, ...] = ()) -> tuple[bool, str]:
    """Whether int8 weights use 7 bits (see the module docstring), and why, in a sentence for the record."""
    if setting != "auto":
        return bool(setting), f"quantize.reduce_range: {str(setting).lower()} in the recipe"
    here = cpu_isa()
    if int8_saturates():
        return True, f"this machine ({here}) adds int8 products in 16 bits and clamps them: 7-bit weights cannot"
    if "x86_64" in linux_targets:
        return True, "package.linux has x86_64: a board whose CPU may add int8 products in 16 bits (no VNNI)"
    return False, f"this machine ({here}) accumulates int8 products in 32 bits, as ARM phones and boards do"


# -- the roundings -------------------------------------------------------------------------------------------------
def fake_int8_weight(w: Any, reduced: bool = False, per_channel: bool = True) -> Any:
    """`w` [out, in] (nn.Linear's layout) as quantize_dynamic stores it: symmetric int8, one scale per output
    channel (or one for the tensor), scale = 2 max|w| / (2 qmax) with qmax 127 (64 reduced), computed in float64
    and stored in float32; q = round(w / scale) (halves to even, float32) clamped to -qmax..qmax."""
    import torch

    qmax = REDUCED if reduced else FULL
    absmax = w.detach().abs().amax(dim=1, keepdim=True) if per_channel else w.detach().abs().amax()
    scale = (absmax.double() * 2 / (2 * qmax)).float()
    scale = torch.where(scale < torch.finfo(torch.float32).tiny, torch.ones_like(scale), scale)
    return (torch.round(w.float() / scale).clamp(-qmax, qmax) * scale).to(w.dtype)


def fake_uint8_table(w: Any) -> Any:
    """An embedding table as quantize_dynamic stores a Gather's data: uint8 per tensor, asymmetric: the range
    [min(0, min w), max(0, max w)] over 0..255, zero point round(-min / scale)."""
    import torch

    lo = torch.clamp(w.detach().min().double(), max=0)
    hi = torch.clamp(w.detach().max().double(), min=0)
    scale64 = (hi - lo) / 255
    if float(scale64) < torch.finfo(torch.float32).tiny:
        return w
    zero = torch.round(-lo / scale64).clamp(0, 255).float()
    scale = scale64.float()
    q = (torch.round(w.float() / scale) + zero).clamp(0, 255)
    return ((q - zero) * scale).to(w.dtype)


def fake_uint8_activation(x: Any, mask: Any = None) -> Any:
    """`x` as DynamicQuantizeLinear rounds one call's input: uint8 with the range [min(0, min x), max(0, max x)] of
    the call over 0..255, zero point round(-min / scale) (float32, halves to even). Each row of the batch is one
    call (the deployed batch is 1); `mask` [batch, tokens] keeps padding out of a 3-d input's range."""
    import torch

    flat = x.detach().float().reshape(x.shape[0], -1, x.shape[-1]) if x.dim() > 2 else x.detach().float()
    if flat.dim() == 3 and mask is not None and mask.shape == flat.shape[:2]:
        real = mask.bool()[..., None]
        lo = torch.where(real, flat, torch.full_like(flat, float("inf"))).amin(dim=(1, 2))
        hi = torch.where(real, flat, torch.full_like(flat, float("-inf"))).amax(dim=(1, 2))
    else:
        lo, hi = flat.reshape(flat.shape[0], -1).amin(1), flat.reshape(flat.shape[0], -1).amax(1)
    lo, hi = lo.clamp(max=0), hi.clamp(min=0)
    scale = (hi - lo) / 255
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zero = torch.round(-lo / scale).clamp(0, 255)
    shape = (-1,) + (1,) * (x.dim() - 1)
    scale, zero = scale.reshape(shape), zero.reshape(shape)
    q = (torch.round(x.float() / scale) + zero).clamp(0, 255)
    return ((q - zero) * scale).to(x.dtype)


def _through(x: Any, rounded: Any) -> Any:
    """The value of `rounded`, the gradient of `x` (straight-through)."""
    return x + (rounded - x).detach()


@contextmanager
def int8_forward(model: Any, reduced: bool = False, per_channel: bool = True) -> Iterator[int]:
    """Inside the block `model` (a transformers encoder) computes as its dynamic-int8 ONNX file will (module
    docstring): nn.Linear with int8 weights and uint8 inputs, nn.Embedding with uint8 tables, gradients straight
    through. The attention mask of each call is taken from the model's `attention_mask` argument, so a padded
    training batch rounds each text as it would be rounded alone. Yields the number of modules so wrapped."""
    import torch
    import torch.nn.functional as F

    state: dict[str, Any] = {"mask": None}

    def keep_mask(_module: Any, args: tuple, kwargs: dict) -> None:
        state["mask"] = kwargs.get("attention_mask")

    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    tables = [m for m in model.modules() if isinstance(m, torch.nn.Embedding)]

    def wrap_linear(layer: Any) -> None:
        def forward(x: Any) -> Any:
            w = _through(layer.weight, fake_int8_weight(layer.weight, reduced, per_channel))
            return F.linear(_through(x, fake_uint8_activation(x, state["mask"])), w, layer.bias)

        layer.forward = forward  # an instance attribute, shadowing the class's forward until removed

    def wrap_table(table: Any) -> None:
        def forward(ids: Any) -> Any:
            w = _through(table.weight, fake_uint8_table(table.weight))
            return F.embedding(ids, w, table.padding_idx, table.max_norm, table.norm_type, table.scale_grad_by_freq)

        table.forward = forward

    for layer in linears:
        wrap_linear(layer)
    for table in tables:
        wrap_table(table)
    hook = model.register_forward_pre_hook(keep_mask, with_kwargs=True)
    try:
        yield len(linears) + len(tables)
    finally:
        hook.remove()
        for m in linears + tables:
            m.__dict__.pop("forward", None)
