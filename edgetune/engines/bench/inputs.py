"""Benchmark inputs: token ids for an encoder, inputs made from any ONNX graph's metadata, texts for a
tokenizer inside the graph."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from edgetune.core.recipe import BenchmarkConfig

# The domain of onnxruntime-extensions' custom ops (BertTokenizer: the package stage's tokenizer inside the graph).
EXTENSIONS_DOMAIN = "ai.onnx.contrib"


# Words for a text input when the graph's tokenizer has no vocabulary to take them from.
PLAIN_WORDS = "the quick brown fox jumps over a lazy dog and then runs back home again".split()


def encoder_inputs(tokenizer: Any, batch_size: int, seq_len: int) -> dict[str, np.ndarray]:
    """Token ids of a given shape (seeded by the length), with the inputs this model's tokenizer gives it."""
    rng = np.random.default_rng(seq_len)
    vocab = int(tokenizer.vocab_size)
    ids = rng.integers(min(1000, vocab // 2), vocab, size=(batch_size, seq_len), dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    # what the tokenizer gives this model (DistilBERT, MPNet, RoBERTa take no token_type_ids)
    return {k: v for k, v in feeds.items() if k in tokenizer.model_input_names}


def _index_bounds(path: str) -> dict[str, int]:
    """For graph inputs used as indices into a weight table (token ids), the table's row count."""
    import onnx

    graph = onnx.load(path, load_external_data=False).graph
    tables = {t.name: t.dims[0] for t in graph.initializer if len(t.dims) >= 2}
    inputs = {i.name for i in graph.input}
    bounds: dict[str, int] = {}
    for node in graph.node:
        used = [x for x in node.input if x in inputs]
        rows = [tables[x] for x in node.input if x in tables]
        for name in used:
            if rows:
                bounds[name] = min(bounds.get(name, rows[0]), *rows)
    return bounds


def _generated_inputs(
    sess: Any, batch: int, seq: int, bounds: dict[str, int], texts: dict[int, str] | None = None
) -> dict[str, np.ndarray]:
    """Inputs for any ONNX model from its metadata: symbolic dims become batch, then sequence; a string input
    gets texts[seq]."""
    rng = np.random.default_rng(seq)
    feeds = {}
    for i in sess.get_inputs():
        dims, sym_seen = [], 0
        for d in i.shape:
            if isinstance(d, int) and d > 0:
                dims.append(d)
            else:
                dims.append(batch if sym_seen == 0 else seq)
                sym_seen += 1
        name = i.name.lower()
        if "int" in i.type:
            dtype = np.int64 if "int64" in i.type else np.int32
            if "mask" in name:
                feeds[i.name] = np.ones(dims, dtype=dtype)
            elif "type" in name or "position" in name:
                feeds[i.name] = np.zeros(dims, dtype=dtype)
            else:
                high = bounds.get(i.name, 100)
                feeds[i.name] = rng.integers(min(1000, high // 2), high, size=dims).astype(dtype)
        elif "bool" in i.type:
            feeds[i.name] = np.ones(dims, dtype=bool)
        elif "string" in i.type:
            text = (texts or {}).get(seq) or " ".join(PLAIN_WORDS[k % len(PLAIN_WORDS)] for k in range(seq))
            feeds[i.name] = np.full(dims, text, dtype=object)
        else:
            dtype = np.float16 if "float16" in i.type else np.float32
            feeds[i.name] = rng.standard_normal(dims).astype(dtype)
    return feeds


def _texts(graph: Any, cfg: BenchmarkConfig, log: Any) -> tuple[BenchmarkConfig, dict[int, str]]:
    """A text for each sequence length, and the config with the lengths the model sees. With a BertTokenizer in
    the graph: words its vocabulary keeps whole, as many as make that many tokens with [CLS] and [SEP], capped
    at its max_length. Otherwise: plain English words, one per token, roughly."""
    from onnx import helper

    tok = next((n for n in graph.node if n.op_type == "BertTokenizer"), None)
    attrs = {a.name: helper.get_attribute_value(a) for a in tok.attribute} if tok is not None else {}
    vocab = attrs.get("vocab_file", b"").decode("utf-8", "replace").splitlines()
    words = [w for w in vocab if re.fullmatch(r"[a-z]{2,}", w)][:64] or PLAIN_WORDS
    special = 2 if tok is not None else 0
    cap = int(attrs.get("max_length", 0))
    texts: dict[int, str] = {}
    for seq in cfg.sequence_lengths:
        n = min(seq, cap) if cap > 0 else seq
        if n != seq:
            log(f"bench: the graph's tokenizer keeps at most {cap} tokens: seq {seq} is measured at {n}")
        texts[n] = " ".join(words[k % len(words)] for k in range(max(1, n - special)))
    return cfg.model_copy(update={"sequence_lengths": list(texts)}), texts
