"""Encoder export without optimum-onnx (issue 21): torch's TorchScript exporter called by edgetune gives the graph
optimum-onnx's main_export gives (the same operators after ONNX Runtime's fusions, the same inputs in the same
order) and PyTorch's logits at other batch and sequence sizes than the example's."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from archs import make_tiny
from transformers import AutoConfig

from edgetune.engines.encoder_export import EXAMPLE_BATCH, EXAMPLE_SEQ, export_encoder
from edgetune.engines.fusions import optimize_encoder
from edgetune.tasks import get_task

LABELS = ["lights", "music", "door"]
TEXTS = ["turn on the lights", "play jazz", "lock the front door and the garage now please", "radio"]


def _graph(path):
    g = onnx.load(path).graph
    return Counter(n.op_type for n in g.node), [i.name for i in g.input]


@pytest.mark.parametrize("arch", ["bert", "distilbert-bert-tok", "roberta", "deberta-v2"])
def test_torch_export_matches_optimum_and_pytorch(tmp_path, arch):
    from optimum.exporters.onnx import main_export

    folder = make_tiny(arch, tmp_path / "models")
    task = get_task("classification")
    tok, model = task.load_tokenizer(folder), task.load_model(folder, LABELS)
    config = AutoConfig.from_pretrained(folder)
    export_encoder(model, tok.model_input_names, tmp_path / "raw.onnx", 17)
    ours = optimize_encoder(tmp_path / "raw.onnx", tmp_path / "ours.onnx", config)
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
