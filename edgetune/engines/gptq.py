"""GPTQ rounding for decoders, by Olive's Gptq pass (olive-ai, the `gptq` extra): weights rounded to int4 in
blocks, each block's rounding error compensated in the weights not yet rounded, using the layer inputs' second
moments (the Hessian) on calibration text. The result is Olive's quantized checkpoint (uint8-packed int4 with
scales and zero points per block; `quantization_config.quant_method: olive`), which onnxruntime-genai's model
builder packs into MatMulNBits as it is, quantizing what the checkpoint left in float (lm_head) as told.

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


def gptq(model: Path, out: Path, block: int, texts: list[str], seq_len: int, int8: list[str]) -> Path:
    """Round the linears of the transformers folder `model` by GPTQ in blocks of `block` (asymmetric: the model
    builder reads Olive's zero points), the modules named in `int8` at 8 bits, calibrated on `texts` (joined and
    cut into sequences of `seq_len` tokens). Returns the quantized transformers folder (under `out`)."""
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
                "sym": False,
                "lm_head": False,
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
    return result
