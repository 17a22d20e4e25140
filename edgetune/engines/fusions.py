"""ONNX Runtime's transformer fusions for an exported encoder, called directly (onnxruntime.transformers.optimizer),
with the options edgetune has always used: graph level 1 (portable, no CPU-layout nodes), Attention, Gelu/BiasGelu
and LayerNormalization fused; SkipLayerNormalization left unfused (measured slower than Add + LayerNormalization
on CPU, see edgetune/runtime/ort.py) and EmbedLayerNormalization off, as optimum-onnx's ORTOptimizer set them
before. Called directly, it serves every BERT-like encoder ONNX Runtime's "bert" fusions match, not only the
families optimum's wrapper lists (RoFormer, ConvBERT and MobileBERT are missing there)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from edgetune.core.errors import EdgetuneError
from edgetune.engines.onnxfile import quiet

# the fused and plain operators the report lists
REPORTED = (
    "Attention",
    "MultiHeadAttention",
    "EmbedLayerNormalization",
    "BiasGelu",
    "FastGelu",
    "Gelu",
    "SkipLayerNormalization",
    "LayerNormalization",
)


def attention_shape(config: Any) -> tuple[int, int]:
    """(heads, attention width) of an encoder config, for the attention fusion; 0 lets ONNX Runtime read them
    from the graph. MobileBERT's attention runs at true_hidden_size, DistilBERT names them n_heads and dim."""
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", None) or 0
    width = (
        getattr(config, "true_hidden_size", None) or getattr(config, "hidden_size", None) or getattr(config, "dim", 0)
    )
    return int(heads), int(width or 0)


def optimize_encoder(src: Path, dst: Path, config: Any, skip_layer_norm: bool = False) -> dict[str, int]:
    """Fuse the encoder graph `src` into `dst`; the count of each reported operator in the result.
    `skip_layer_norm`: fuse SkipLayerNormalization too (benchmarks/int8_variants.py measures both)."""
    import onnx
    from onnx.external_data_helper import uses_external_data
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    options.enable_skip_layer_norm = skip_layer_norm
    options.enable_bias_skip_layer_norm = skip_layer_norm
    options.enable_embed_layer_norm = False
    heads, width = attention_shape(config)
    external = any(uses_external_data(t) for t in onnx.load(src, load_external_data=False).graph.initializer)
    with quiet():
        model = optimize_model(str(src), "bert", heads, width, opt_level=1, optimization_options=options, use_gpu=False)
        model.save_model_to_file(str(dst), use_external_data_format=external, all_tensors_to_one_file=True)
    if not dst.exists():
        raise EdgetuneError(f"export: ONNX Runtime optimizer wrote no {dst.name} into {dst.parent}")
    ops = Counter(n.op_type for n in onnx.load(dst, load_external_data=False).graph.node)
    return {k: v for k, v in ops.items() if k in REPORTED}
