"""onnxruntime-genai's model builder, run as edgetune runs it, and the one graph edit edgetune makes to its
output (a float16 token-embedding table)."""

from __future__ import annotations

from pathlib import Path

from edgetune.core.errors import EdgetuneError

MODEL_NAME = "model.onnx"  # the builder's output file name


def build_genai(merged: Path, out: Path, precision: str, extra: dict | None = None) -> None:
    """Run onnxruntime-genai's model builder on a transformers folder; raise EdgetuneError with its last words."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(dir=out) as cache:
        cmd = [
            sys.executable,
            "-m",
            "onnxruntime_genai.models.builder",
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
        if extra:
            cmd += ["--extra_options", *[f"{k}={v}" for k, v in extra.items()]]
        done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not (out / MODEL_NAME).exists():
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise EdgetuneError(f"onnxruntime-genai model builder failed ({precision}): {tail[:400]}")


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
    data = path.with_name(path.name + ".data")
    path.unlink()
    data.unlink(missing_ok=True)
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location=data.name)
    return True
