"""The on-device classifier graph: the tokenizer inside the graph (onnxruntime-extensions' BertTokenizer), and
the ORT-format conversion for arm64."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgetune.core.errors import EdgetuneError
from edgetune.engines.onnxfile import quiet

# Domains of ONNX Runtime's layout-specific (x86 NCHWc) kernels: never in a model meant for a phone.
X86_ONLY_DOMAINS = {"com.microsoft.nchwc"}


# Tokenizers the package stage can put inside the graph (onnxruntime-extensions has their ops).
EMBEDDABLE_TOKENIZERS = ("BertTokenizerFast", "BertTokenizer")


def with_tokenizer(model: Any, tokenizer: Any, max_length: int) -> Any:
    """`model` (inputs input_ids, attention_mask[, token_type_ids]) with a BertTokenizer node in front of it:
    the result takes `text`, a 1-D string tensor holding one text."""
    from onnx import TensorProto, helper

    if type(tokenizer).__name__ not in EMBEDDABLE_TOKENIZERS:
        raise EdgetuneError(
            f"package: only BERT WordPiece tokenizers can be embedded in the graph so far, "
            f"not {type(tokenizer).__name__}"
        )
    from onnxruntime_extensions import gen_processing_models

    with quiet():
        pre, _ = gen_processing_models(tokenizer, pre_kwargs={})
    node = pre.graph.node[0]
    # gen_processing_models maps strip_accents=None to 0, but for BERT None means "strip when lowercasing".
    norm = (
        json.loads(tokenizer.backend_tokenizer.normalizer.__getstate__())
        if hasattr(tokenizer, "backend_tokenizer")
        else {}
    )
    strip = norm.get("strip_accents")
    strip = norm.get("lowercase", False) if strip is None else strip
    attrs = {a.name: a for a in node.attribute}
    if "strip_accents" in attrs:
        attrs["strip_accents"].i = int(bool(strip))
    else:
        node.attribute.append(helper.make_attribute("strip_accents", int(bool(strip))))
    node.attribute.append(helper.make_attribute("max_length", max_length))
    names = {i.name for i in model.graph.input}
    needed = {"input_ids", "attention_mask"}
    if not needed <= names or names - needed - {"token_type_ids"}:
        raise EdgetuneError(
            f"package: the model's inputs are {sorted(names)}; expected input_ids, attention_mask "
            f"and optionally token_type_ids"
        )
    g = model.graph
    tok_out = {o: f"tokenizer/{o}" for o in ("input_ids", "token_type_ids", "attention_mask", "offset_mapping")}
    new_node = helper.make_node(
        node.op_type, ["text"], [tok_out[o] for o in node.output], name="tokenizer", domain=node.domain
    )
    new_node.attribute.extend(node.attribute)
    axes = helper.make_tensor("tokenizer/axes0", TensorProto.INT64, [1], [0])
    front = [new_node] + [
        helper.make_node("Unsqueeze", [tok_out[n], axes.name], [n], name=f"tokenizer/unsqueeze_{n}")
        for n in sorted(names)
    ]
    nodes = front + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.append(axes)
    del g.input[:]
    g.input.append(helper.make_tensor_value_info("text", TensorProto.STRING, [1]))
    used = {n.domain or "" for n in g.node}
    bad = used & X86_ONLY_DOMAINS
    if bad:
        raise EdgetuneError(
            f"package: the model uses x86-only ops ({', '.join(sorted(bad))}); export it without layout optimizations"
        )
    keep = [o for o in model.opset_import if (o.domain or "") in used | {""}]
    del model.opset_import[:]
    model.opset_import.extend(keep + [helper.make_opsetid(node.domain, 1)])
    return model


def to_ort_format(path: Path) -> Path:
    """Convert to ORT format with arm64 as the target platform (no x86-specific optimizations)."""
    import subprocess
    import sys

    from onnxruntime_extensions import get_library_path

    cmd = [
        sys.executable,
        "-m",
        "onnxruntime.tools.convert_onnx_models_to_ort",
        str(path),
        "--target_platform",
        "arm",
        "--optimization_style",
        "Fixed",
        "--custom_op_library",
        get_library_path(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    ort_path = path.with_suffix(".ort")
    if proc.returncode != 0 or not ort_path.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise EdgetuneError(f"package: ORT format conversion failed: {tail[0][:200]}")
    for extra in path.parent.glob("*.required_operators*.config"):
        extra.unlink()
    return ort_path
