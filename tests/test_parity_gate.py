"""The fp32 parity gate scales with the model: the largest diff relative to its row's logit scale
(verify.fp32_max_rel_diff), so that a correct export of a model with large logits passes, and wrong exports
(logits scaled, one logit shifted, two layers swapped) still fail, the scaled one even where cosine cannot see it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import edit_recipe
from onnx import helper, numpy_helper

from edgetune.core.recipe import VerifyConfig, load_recipe
from edgetune.engines.builder import build_genai
from edgetune.engines.verify import compare, fp32_gates, holds
from edgetune.pipeline import build, prepare

MODEL = "model.onnx"


@pytest.fixture
def exported(tiny_chat_recipe, tmp_path):
    """The tiny decoder's recipe and a run of it up to the fp32 genai export."""
    recipe = edit_recipe(tiny_chat_recipe, quantize={"precisions": ["int4"]})
    build(load_recipe(recipe), tmp_path / "run", until="export", progress=False)
    return recipe, tmp_path / "run"


def _score(recipe: Path, folder: Path, merged: Path) -> dict:
    p = prepare(load_recipe(recipe))
    task, rows, max_length = p.task, p.data.eval, p.recipe.training.max_length
    tokenizer = task.load_tokenizer(merged)
    ref, _ = task.evaluate(task.load_model(merged), tokenizer, rows, 8, max_length)
    got, _ = task.evaluate(task.load_onnx(folder / MODEL), tokenizer, rows, 8, max_length)
    return compare(ref, got)


def _gates(metrics: dict, **cfg) -> dict[str, bool]:
    return {name: holds(v, t, op) for name, v, t, op in fp32_gates(VerifyConfig(**cfg), metrics)}


def _planted(src: Path, dst: Path, edit) -> Path:
    """A copy of the genai folder `src` whose model.onnx `edit(model)` changed."""
    shutil.copytree(src, dst)
    model = onnx.load(str(src / MODEL))
    edit(model)
    for f in dst.glob(f"{MODEL}*"):
        f.unlink()
    onnx.save(model, str(dst / MODEL))
    return dst


def _on_logits(model: onnx.ModelProto, op: str, value: np.ndarray) -> None:
    """logits = op(logits, value): a wrong final step planted after the graph's last node."""
    g = model.graph
    producer = next(n for n in g.node if "logits" in n.output)
    producer.output[list(producer.output).index("logits")] = "logits.raw"
    g.initializer.append(numpy_helper.from_array(value.astype(np.float32), "planted"))
    g.node.append(helper.make_node(op, ["logits.raw", "planted"], ["logits"]))


def _swap_layers(model: onnx.ModelProto) -> None:
    """Swap the MLP down projections of layers 0 and 1 (same shapes): a layer-order mistake."""
    inits = {i.name: i for i in model.graph.initializer}
    a, b = (next(n for n in inits if f"layers.{k}." in n and "down_proj" in n) for k in (0, 1))
    wa, wb = numpy_helper.to_array(inits[a]).copy(), numpy_helper.to_array(inits[b]).copy()
    inits[a].CopyFrom(numpy_helper.from_array(wb, a))
    inits[b].CopyFrom(numpy_helper.from_array(wa, b))


def test_a_correct_export_passes_and_planted_wrong_ones_fail(exported, tmp_path):
    recipe, run = exported
    merged, folder = run / "merge" / "model", run / "export"
    good = _score(recipe, folder, merged)
    assert all(_gates(good).values()), good
    logits = onnx.load(str(folder / MODEL), load_external_data=False).graph.output[0]
    vocab = logits.type.tensor_type.shape.dim[-1].dim_value
    one = np.zeros(vocab, np.float32)
    one[3] = 0.01
    planted = {
        "scaled 0.1%": lambda m: _on_logits(m, "Mul", np.array(1.001)),
        "one logit shifted": lambda m: _on_logits(m, "Add", one),
        "layers swapped": _swap_layers,
    }
    for name, edit in planted.items():
        bad = _score(recipe, _planted(folder, tmp_path / name.replace(" ", "_"), edit), merged)
        assert not _gates(bad)["max_rel_diff"], (name, bad, good)
    # a scaled output keeps every cosine at 1: only the relative gate sees it
    scaled = _score(recipe, tmp_path / "scaled_0.1%", merged)
    assert _gates(scaled)["min_cosine"] and not _gates(scaled)["max_rel_diff"], scaled


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # its perplexity: inf
def test_a_model_with_large_logits_passes_the_relative_gate(exported, tmp_path):
    """The same model with its final norm scaled 3000x (logits 3000x larger, a correct export of it): its float
    error grows with the logits, past the old absolute default (1e-4), while the relative gate holds."""
    import torch
    from transformers import AutoModelForCausalLM

    recipe, run = exported
    big = tmp_path / "big"
    model = AutoModelForCausalLM.from_pretrained(run / "merge" / "model", dtype=torch.float32)
    with torch.no_grad():
        model.model.norm.weight.mul_(3000.0)
    model.save_pretrained(big)
    for f in (run / "merge" / "model").iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy2(f, big / f.name)
    folder = tmp_path / "big-onnx"
    folder.mkdir()
    build_genai(big, folder, "fp32")
    m = _score(recipe, folder, big)
    assert m["max_abs_diff"] > 1e-4, m  # the old default would fail this correct export
    assert all(_gates(m).values()), m
    assert not _gates(m, fp32_max_abs_diff=1e-4)["max_abs_diff"]  # a recipe that bounds it still can
