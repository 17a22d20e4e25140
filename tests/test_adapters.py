"""LoRA adapters beside one base ONNX model (edgetune/engines/adapters.py): the builder's base graph gains a
float LoRA branch at each adapted projection, each adapter is an `.onnx_adapter` file, and onnxruntime-genai runs
the base with any of them active, switching on one og.Model. Checked against each adapter's own PyTorch model."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from edgetune.core.errors import EdgetuneError
from edgetune.engines.adapters import adapter_values, add_lora_inputs, peft_state, write_adapter
from edgetune.engines.builder import build_genai
from edgetune.engines.int4 import fake_int4
from edgetune.runtime.genai import GenaiLM

# two tasks over one base: one adapts attention only, the other every projection (fused qkv included)
ADAPTERS = {
    "attn": ["q_proj", "v_proj"],
    "all": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}
PROMPTS = [[5, 17, 42, 99, 3, 8], [60, 61, 62]]
# on the 4.57 line too: its onnxruntime-genai 0.15.2 is the Android app's runtime
pytestmark = pytest.mark.both_lines


def _peft_adapter(base: Path, targets: list[str], seed: int, out: Path):
    """A peft LoRA adapter with random A and B (as if trained), saved to `out`; its merged PyTorch model."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False)
    peft_model = get_peft_model(model, cfg)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.mul_(20)  # an effect well above the tolerances below
    peft_model.save_pretrained(out)
    return peft_model.merge_and_unload().eval()


def _linears(base: Path) -> dict[str, tuple[int, int]]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    return {n: (m.in_features, m.out_features) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def _base_with_adapters(tiny_llama: Path, tmp: Path, precision: str, extra: dict | None = None):
    """The tiny LLaMA built by the builder at `precision`, its LoRA inputs added, and both adapters written."""
    built, folder = tmp / f"built-{precision}", tmp / f"lora-{precision}"
    built.mkdir()
    build_genai(tiny_llama, built, precision, extra)
    merged, files = {}, {}
    for i, (name, targets) in enumerate(ADAPTERS.items()):
        merged[name] = _peft_adapter(tiny_llama, targets, i + 1, tmp / f"peft-{name}-{precision}")
    targets = {m for name in ADAPTERS for m in peft_state(tmp / f"peft-{name}-{precision}")[0]}
    slots = add_lora_inputs(built / "model.onnx", folder, _linears(tiny_llama), targets)
    for f in built.iterdir():  # genai_config.json and the tokenizer
        if not f.name.startswith("model.onnx"):
            shutil.copy2(f, folder / f.name)
    for name in ADAPTERS:
        files[name] = folder / f"{name}.onnx_adapter"
        write_adapter(adapter_values(slots, *peft_state(tmp / f"peft-{name}-{precision}")), files[name])
    return folder, files, merged, slots


def test_each_adapter_on_the_fp32_base_is_its_merged_model(tiny_llama, tmp_path):
    from transformers import AutoModelForCausalLM

    folder, files, merged, slots = _base_with_adapters(tiny_llama, tmp_path, "fp32")
    # 2 layers x (qkv, o, gate, up, down): every projection has a branch (the "all" adapter adapts each)
    assert len(slots) == 10 and {len(s.members) for s in slots} == {1, 3}
    lm = GenaiLM(folder, 1)
    for name, path in files.items():
        lm.load_adapter(name, path)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    worst = {}
    for name in [*ADAPTERS, None, "attn"]:  # switching back and forth on one og.Model
        lm.use_adapter(name)
        ref = merged[name] if name else base
        for ids in PROMPTS:
            got = lm.logits(ids)
            with torch.no_grad():
                want = ref(torch.tensor([ids])).logits[0].numpy()
            worst[name] = max(worst.get(name, 0.0), float(np.abs(got - want).max()))
            # and greedy decoding through the KV cache, with the adapter active at every step
            assert lm.greedy(ids, 6, set()) == _greedy(ref, ids, 6), (name, ids)
    assert all(w < 1e-4 for w in worst.values()), worst
    with torch.no_grad():  # the adapters do change the model, and differently
        a, b = (merged[n](torch.tensor([PROMPTS[0]])).logits for n in ADAPTERS)
        plain = base(torch.tensor([PROMPTS[0]])).logits
    assert float((a - plain).abs().max()) > 0.1 and float((a - b).abs().max()) > 0.1


def test_the_int4_base_with_a_float_adapter_is_what_the_device_computes(tiny_llama, tmp_path):
    """An int4 base (fp32 compute: accuracy level 0) plus a float adapter equals PyTorch with every base linear
    rounded by fake_int4 and the adapter's B·A added unrounded: what int4-aware training of an unmerged adapter
    must train against."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    folder, files, _, _ = _base_with_adapters(tiny_llama, tmp_path, "int4", {"block_size": 16, "accuracy_level": 0})
    lm = GenaiLM(folder, 1)
    lm.load_adapter("all", files["all"])
    lm.use_adapter("all")
    base = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    with torch.no_grad():
        for m in base.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.copy_(fake_int4(m.weight, 16))
    ref = PeftModel.from_pretrained(base, tmp_path / "peft-all-int4").eval()
    for ids in PROMPTS:
        with torch.no_grad():
            want = ref(torch.tensor([ids])).logits[0].numpy()
        assert float(np.abs(lm.logits(ids) - want).max()) < 1e-3


def test_unknown_adapter_and_unmapped_target_fail_in_one_line(tiny_llama, tmp_path):
    built = tmp_path / "built"
    built.mkdir()
    build_genai(tiny_llama, built, "fp32")
    with pytest.raises(EdgetuneError, match=r"no projection of the exported graph for model\.layers\.9"):
        add_lora_inputs(built / "model.onnx", tmp_path / "x", _linears(tiny_llama), {"model.layers.9.mlp.up_proj"})
    lm = GenaiLM(built, 1)
    with pytest.raises(EdgetuneError, match="no adapter named 'nope' loaded"):
        lm.use_adapter("nope")


def _greedy(model, ids: list[int], n: int) -> list[int]:
    out = list(ids)
    with torch.no_grad():
        for _ in range(n):
            out.append(int(model(torch.tensor([out])).logits[0, -1].argmax()))
    return out[len(ids) :]
