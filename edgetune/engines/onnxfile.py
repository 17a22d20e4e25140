"""Small helpers several stages share."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

from edgetune.core.artifacts import OnnxModel
from edgetune.core.data import file_sha256
from edgetune.core.errors import EdgetuneError


def describe_onnx(path: Path, precision: str, notes: dict | None = None) -> OnnxModel:
    """Record an ONNX file: hash, size (with external data), input and output names."""
    import onnx

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as e:
        raise EdgetuneError(f"{path}: not a readable ONNX model ({str(e).splitlines()[0][:120]})") from None
    external = {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}
    size = path.stat().st_size + sum((path.parent / f).stat().st_size for f in external if (path.parent / f).exists())
    return OnnxModel(
        path=path,
        precision=precision,
        sha256=file_sha256(path),
        size_bytes=size,
        inputs=[i.name for i in model.graph.input],
        outputs=[o.name for o in model.graph.output],
        notes=notes or {},
    )


@contextlib.contextmanager
def quiet():
    """Silence the chatty loggers and stdout of exporters and quantizers while they run."""
    names = ["", "optimum", "transformers", "onnxruntime", "torch.onnx"]
    old = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for n, lvl in old.items():
            logging.getLogger(n).setLevel(lvl)
