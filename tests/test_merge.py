"""The merge stage proves the merge layer by layer in float64 (issue 20): a wrong merge fails the gate and names
the layer; the merged model is saved in shards, in float32, from a base loaded in its checkpoint's dtype."""

from __future__ import annotations

import json

import pytest
from conftest import edit_recipe

from edgetune.core.errors import CheckFailed
from edgetune.core.recipe import load_recipe
from edgetune.pipeline import build


def _plant(monkeypatch, layer_class) -> None:
    """Make peft's merge of `layer_class` add a small error to the merged weight."""
    merge = layer_class.merge

    def wrong(self, *args, **kwargs):
        merge(self, *args, **kwargs)
        self.get_base_layer().weight.data[0, 0] += 1e-3

    monkeypatch.setattr(layer_class, "merge", wrong)


@pytest.mark.parametrize("method", ["lora", "dora", "ia3"])
def test_a_wrong_merge_fails_the_gate_and_names_the_layer(tiny_recipe, tmp_path, monkeypatch, method):
    from peft.tuners.ia3.layer import Linear as IA3Linear
    from peft.tuners.lora.layer import Linear as LoraLinear

    edit_recipe(tiny_recipe, lora={"method": method, "target_modules": ["query", "value"]}, training={"epochs": 1})
    run = tmp_path / "run"
    build(load_recipe(tiny_recipe), run, until="finetune", progress=False)
    _plant(monkeypatch, IA3Linear if method == "ia3" else LoraLinear)
    with pytest.raises(
        CheckFailed, match=r"merge: max \|merged - adapter\| = \S+ > 1e-05 on \d+ eval rows \(layer \S+, float64\)"
    ):
        build(load_recipe(tiny_recipe), run, until="merge", progress=False)


def test_merged_model_is_float32_in_shards_from_a_bf16_base(tiny_chat_recipe, tiny_llama, tmp_path, monkeypatch):
    """A bf16 checkpoint: merge loads it as bf16 (one copy, half the size), computes in float32 and saves float32,
    in shards no larger than merge.SHARD."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    from edgetune.stages import merge as merge_stage

    bf16 = tmp_path / "bf16"
    shutil.copytree(tiny_llama, bf16)
    AutoModelForCausalLM.from_pretrained(tiny_llama).to(torch.bfloat16).save_pretrained(bf16)
    edit_recipe(tiny_chat_recipe, model={"source": str(bf16)}, training={"epochs": 1})
    monkeypatch.setattr(merge_stage, "SHARD", "100KB")  # the tiny model in several shards
    run = tmp_path / "run"
    build(load_recipe(tiny_chat_recipe), run, until="merge", progress=False)
    folder = run / "merge" / "model"
    shards = sorted(folder.glob("*.safetensors"))
    assert len(shards) > 1 and (folder / "model.safetensors.index.json").is_file()
    config = json.loads((folder / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == "float32"
    record = json.loads((run / "manifest.json").read_text())["stages"]["merge"]["record"]
    assert record["merge_max_abs_diff"] <= 1e-10, record  # float64, layer by layer: only rounding is left
    assert record["fp32_max_abs_diff"] <= 1e-4, record
