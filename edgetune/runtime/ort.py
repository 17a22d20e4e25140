"""ONNX Runtime sessions configured the same way everywhere edgetune runs a model."""

from __future__ import annotations

from pathlib import Path

# Measured on a 2-core Xeon (AVX512-VNNI) with onnxruntime 1.32, all-MiniLM-L6 int8 at batch 1 x seq 32:
# the runtime SkipLayerNormalization fusion made inference slower (1.89 ms) than leaving Add + LayerNormalization
# unfused (1.55 ms). Re-measure on other hardware with benchmarks/int8_variants.py.
DISABLED_OPTIMIZERS = ["SkipLayerNormFusion"]


def ort_session(path: Path | str, threads: int = 0, custom_ops: str | None = None):
    """An InferenceSession on the CPU provider with `threads` intra-op threads (0 = onnxruntime's default) and
    `custom_ops`, a custom-op library (onnxruntime-extensions'), registered when given."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if custom_ops is not None:
        so.register_custom_ops_library(custom_ops)
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(
        str(path), so, providers=["CPUExecutionProvider"], disabled_optimizers=DISABLED_OPTIMIZERS
    )
