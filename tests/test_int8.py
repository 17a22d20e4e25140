"""int8 that is right on every CPU (issue 18): x86 without VNNI adds pairs of int8 products into 16 bits and clamps
them, so a full-range int8 file computes other numbers there than on VNNI, AMX or ARM. The int8 kernels of an
AVX2-only x86 are run here on any host, under qemu-x86_64 (tests/board: TCG emulates AVX2 without AVX512 or
VNNI), next to this machine's own kernels.

Also here: edgetune/engines/int8.py's roundings against onnxruntime's quantizer, and int8-aware distillation."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from board import run_onnx_files, x86_64_emulator
from conftest import edit_recipe

from edgetune.core.recipe import load_recipe
from edgetune.engines import int8
from edgetune.pipeline import build
from edgetune.runtime.cpu import cpu_flags, int8_saturates


def emulated_avx2(*args: str, timeout: int = 600) -> str:
    """Run this venv's Python with `args` on the emulated AVX2-only x86; its stdout."""
    proc = subprocess.run([*x86_64_emulator(), sys.executable, *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def feeds(recipe: Path, run: Path) -> Path:
    """The held-out rows of `recipe` tokenized at batch 1, as verify feeds them, in an .npz."""
    from edgetune.tasks import get_task

    r = load_recipe(recipe)
    task = get_task(r.task)
    data = task.load_data(r.dataset, r.base_dir)
    tok = task.load_tokenizer(run / "merge" / "model")
    arrays = {}
    for i, b in enumerate(task.batches(data.eval, tok, 1, r.training.max_length)):
        arrays.update({f"{i}:{k}": v.numpy() for k, v in b.items() if k != "labels"})
    np.savez(run / "feeds.npz", **arrays)
    return run / "feeds.npz"


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(((a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)).mean())


# -- the probe ---------------------------------------------------------------------------------------------------
def test_the_saturation_probe_tells_avx2_from_this_cpu():
    """The emulated AVX2-only x86 clamps; this machine clamps exactly when Linux reports an x86 without VNNI/AMX."""
    out = emulated_avx2("-c", "from edgetune.runtime.cpu import int8_saturates; print(int8_saturates())")
    assert out.strip() == "True", out
    flags = cpu_flags()
    if "avx2" in flags:  # x86: VNNI (or AMX) or not
        assert int8_saturates() == (not {"avx512_vnni", "avx_vnni", "amx_int8"} & flags)
    elif flags:  # ARM: 32-bit accumulation
        assert int8_saturates() is False


def test_the_weight_range_follows_the_cpus_the_model_is_built_for(monkeypatch):
    monkeypatch.setattr(int8, "int8_saturates", lambda: True)
    reduced, why = int8.reduce_range("auto")
    assert reduced and "16 bits and clamps" in why
    assert int8.reduce_range(False) == (False, "quantize.reduce_range: false in the recipe")
    monkeypatch.setattr(int8, "int8_saturates", lambda: False)
    assert int8.reduce_range("auto")[0] is False
    reduced, why = int8.reduce_range("auto", ["arm64", "x86_64"])
    assert reduced and "x86_64" in why
    assert int8.reduce_range(True)[0] is True


# -- the same int8 file on an AVX2-only x86 and here --------------------------------------------------------------
@pytest.fixture
def ia3_run(tiny_recipe, tmp_path):
    """The tiny model whose int8 gate failed on a Zen 3 (issue 18: mean cosine 0.702825 against the fp32 file)."""
    edit_recipe(
        tiny_recipe,
        lora={"method": "ia3", "target_modules": ["query", "key", "value", "dense"], "modules_to_save": ["pooler"]},
    )
    run = tmp_path / "run"
    build(load_recipe(tiny_recipe), run, until="export", progress=False)
    return tiny_recipe, run


def test_an_int8_file_built_for_avx2_computes_the_same_there_as_here(ia3_run, tmp_path, monkeypatch):
    """Quantized as for a machine whose kernels clamp (quantize.reduce_range: auto on an AVX2 x86), the int8 file
    gives the same logits on the emulated AVX2-only x86 as on this machine's kernels, and keeps verify's int8
    gate with room. The full-range file, as a VNNI machine builds it, clamps there: the case the issue measured
    (so this test would fail on the old quantizer)."""
    recipe, run = ia3_run
    monkeypatch.setattr(int8, "int8_saturates", lambda: True)  # what an AVX2 machine measures
    build(load_recipe(recipe), run, until="quantize", progress=False)
    reduced = tmp_path / "reduced.onnx"
    shutil.copy(run / "quantize" / "model_int8.onnx", reduced)
    notes = json.loads((run / "manifest.json").read_text())["stages"]["quantize"]["record"]["models"][0]["notes"]
    assert notes["reduce_range"] is True and "clamps" in notes["reduce_range_why"]
    edit_recipe(recipe, quantize={"reduce_range": False})
    build(load_recipe(recipe), run, until="quantize", progress=False)
    full = run / "quantize" / "model_int8.onnx"

    models = [run / "export" / "model.onnx", reduced, full]
    f = feeds(recipe, run)
    fp32, here_reduced, here_full = run_onnx_files(f, models, tmp_path, emulated_avx2=False)
    _, avx2_reduced, avx2_full = run_onnx_files(f, models, tmp_path, emulated_avx2=True)

    assert np.abs(avx2_reduced - here_reduced).max() <= 1e-5 * np.abs(here_reduced).max()
    assert cosine(avx2_reduced, fp32) >= 0.998  # verify's gate is 0.99
    assert cosine(avx2_full, fp32) < 0.9, "the emulated AVX2 kernels no longer clamp the full-range file"
    if not int8_saturates():  # here the full-range file is fine: the clamp is AVX2's
        assert cosine(here_full, fp32) >= 0.999


# -- the roundings -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reduced", [False, True])
@pytest.mark.parametrize("per_channel", [True, False])
def test_fake_int8_weight_is_onnxruntimes_quantizer(reduced, per_channel):
    import onnx
    import torch
    from onnxruntime.quantization.quant_utils import quantize_data

    w = torch.randn(48, 80) * torch.logspace(-3, 0, 48)[:, None]
    w[3, 5] = 0.0
    got = int8.fake_int8_weight(w, reduced, per_channel)
    rows = [w[i : i + 1] for i in range(48)] if per_channel else [w]
    want = []
    for r in rows:
        zero, scale, q = quantize_data(r.numpy(), onnx.TensorProto.INT8, True, reduced)
        want.append((q.astype(np.float32) - zero) * scale)
    assert np.array_equal(got.numpy(), np.concatenate(want))


def test_fake_uint8_table_and_activation_are_onnxruntimes():
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper
    from onnxruntime.quantization.quant_utils import quantize_data

    table = torch.randn(50, 16) * 0.3 + 0.1
    zero, scale, q = quantize_data(table.numpy(), TensorProto.UINT8, False)
    assert np.array_equal(int8.fake_uint8_table(table).numpy(), (q.astype(np.float32) - zero) * scale)

    graph = helper.make_graph(
        [helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])],
        "dql",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "t", 24])],
        [helper.make_tensor_value_info(n, t, None) for n, t in (("y", 2), ("s", 1), ("z", 2))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    gen = np.random.default_rng(0)
    batch = [(gen.standard_normal((1, n, 24)) * gen.uniform(0.1, 9) + gen.uniform(-2, 2)) for n in (3, 7, 5)]
    texts = [x.astype(np.float32) for x in batch]
    for x in texts:
        y, s, z = session.run(None, {"x": x})
        want = (y.astype(np.float32) - z.astype(np.float32)) * s
        assert np.array_equal(int8.fake_uint8_activation(torch.from_numpy(x)).numpy(), want)
    # a padded batch rounds each text as alone: the padding stays out of its range
    padded = torch.zeros(3, 7, 24)
    mask = torch.zeros(3, 7, dtype=torch.long)
    for i, x in enumerate(texts):
        padded[i, : x.shape[1]] = torch.from_numpy(x[0])
        padded[i, x.shape[1] :] = 50.0  # far outside every text's range
        mask[i, : x.shape[1]] = 1
    got = int8.fake_uint8_activation(padded, mask)
    for i, x in enumerate(texts):
        alone = int8.fake_uint8_activation(torch.from_numpy(x))[0]
        assert torch.equal(got[i, : x.shape[1]], alone)


def test_int8_forward_computes_as_the_int8_file(tiny_recipe, tmp_path):
    """PyTorch under int8_forward against onnxruntime running the quantize stage's file, at batch 1 and in a padded
    batch of 8: the float model is far from the int8 file, the simulation close to it."""
    from edgetune.tasks import get_task

    run = tmp_path / "run"
    build(load_recipe(tiny_recipe), run, until="quantize", progress=False)
    r = load_recipe(tiny_recipe)
    task = get_task(r.task)
    data = task.load_data(r.dataset, r.base_dir)
    model = task.load_model(run / "merge" / "model", data.labels)
    tok = task.load_tokenizer(run / "merge" / "model")
    notes = json.loads((run / "manifest.json").read_text())["stages"]["quantize"]["record"]["models"][0]["notes"]
    onnx_int8, _ = task.evaluate(task.load_onnx(run / "quantize" / "model_int8.onnx"), tok, data.eval, 1, 16)
    fp32, _ = task.evaluate(model, tok, data.eval, 1, 16)
    with int8.int8_forward(model, notes["reduce_range"]) as wrapped:
        one, _ = task.evaluate(model, tok, data.eval, 1, 16)
        eight, _ = task.evaluate(model, tok, data.eval, 8, 16)
    assert wrapped == 2 * 6 + 2 + 3  # 6 linears per layer (q, k, v, out, ffn in/out), pooler, head; 3 tables
    float_gap = np.abs(fp32 - onnx_int8).mean()
    assert float_gap > 0
    for sim in (one, eight):
        assert np.abs(sim - onnx_int8).mean() <= 0.1 * float_gap, (np.abs(sim - onnx_int8).mean(), float_gap)
    after, _ = task.evaluate(model, tok, data.eval, 1, 16)  # the model is itself again
    assert np.array_equal(after, fp32)


# -- int8-aware distillation --------------------------------------------------------------------------------------
def test_int8_aware_epochs_are_checked_and_in_the_compress_key(tiny_recipe, monkeypatch):
    from types import SimpleNamespace

    from click.testing import CliRunner
    from test_recipe import assert_one_line_error

    from edgetune.cli import cli
    from edgetune.stages.compress import Compress

    edit_recipe(tiny_recipe, compress={"every": 2, "epochs": 1, "int8_aware_epochs": 2})
    r = CliRunner().invoke(cli, ["recipe", "validate", str(tiny_recipe)])
    assert_one_line_error(r, 2, "compress", "int8_aware_epochs (2) exceeds epochs (1)")

    edit_recipe(tiny_recipe, compress={"every": 2, "epochs": 2, "int8_aware_epochs": 1})
    recipe = load_recipe(tiny_recipe)
    ctx = SimpleNamespace(recipe=recipe, data=SimpleNamespace(fingerprint="d"))
    monkeypatch.setattr(int8, "int8_saturates", lambda: False)
    key = Compress().key(ctx)
    monkeypatch.setattr(int8, "int8_saturates", lambda: True)  # another CPU: other rounding, another student
    assert Compress().key(ctx) != key
    tensor = recipe.model_copy(update={"quantize": recipe.quantize.model_copy(update={"per_channel": False})})
    assert Compress().key(SimpleNamespace(recipe=tensor, data=ctx.data)) != Compress().key(ctx)
