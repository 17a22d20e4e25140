"""Encoder export without optimum-onnx (issue 21): torch's TorchScript exporter called by edgetune gives the graph
optimum-onnx's main_export gives (the same operators after ONNX Runtime's fusions, the same inputs in the same
order) and PyTorch's logits at other batch and sequence sizes than the example's. On the transformers 4.57 line
optimum-onnx is installed and asked live; on the transformers 5 line, which it does not install on, the fusions
and inputs it gave there are the reference."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from archs import make_tiny
from transformers import AutoConfig

from edgetune.core.lines import OPTIMUM, encoder_exporter
from edgetune.engines.encoder_export import EXAMPLE_BATCH, EXAMPLE_SEQ, export_encoder
from edgetune.engines.fusions import optimize_encoder
from edgetune.tasks import get_task

pytestmark = pytest.mark.both_lines

LABELS = ["lights", "music", "door"]
# ONNX Runtime's fusions of optimum-onnx 0.1.0's export of each tiny model, and its inputs (transformers 4.57.6)
BERT_FUSED = {"LayerNormalization": 5, "Attention": 2, "BiasGelu": 2}
OPTIMUM_GAVE = {
    "bert": (BERT_FUSED, ["input_ids", "attention_mask", "token_type_ids"]),
    "distilbert-bert-tok": (BERT_FUSED, ["input_ids", "attention_mask"]),
    "roberta": (BERT_FUSED, ["input_ids", "attention_mask"]),
    "deberta-v2": ({"LayerNormalization": 5, "BiasGelu": 2, "Gelu": 1}, ["input_ids", "attention_mask"]),
}
TEXTS = ["turn on the lights", "play jazz", "lock the front door and the garage now please", "radio"]


def _graph(path):
    g = onnx.load(path).graph
    return Counter(n.op_type for n in g.node), [i.name for i in g.input]


@pytest.mark.parametrize("arch", ["bert", "distilbert-bert-tok", "roberta", "deberta-v2"])
def test_torch_export_matches_optimum_and_pytorch(tmp_path, arch):
    folder = make_tiny(arch, tmp_path / "models")
    task = get_task("classification")
    tok, model = task.load_tokenizer(folder), task.load_model(folder, LABELS)
    config = AutoConfig.from_pretrained(folder)
    export_encoder(model, tok.model_input_names, tmp_path / "raw.onnx", 17)
    ours = optimize_encoder(tmp_path / "raw.onnx", tmp_path / "ours.onnx", config)
    fused, inputs = OPTIMUM_GAVE[arch]
    assert ours == fused and _graph(tmp_path / "ours.onnx")[1] == inputs
    if encoder_exporter() == OPTIMUM:  # the 4.57 line: optimum-onnx's own export, now
        from optimum.exporters.onnx import main_export

        model.save_pretrained(tmp_path / "merged")
        tok.save_pretrained(tmp_path / "merged")
        main_export(
            str(tmp_path / "merged"), tmp_path / "optimum", task="text-classification", opset=17, do_validation=False
        )
        theirs = optimize_encoder(tmp_path / "optimum" / "model.onnx", tmp_path / "theirs.onnx", config)
        assert ours == theirs
        assert _graph(tmp_path / "ours.onnx") == _graph(tmp_path / "theirs.onnx")
    enc = tok(TEXTS, padding=True, return_tensors="pt")  # batch 4, padded: not the example's shape
    assert tuple(enc["input_ids"].shape) != (EXAMPLE_BATCH, EXAMPLE_SEQ)
    with torch.no_grad():
        ref = model(**enc).logits.numpy()
    sess = ort.InferenceSession(str(tmp_path / "ours.onnx"))
    feeds = {i.name: enc[i.name].numpy() for i in sess.get_inputs()}  # DeBERTa-v3 without types: no such input
    got = sess.run(None, feeds)[0]
    assert np.abs(got - ref).max() < 1e-4
