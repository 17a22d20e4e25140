"""onnxruntime-genai's model builder, run as edgetune runs it, the end tokens edgetune adds to the
genai_config.json it writes, and the one graph edit edgetune makes to its output (a float16 token-embedding
table)."""

from __future__ import annotations

import json
from pathlib import Path

from edgetune.core.errors import EdgetuneError

MODEL_NAME = "model.onnx"  # the builder's output file name


# What edgetune asks of every build (and stage keys include, so a change rebuilds):
# - prune_lm_head: prefill computes the lm_head for the last prompt position only (as llama.cpp does), not a
#   [prompt length, vocab] matrix of which generation reads one row. The tied 49152x576 head of SmolLM2-135M is
#   a fifth of its weights, so this is about a fifth of prefill's work. Logits at every position (verify's
#   perplexity) then come one decoding step each (edgetune.runtime.genai.GenaiLM.logits).
BUILD_OPTIONS = {"prune_lm_head": "true"}


def build_genai(
    merged: Path,
    out: Path,
    precision: str,
    extra: dict | None = None,
    plain: bool = False,
    target: dict | None = None,
) -> None:
    """Run onnxruntime-genai's model builder on a transformers folder; raise EdgetuneError with its last words.
    `extra`: builder options on top of BUILD_OPTIONS (`plain`: none but `extra`, for comparisons); `target`: the
    builder's structured target options (0.18 and later: per-node quantization overrides)."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(dir=out) as cache:
        cmd = [
            sys.executable,
            "-m",
            "edgetune.engines.builder",  # the builder's own command line, holding one copy of the weights
            "-i",
            str(merged),
            "-o",
            str(out),
            "-p",
            precision,
            "-e",
            "cpu",
            "-c",
            cache,
        ]
        options = {**({} if plain else BUILD_OPTIONS), **(extra or {})}
        if options:
            cmd += ["--extra_options", *[f"{k}={v}" for k, v in options.items()]]
        if target:
            cmd += ["--builder_config_version", "2", "--target_options", json.dumps(target)]
        done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not (out / MODEL_NAME).exists():
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise EdgetuneError(f"onnxruntime-genai model builder failed ({precision}): {tail[:400]}")
    stop_at_turn_end(out)
    window_within_context(out)


def window_within_context(folder: Path) -> bool:
    """Drop a sliding window no shorter than the context (Gemma 2's 4096 in a model of 256 positions): it
    changes nothing any sequence can see, and the 0.18 builder writes it into GroupQueryAttention, whose KV cache
    onnxruntime then refuses to make shorter than the window ("KV cache capacity (50) must be at least
    local_window_size (4096)"). True when it did; a window inside the context stays."""
    import json

    import onnx

    path = folder / "genai_config.json"
    cfg = json.loads(path.read_text())
    decoder = cfg["model"]["decoder"]
    window = (decoder.get("sliding_window") or {}).get("window_size")
    context = cfg["model"].get("context_length")
    if not window or not context or window < context:
        return False
    model = onnx.load(folder / MODEL_NAME, load_external_data=False)  # the weights stay where they are
    for node in (n for n in model.graph.node if n.op_type == "GroupQueryAttention"):
        for a in list(node.attribute):
            if a.name == "local_window_size":
                a.i = -1
            elif a.name == "sliding_window_cache":  # a cache sized to the window: none without one
                node.attribute.remove(a)
    onnx.save(model, folder / MODEL_NAME)
    del decoder["sliding_window"]
    path.write_text(json.dumps(cfg, indent=4))
    return True


def stop_at_turn_end(folder: Path) -> None:
    """Put the tokens edgetune's decoding stops at (runtime/decoding.py end_ids: the chat template's end of turn,
    <|im_end|>) into genai_config.json's eos_token_id beside the model's own end token, so that onnxruntime-genai
    (the app, `edgetune chat`) ends the reply there too. The builder takes only the model's end-of-text token,
    which a base model given a chat template (dataset.chat_template: gemma, llama3) never emits after a turn."""
    import json

    from edgetune.core.lines import auto_tokenizer
    from edgetune.runtime.decoding import end_ids

    path = folder / "genai_config.json"
    cfg = json.loads(path.read_text())
    eos = cfg["model"].get("eos_token_id")
    have = [*eos] if isinstance(eos, list) else [eos] if eos is not None else []
    more = sorted(end_ids(auto_tokenizer(folder)) - set(have))
    if more:
        cfg["model"]["eos_token_id"] = have + more
        path.write_text(json.dumps(cfg, indent=4))


def _one_copy_of_the_weights() -> None:
    """Make the model builder's int4/int8 step hold one copy of the weights instead of two.

    onnxruntime-genai 0.15's builder makes the float graph with initializers that are views of the PyTorch
    weights, then quantizes a protobuf copy of the whole graph (`ir.to_proto`) while the PyTorch model is still
    alive: twice the float32 model, plus the quantizer's work. Here the float graph is saved to a file first, one
    tensor at a time, its initializers (and with them the PyTorch weights) dropped, and the file loaded back as that
    protobuf: the quantizer gets the same graph, and the same bytes come out (measured: README "What a build
    costs")."""
    import gc
    import os
    import tempfile

    import onnx
    import onnx_ir as ir
    import onnxruntime_genai.models  # noqa: F401 - puts the builder's own folder on sys.path
    from builders import base  # type: ignore[import-not-found]  # the builder imports its modules this way

    to_nbits = base.Model.to_nbits
    to_proto = ir.to_proto

    def streamed(self):  # type: ignore[no-untyped-def]
        with tempfile.TemporaryDirectory(dir=self.cache_dir) as d:
            path = os.path.join(d, "float.onnx")
            ir.save(self.model, path, external_data="float.onnx.data", size_threshold_bytes=0)
            # the 0.18 builder checks that each node named in a per-node override (quantize.auto's int8 layers)
            # still has its weight: those few are kept
            named = getattr(self, "exact_quant_override_names", set())
            keep = {v.name for n in self.model.graph if n.name in named for v in n.inputs if v is not None}
            for name, value in self.model.graph.initializers.items():
                if name not in keep:
                    value.const_value = None
            gc.collect()
            proto = onnx.load(path)
        ir.to_proto = lambda model: proto if model is self.model else to_proto(model)
        try:
            return to_nbits(self)
        finally:
            ir.to_proto = to_proto

    base.Model.to_nbits = streamed


def _tokenizers_of_either_line() -> None:
    """Let the builder of the transformers 4.57 line (0.15.2) read a tokenizer that transformers 5 saved, as
    edgetune does (core/lines.py): a merged model from a run directory built on the other line."""
    import transformers

    from edgetune.core.lines import fast_tokenizer_kwargs

    original = transformers.AutoTokenizer.from_pretrained

    def load(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        fast = fast_tokenizer_kwargs(path) if isinstance(path, (str, Path)) and not args else None
        if fast is None:
            return original(path, *args, **kwargs)
        return transformers.PreTrainedTokenizerFast.from_pretrained(path, **{**fast, **kwargs})

    transformers.AutoTokenizer.from_pretrained = load


def half_embeddings(path: Path) -> bool:
    """Store a decoder's float32 token-embedding table (the Gather on `input_ids`) in float16, with a Cast back
    to float32 after the lookup. Halves the table (113 MB -> 57 MB for SmolLM2-135M); held-out JSON exact match
    unchanged in our measurement. Returns False (and leaves the file alone) when the graph has no such table, when
    the table feeds anything else too, or when a value would not fit in float16."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(path)
    graph = model.graph
    tables = {t.name: t for t in graph.initializer if t.data_type == TensorProto.FLOAT and len(t.dims) == 2}
    gather = next(
        (n for n in graph.node if n.op_type == "Gather" and n.input[0] in tables and n.input[1] == "input_ids"), None
    )
    if gather is None or sum(gather.input[0] in n.input for n in graph.node) != 1:
        return False
    table = tables[gather.input[0]]
    values = numpy_helper.to_array(table)
    if not np.isfinite(values).all() or np.abs(values).max() > np.finfo(np.float16).max:
        return False
    half = numpy_helper.from_array(values.astype(np.float16), f"{table.name}.fp16")
    graph.initializer.remove(table)
    graph.initializer.append(half)
    out = gather.output[0]
    gather.input[0], gather.output[0] = half.name, f"{out}.fp16"
    cast = helper.make_node("Cast", [gather.output[0]], [out], name=f"{gather.name}/CastToFloat", to=TensorProto.FLOAT)
    graph.node.insert(list(graph.node).index(gather) + 1, cast)
    _resave(model, path)
    return True


def drop_default_zero_points(path: Path) -> int:
    """Drop the zero-point input of every MatMulNBits whose zero points all equal the operator's default,
    2^(bits-1) (8 for int4, 128 for int8): the same product (the operator takes that default when the input is
    absent), computed by the kernels' symmetric path. The builder writes such zero points when it packs a
    symmetric GPTQ checkpoint's q/k/v into one MatMul (engines.gptq.gptq fills them in, since the builder cannot
    concatenate absent ones). Returns how many nodes changed; leaves the file alone when none does."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(path)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    changed = 0
    for node in graph.node:
        if node.op_type != "MatMulNBits" or len(node.input) < 4 or node.input[3] not in inits:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        bits, k, n, block = attrs.get("bits", 4), attrs["K"], attrs["N"], attrs["block_size"]
        blocks = -(-k // block)
        packed = numpy_helper.to_array(inits[node.input[3]])
        if packed.dtype != np.uint8:  # zero points in the scales' float type: not the packed default form
            continue
        if bits == 4:
            rows = packed.reshape(n, -1)
            values = np.stack([rows & 0x0F, rows >> 4], axis=-1).reshape(n, -1)[:, :blocks]
        elif bits == 8:
            values = packed.reshape(n, -1)[:, :blocks]
        else:
            continue
        if not (values == 1 << (bits - 1)).all():
            continue
        name = node.input[3]
        if len(node.input) == 4:
            del node.input[3]
        else:
            node.input[3] = ""
        if not any(name in other.input for other in graph.node):
            graph.initializer.remove(inits.pop(name))
        changed += 1
    if changed:
        _resave(model, path)
    return changed


def _resave(model, path: Path) -> None:
    """Write `model` (weights loaded in memory) over the builder's `path` and its `path.data`: first into a
    scratch folder beside it, then moved in place, so a failed save leaves the old pair whole."""
    import shutil

    import onnx

    data = path.with_name(path.name + ".data")
    scratch = path.with_name(f".{path.name}.saving")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    try:
        onnx.save(
            model, scratch / path.name, save_as_external_data=True, all_tensors_to_one_file=True, location=data.name
        )
        if (scratch / data.name).exists():
            (scratch / data.name).replace(data)
        else:  # every tensor under onnx's external-data threshold: all of them inside the graph now
            data.unlink(missing_ok=True)
        (scratch / path.name).replace(path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _rope_of_either_line() -> None:
    """Let the builder of the transformers 4.57 line read the rotary settings of a config transformers 5 saved
    (core/lines.legacy_rope): without it the 0.15.2 builder computes its rotary caches from 4.x's default base."""
    import transformers

    from edgetune.core.lines import legacy_rope

    original = transformers.AutoConfig.from_pretrained

    def load(*args, **kwargs):
        out = original(*args, **kwargs)
        return (legacy_rope(out[0]), *out[1:]) if isinstance(out, tuple) else legacy_rope(out)

    transformers.AutoConfig.from_pretrained = load


if __name__ == "__main__":  # build_genai's subprocess: the builder's command line, patched
    import runpy

    _one_copy_of_the_weights()
    _tokenizers_of_either_line()
    _rope_of_either_line()
    runpy.run_module("onnxruntime_genai.models.builder", run_name="__main__", alter_sys=True)
