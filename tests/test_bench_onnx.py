"""`edgetune bench MODEL.onnx` on a graph with the tokenizer inside (onnxruntime-extensions' BertTokenizer, as the
package stage ships it): the custom-op library is registered and the model gets texts of each length."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper
from test_recipe import assert_one_line_error

from edgetune.cli import cli

MAX_LENGTH = 16


@pytest.fixture(scope="module")
def text_model(tmp_path_factory, tiny_bert) -> Path:
    """A tiny classifier over the tiny BERT's vocabulary (mean of token embeddings, then a linear layer), with
    the tiny BERT's tokenizer put in front of it by the package stage's with_tokenizer: input `text`."""
    from transformers import BertTokenizerFast

    from edgetune.packaging.graph import with_tokenizer

    tok = BertTokenizerFast.from_pretrained(tiny_bert)
    rng = np.random.default_rng(0)
    table = helper.make_tensor("table", TensorProto.FLOAT, [len(tok), 4], rng.standard_normal(len(tok) * 4))
    head = helper.make_tensor("head", TensorProto.FLOAT, [4, 3], rng.standard_normal(12))
    ids = [
        helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
        for n in ("input_ids", "attention_mask", "token_type_ids")
    ]
    nodes = [
        helper.make_node("Add", ["input_ids", "token_type_ids"], ["ids0"]),
        helper.make_node("Mul", ["ids0", "attention_mask"], ["ids"]),
        helper.make_node("Gather", ["table", "ids"], ["emb"]),
        helper.make_node("ReduceMean", ["emb"], ["pooled"], axes=[1], keepdims=0),
        helper.make_node("MatMul", ["pooled", "head"], ["logits"]),
    ]
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])
    graph = helper.make_graph(nodes, "tiny", ids, [logits], [table, head])
    model = with_tokenizer(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tok, MAX_LENGTH)
    path = tmp_path_factory.mktemp("text-model") / "model.onnx"
    onnx.save(model, path)
    return path


def _bench(path: Path, *args: str):
    return CliRunner().invoke(cli, ["bench", str(path), "--runs", "3", "--warmup", "0", "--rounds", "1", *args])


def test_bench_a_model_that_takes_text(text_model):
    r = _bench(text_model, "--seq", "8", "--seq", "64", "--threads", "1")
    assert r.exit_code == 0, r.output
    assert "is not a registered function/op" not in r.output
    rows = [ln.split() for ln in r.output.splitlines() if ln.startswith("model.onnx ")]
    # seq 64 is over the tokenizer's max_length: the model sees 16 tokens, and the table says so
    assert [int(row[1]) for row in rows] == [8, MAX_LENGTH], r.output
    assert all(float(row[2]) > 0 for row in rows)
    assert f"keeps at most {MAX_LENGTH} tokens: seq 64 is measured at {MAX_LENGTH}" in r.output


def test_texts_have_the_token_count_of_their_length(text_model, tiny_bert):
    """Each text gives the tokenizer exactly its row's number of tokens ([CLS] and [SEP] included)."""
    from transformers import BertTokenizerFast

    from edgetune.core.recipe import BenchmarkConfig
    from edgetune.engines.bench.inputs import _texts

    cfg, texts = _texts(onnx.load(text_model).graph, BenchmarkConfig(sequence_lengths=[4, 8, 12, 40]), print)
    assert cfg.sequence_lengths == [4, 8, 12, MAX_LENGTH]
    tok = BertTokenizerFast.from_pretrained(tiny_bert)
    for seq, text in texts.items():
        assert len(tok(text)["input_ids"]) == seq, (seq, text)


def test_a_text_model_takes_one_text_per_run(text_model):
    assert_one_line_error(_bench(text_model, "--batch", "4"), 2, "--batch", "one text per run")


def test_without_onnxruntime_extensions(text_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime_extensions", None)  # import fails as if not installed
    assert_one_line_error(_bench(text_model), 2, str(text_model), "BertTokenizer", "pip install onnxruntime-extensions")
