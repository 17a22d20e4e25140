"""An encoder classifier to ONNX with torch's own exporter, without optimum-onnx: the TorchScript exporter
(`dynamo=False`), as optimum-onnx 0.1.0 calls it, with dynamic batch and sequence axes. The TorchScript graph is
kept because ONNX Runtime's transformer optimizer fuses Attention on it but not on the dynamo exporter's graph
(measured on all-MiniLM-L6-v2 in a transformers 5.25 / torch 2.13 venv: Attention x6 from TorchScript with eager
attention, x0 from dynamo; and x0 from TorchScript with transformers 5's default SDPA attention, so the model is
switched to eager attention first). The export stage's exporter where optimum-onnx is not installed
(core/lines.py); tests/test_encoder_export.py holds it to optimum-onnx's graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# example sizes: >= 2, so that neither axis is specialised to a constant
EXAMPLE_BATCH, EXAMPLE_SEQ = 2, 16


def export_encoder(model: Any, input_names: list[str], out: Path, opset: int) -> None:
    """Write `model` (a *ForSequenceClassification in eval mode) to `out`: inputs `input_names` (int64
    [batch, sequence]), output `logits` [batch, labels]."""
    import torch

    from edgetune.engines.onnxfile import quiet

    # the graph's input order is optimum-onnx's (which apps and the package stage have seen): ids, mask, types
    input_names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in input_names]
    ids = torch.full((EXAMPLE_BATCH, EXAMPLE_SEQ), 5, dtype=torch.long)
    examples = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "token_type_ids": torch.zeros_like(ids),
    }
    args = {n: examples[n] for n in input_names}
    axes = {n: {0: "batch_size", 1: "sequence_length"} for n in input_names}
    axes["logits"] = {0: "batch_size"}

    class Logits(torch.nn.Module):  # keyword inputs in `input_names` order, the logits tensor out
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: Any) -> Any:
            return self.model(**dict(zip(input_names, tensors))).logits

    with quiet(), torch.no_grad():
        try:  # transformers 5: SDPA attention traces into a graph ONNX Runtime's optimizer does not fuse
            model.set_attn_implementation("eager")
        except (ValueError, AttributeError, NotImplementedError):
            pass  # transformers 4.57's BERT-style classes trace their SDPA path as the fusions expect
        torch.onnx.export(
            Logits().eval(),
            tuple(args.values()),
            str(out),
            input_names=list(input_names),
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
