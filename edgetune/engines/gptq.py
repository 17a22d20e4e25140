"""GPTQ rounding for decoders, by Olive's Gptq pass (olive-ai, the `gptq` extra): weights rounded to int4 in
blocks, each block's rounding error compensated in the weights not yet rounded, using the layer inputs' second
moments (the Hessian) on calibration text. The result is Olive's quantized checkpoint (uint8-packed int4 with
a scale per block, symmetric; `quantization_config.quant_method: olive`), which onnxruntime-genai's model builder
packs into MatMulNBits as it is, quantizing what the checkpoint left in float (an int8 lm_head) as told.
Symmetric because MatMulNBits without zero points runs the faster kernels (measured: int4_auto.ZERO_POINTS)
while asymmetric GPTQ kept no more (SmolLM2-135M, b32 + lm_head int8 + 4 sensitive layers int8: held-out exact
match 0.783 symmetric, 0.775 asymmetric).

Olive is used rather than a GPTQ written here: its pass runs on CPU in plain PyTorch (2 cores: about 3 min for
SmolLM2-135M on 384 chats) and writes a checkpoint format the builder reads. It runs in a child process (its own
logging, cache and memory; the parent holds no second copy of the weights)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from edgetune.core.errors import EdgetuneError

CALIBRATION_SAMPLES = 128  # sequences of calibration text, as GPTQ's paper and Olive's defaults use


def available() -> bool:
    """Olive is installed (pip install 'edgetune[gptq]')."""
    return importlib.util.find_spec("olive") is not None


def layer_linears(model: Path, layers: list[int]) -> list[str]:
    """The module names of decoder layers' linears (2-D weights under `model.layers.N.`) in a transformers
    folder's safetensors, read from the file headers (no weights loaded)."""
    import re

    from safetensors import safe_open

    out = []
    for f in sorted(model.glob("*.safetensors")):
        with safe_open(f, "pt") as st:
            for key in st.keys():  # noqa: SIM118 (safe_open is not a mapping)
                m = re.match(r"(.*\.layers\.(\d+)\..*)\.weight$", key)
                if m and int(m.group(2)) in layers and len(st.get_slice(key).get_shape()) == 2:
                    out.append(m.group(1))
    return sorted(out)


def mixed_linears(model: Path) -> list[str]:
    """The linears the model builder's 'mixed_layers' preset holds in int8, named as in the transformers folder
    `model`, for a GPTQ layout to hold the same ones (the builder applies its preset to its own nodes only).
    The rule is llama.cpp's, as onnxruntime-genai 0.18's builder writes it (builders/base.py,
    make_matmul_mixed_precision): q/k/v and down_proj of the first and last eighth of the layers and of every
    third layer between."""
    n = json.loads((model / "config.json").read_text())["num_hidden_layers"]
    layers = [i for i in range(n) if i < n / 8 or i >= 7 * n / 8 or (i - round(n / 8)) % 3 == 2]
    return [
        m for m in layer_linears(model, layers) if m.rsplit(".", 1)[-1] in ("q_proj", "k_proj", "v_proj", "down_proj")
    ]


def gptq(
    model: Path,
    out: Path,
    block: int,
    texts: list[str],
    seq_len: int,
    int8: list[str],
    lm_head: bool = False,
) -> Path:
    """Round the linears of the transformers folder `model` by GPTQ in blocks of `block`, the modules named in
    `int8` at 8 bits, and lm_head too when `lm_head` (else it stays float, for the builder to quantize),
    calibrated on `texts` (joined and cut into sequences of `seq_len` tokens). Symmetric: no zero points (the
    kernels' faster path; the midpoint is filled in for the builder: fill_symmetric_zero_points). Returns the
    quantized transformers folder (under `out`)."""
    out.mkdir(parents=True, exist_ok=True)
    data = out / "calibration.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    config = {
        "input_model": {"type": "HfModel", "model_path": str(model)},
        "data_configs": [
            {
                "name": "calibration",
                "type": "HuggingfaceContainer",
                "load_dataset_config": {"data_name": "json", "data_files": str(data), "split": "train"},
                "pre_process_data_config": {
                    "strategy": "join",
                    "text_cols": ["text"],
                    "max_seq_len": seq_len,
                    "max_samples": CALIBRATION_SAMPLES,
                    "add_special_tokens": False,  # the texts carry the chat template's own tokens
                    "joiner": "\n",
                },
            }
        ],
        "passes": {
            "gptq": {
                "type": "Gptq",
                "bits": 4,
                "group_size": block,
                "sym": True,
                "lm_head": lm_head,
                "data_config": "calibration",
                "overrides": {name: {"bits": 8} for name in int8} or None,
            }
        },
        "output_dir": str(out / "olive"),
        "cache_dir": str(out / "olive-cache"),
        "log_severity_level": 3,
    }
    spec = out / "olive.json"
    spec.write_text(json.dumps(config, indent=1))
    with tempfile.TemporaryDirectory(dir=out) as cwd:  # Olive writes beside its working directory too
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                "import json, sys; from olive.workflows import run; run(json.load(open(sys.argv[1])))",
                str(spec),
            ],
            capture_output=True,
            text=True,
            cwd=cwd,
        )
    result = out / "olive" / "model"
    if done.returncode != 0 or not (result / "config.json").is_file():
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise EdgetuneError(f"GPTQ (Olive) failed: {tail[:400]}")
    fill_symmetric_zero_points(result)
    return result


def fill_symmetric_zero_points(model: Path) -> int:
    """Write the implicit zero points (the midpoint, 2^(bits-1)) of a symmetric Olive checkpoint into it: Olive
    stores none when symmetric, and the model builder concatenates q/k/v's zero points to pack them into one
    MatMul (onnxruntime-genai 0.18: `TypeError: expected Tensor as element 0 in argument 0, but got NoneType`).
    The builder's file then carries constant zero points, which `builder.drop_default_zero_points` removes again.
    Returns how many modules were filled."""
    import torch
    from safetensors.torch import load_file, save_file

    config = json.loads((model / "config.json").read_text())["quantization_config"]
    overrides = config.get("overrides") or {}
    filled = 0
    for f in sorted(model.glob("*.safetensors")):
        tensors = load_file(f)
        before = filled
        for key in [k for k in tensors if k.endswith(".qweight")]:
            module = key[: -len(".qweight")]
            if f"{module}.qzeros" in tensors:
                continue
            bits = (overrides.get(module) or {}).get("bits", config["bits"])
            rows, groups = tensors[f"{module}.scales"].shape
            per_byte = 8 // bits
            midpoint = 1 << (bits - 1)
            byte = sum(midpoint << (bits * i) for i in range(per_byte))
            shape = (rows, -(-groups // per_byte))
            tensors[f"{module}.qzeros"] = torch.full(shape, byte, dtype=torch.uint8)
            filled += 1
        if filled > before:
            save_file(tensors, f, metadata={"format": "pt"})
    return filled
