"""Int4-aware fine-tuning: the rounding is onnxruntime's, bit for bit, and the int4 file holds the trained model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import edit_recipe
from test_recipe import assert_one_line_error

from edgetune.cli import cli
from edgetune.engines.int4 import fake_int4, int4_block, int4_forward, round_base_for_int4, round_frozen_for_int4
from edgetune.runtime.decoding import prompt_ids


def _onnxruntime_int4(w: np.ndarray, block: int) -> np.ndarray:
    """`w` [out, in] quantized by onnxruntime's MatMulNBits quantizer (symmetric), then dequantized."""
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits

    n, k = w.shape
    kb = -(-k // block)
    packed = np.zeros((n, kb, block // 2), np.uint8)
    zero_points = np.zeros((n, (kb + 1) // 2), np.uint8)
    scales = np.zeros((n, kb), np.float32)
    quantize_matmul_4bits(packed, np.ascontiguousarray(w.T), scales, zero_points, block, n, k, True)
    q = np.stack([packed & 15, packed >> 4], -1).reshape(n, kb * block).astype(np.float32)
    return (np.repeat(scales, block, axis=1) * (q - 8))[:, :k]


@pytest.mark.parametrize(("block", "k"), [(16, 64), (32, 576), (64, 576), (128, 576), (32, 80)])
def test_fake_int4_is_onnxruntime_rounding_bit_for_bit(block, k):
    rng = np.random.default_rng(block + k)
    w = (rng.standard_normal((300, k)) * 0.05).astype(np.float32)
    w[0] = 0  # all-zero blocks
    w[1, :block] = 0.1  # a tie of +max and -max: onnxruntime takes the negative one
    w[1, 1] = -0.1
    scale = np.float32(0.08) / np.float32(-8)  # values at exact halves of a step: rounded away from zero
    w[2, :8] = [0.08, 0.01, -0.01, 0.03, -0.05, 0.0, 0.07, -0.07]
    w[2, 1:8] = np.round(w[2, 1:8] / scale - 0.5) * scale + 0.5 * scale
    want = _onnxruntime_int4(w, block)
    got = fake_int4(torch.from_numpy(w), block).numpy()
    assert np.array_equal(got, want), np.argwhere(got != want)[:5]
    assert not np.array_equal(got, w)  # it does round


def _lora_linear(seed: int = 0):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(
        torch.nn.Sequential(torch.nn.Linear(64, 48)),
        LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["0"]),
    )
    layer = model.base_model.model[0]
    torch.nn.init.normal_(layer.lora_B["default"].weight, std=0.05)  # B starts at zero; give it something
    return model, layer


def test_int4_forward_computes_with_the_rounded_merged_weight_and_trains_lora():
    model, layer = _lora_linear()
    x = torch.randn(5, 64)
    plain = model(x)
    merged = layer.base_layer.weight + layer.lora_B["default"].weight @ layer.lora_A["default"].weight * 2.0
    with int4_forward(model, 16) as n:
        assert n == 1
        got = model(x)
        got.square().sum().backward()
    want = torch.nn.functional.linear(x, fake_int4(merged.detach(), 16), layer.base_layer.bias)
    assert torch.allclose(got, want, atol=1e-6) and not torch.allclose(got, plain, atol=1e-3)
    assert layer.lora_A["default"].weight.grad.abs().sum() > 0
    assert layer.lora_B["default"].weight.grad.abs().sum() > 0
    assert layer.base_layer.weight.grad is None  # the base stays frozen
    assert torch.equal(model(x), plain)  # the plain LoRA forward is back


def test_round_frozen_rounds_only_what_lora_does_not_train(tiny_llama):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    q_before = model.model.layers[0].self_attn.q_proj.weight.clone()
    model = get_peft_model(
        model, LoraConfig(r=4, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj"])
    )
    names = round_frozen_for_int4(model, 16)
    assert set(names) == {"lm_head", "model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"}
    model = model.base_model.model
    head = model.lm_head.weight
    assert torch.equal(head, fake_int4(head, 16))  # on the int4 grid, so the export's rounding keeps it
    assert model.get_input_embeddings().weight is head  # tied: the embedding lookup reads the same values
    assert torch.equal(model.model.layers[0].self_attn.q_proj.base_layer.weight, q_before)


def test_round_base_rounds_every_base_weight_and_no_lora_matrix(tiny_llama):
    """An adapter kept apart trains on the int4 base: the base layers LoRA adapts are rounded too, A and B not."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    q_before = model.model.layers[0].self_attn.q_proj.weight.clone()
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    a_before = model.base_model.model.model.layers[0].self_attn.q_proj.lora_A["default"].weight.clone()
    names = round_base_for_int4(model, 16)
    assert "model.layers.0.self_attn.q_proj.base_layer" in names and "lm_head" in names
    assert not any("lora_" in n for n in names), names
    q = model.base_model.model.model.layers[0].self_attn.q_proj
    assert torch.equal(q.base_layer.weight, fake_int4(q_before, 16)) and not torch.equal(
        q_before, fake_int4(q_before, 16)
    )
    assert torch.equal(q.lora_A["default"].weight, a_before)


def test_int4_aware_build_exports_the_model_it_trained(tiny_chat_recipe, tmp_path):
    """After int4-aware training, the int4 ONNX file holds the merged model's weights exactly: its logits match
    the merged PyTorch model with every linear rounded by fake_int4, not the unrounded one."""
    from transformers import AutoModelForCausalLM

    from edgetune.core.recipe import load_recipe
    from edgetune.pipeline import prepare
    from edgetune.runtime.genai import GenaiLM

    edit_recipe(
        tiny_chat_recipe,
        training={"epochs": 2, "learning_rate": 0.01, "batch_size": 8, "max_length": 128, "int4_aware_epochs": 1},
        quantize={"precisions": ["int4"], "int4_block_size": 16, "int4_accuracy_level": 0},
    )
    run = tmp_path / "run"
    r = CliRunner().invoke(cli, ["verify", str(tiny_chat_recipe), "--out", str(run)])
    assert r.exit_code in (0, 1), r.output  # a random tiny model may miss a gate; the files are what matter
    assert "int4-aware" in r.output
    record = json.loads((run / "manifest.json").read_text())["stages"]["finetune"]["record"]
    assert record["int4_block_size"] == 16

    recipe = load_recipe(tiny_chat_recipe)
    p = prepare(recipe)
    merged = AutoModelForCausalLM.from_pretrained(run / "merge" / "model").eval()
    assert torch.equal(merged.lm_head.weight, fake_int4(merged.lm_head.weight, 16))
    rounded = AutoModelForCausalLM.from_pretrained(run / "merge" / "model").eval()
    with torch.no_grad():
        for m in rounded.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.copy_(fake_int4(m.weight, 16))
    tok = p.task.load_tokenizer(run / "merge" / "model")
    onnx = GenaiLM(run / "quantize" / "int4", 1)
    worst_rounded = worst_plain = 0.0
    for example in p.data.eval[:3]:
        ids = prompt_ids(tok, example)
        got = onnx.logits(ids)  # [prompt length, vocab]
        with torch.no_grad():
            want = rounded(torch.tensor([ids])).logits[0].numpy()
            plain = merged(torch.tensor([ids])).logits[0].numpy()
        assert got.shape == want.shape
        worst_rounded = max(worst_rounded, float(np.abs(got - want).max()))
        worst_plain = max(worst_plain, float(np.abs(got - plain).max()))
    assert worst_rounded < 1e-3, worst_rounded
    assert worst_plain > 10 * worst_rounded, (worst_plain, worst_rounded)
    # built with the lm_head pruned (engines/builder.py BUILD_OPTIONS): prefill gave the last position's logits
    # only, and the other rows above came one decoding step each, equal to PyTorch's all the same
    assert onnx.pruned


@pytest.mark.parametrize(
    ("training", "quantize", "fragment"),
    [
        ({"epochs": 2, "int4_aware_epochs": 3}, {}, "more than training.epochs"),
        ({"int4_aware_epochs": 1}, {"precisions": ["int8"]}, "needs int4 in quantize.precisions"),
        ({"int4_aware_epochs": 1}, {"int4_keep_lm_head": True}, "int4_keep_lm_head"),
    ],
)
def test_int4_aware_recipe_errors(tiny_chat_recipe, training, quantize, fragment):
    edit_recipe(tiny_chat_recipe, training=training, quantize=quantize)
    r = CliRunner().invoke(cli, ["build", str(tiny_chat_recipe), "--no-progress"])
    assert_one_line_error(r, 2, "training.int4_aware_epochs", fragment)


@pytest.mark.both_lines
@pytest.mark.parametrize("block", [16, 32])
def test_fake_int4_is_the_builders_int4_weights_bit_for_bit(tiny_llama, tmp_path, block):
    """The rounding int4-aware training uses is what the installed model builder writes (0.18 on the default
    line, 0.15.2 on the 4.57 line): every MatMulNBits weight of its int4 export, dequantized, is fake_int4 of the
    model's linear weights exactly (the builder fuses q/k/v and gate/up: rows of several linears), and every
    linear, the tied lm_head included, is in one of them."""
    import onnx
    from onnx import numpy_helper
    from transformers import AutoModelForCausalLM

    from edgetune.engines.builder import MODEL_NAME, build_genai

    build_genai(tiny_llama, tmp_path, "int4", {"block_size": block, "accuracy_level": 4})
    graph = onnx.load(tmp_path / MODEL_NAME).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    rounded = {
        name: fake_int4(m.weight.detach(), block).numpy()
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear)
    }
    unmatched = set(rounded)
    for node in (n for n in graph.node if n.op_type == "MatMulNBits"):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        n, k = attrs["N"], attrs["K"]
        assert attrs["bits"] == 4 and attrs["block_size"] == block
        packed = init[node.input[1]].reshape(n, -1)
        scales = init[node.input[2]].reshape(n, -1).astype(np.float32)
        zero = np.full(scales.shape, 8, np.float32)  # symmetric: no zero point input, 8 implied
        if len(node.input) > 3 and node.input[3]:
            zp = init[node.input[3]].reshape(n, -1)
            zero = np.stack([zp & 15, zp >> 4], -1).reshape(n, -1)[:, : scales.shape[1]].astype(np.float32)
        q = np.stack([packed & 15, packed >> 4], -1).reshape(n, -1).astype(np.float32)
        blocks = scales.shape[1]
        w = ((q[:, : blocks * block].reshape(n, blocks, block) - zero[..., None]) * scales[..., None]).reshape(n, -1)
        w = w[:, :k]
        row = 0
        while row < n:  # the node's rows, linear by linear
            hit = next(
                (
                    m
                    for m in sorted(unmatched)
                    if rounded[m].shape[1] == k and np.array_equal(w[row : row + rounded[m].shape[0]], rounded[m])
                ),
                None,
            )
            assert hit is not None, f"{node.name}: rows {row}.. are no linear's weights rounded by fake_int4"
            unmatched.discard(hit)
            row += rounded[hit].shape[0]
    assert not unmatched, f"linears in no MatMulNBits node: {sorted(unmatched)}"


@pytest.mark.parametrize(
    ("flags", "android", "linux", "block", "why"),
    [
        ({"avx2", "avx512_vnni"}, False, (), 64, "has VNNI/AMX"),
        ({"avx2", "avx_vnni"}, False, (), 64, "has VNNI/AMX"),
        ({"avx2", "amx_int8"}, False, (), 64, "has VNNI/AMX"),
        ({"avx2"}, False, (), 64, "as fast as 32 without VNNI"),  # Zen 3: benchmarks/int4_layouts.py (README)
        ({"avx2", "avx512_vnni"}, True, (), 32, "runs on ARM"),
        ({"avx2", "avx512_vnni"}, False, ("arm64",), 32, "runs on ARM"),
        ({"avx2"}, False, ("x86_64",), 64, "as fast as 32 without VNNI"),
    ],
)
def test_int4_block_auto_follows_the_cpu_the_model_runs_on(flags, android, linux, block, why):
    got, reason = int4_block("auto", android, linux, flags)
    assert got == block and why in reason, reason
    assert int4_block(128, android, linux, flags) == (128, "quantize.int4_block_size: 128 in the recipe")


def test_int4_block_auto_is_in_the_keys_and_the_export(tiny_chat_recipe, tmp_path):
    """auto resolves on this machine; the quantize record's builder options carry the resolved size."""
    from edgetune.core.recipe import load_recipe
    from edgetune.engines.int4 import int4_block_of
    from edgetune.pipeline import build

    recipe = edit_recipe(tiny_chat_recipe, quantize={"precisions": ["int4"], "int4_block_size": "auto"})
    lines: list[str] = []
    build(load_recipe(recipe), tmp_path / "run", until="quantize", progress=False, log=lines.append)
    block, why = int4_block_of(load_recipe(recipe))
    assert f"quantize: int4 in blocks of {block}: {why}" in lines, lines
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["stages"]["quantize"]["record"]["models"][0]["notes"]["block_size"] == block
