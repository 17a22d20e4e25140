"""The library line this environment is on, and the exporters that follow from it.

edgetune installs on two lines of the Hugging Face stack:
- **transformers 5** (the default of `pip install -e .`): onnxruntime-genai 0.18's model builder for decoders, and
  torch's own ONNX exporter plus ONNX Runtime's transformer optimizer for encoders (optimum-onnx 0.1, its newest
  release, pins transformers < 4.58).
- **transformers 4.57** (`pip install 'transformers<4.58' -e '.[optimum]'`): optimum-onnx for encoders, and
  onnxruntime-genai 0.15.2, the last builder that runs without transformers 5.

What is installed decides; nothing is configured. The names below go into stage keys, so that a run directory
built on one line rebuilds on the other only the stages whose tool changed.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import metadata, util
from pathlib import Path
from typing import Any

OPTIMUM = "optimum-onnx"
TORCH = "torch.onnx"  # torch's TorchScript exporter, called by edgetune (engines/encoder_export.py)


def version(dist: str) -> str | None:
    """The installed version of a distribution, or None."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def release(v: str | None) -> tuple[int, int]:
    """(major, minor) of a version string; (0, 0) when there is none."""
    parts = []
    for x in (v or "0").split(".")[:2]:
        digits = "".join(c for c in x if c.isdigit())
        parts.append(int(digits or 0))
    return (parts + [0])[0], (parts + [0, 0])[1]


def transformers_line(installed: str | None = None) -> str:
    """'transformers 5' or 'transformers 4': the line of transformers `installed` (default: the one installed)."""
    return f"transformers {release(installed or version('transformers'))[0]}"


@cache
def encoder_exporter() -> str:
    """OPTIMUM where optimum-onnx is installed beside a transformers it supports (< 4.58), else TORCH."""
    if release(version("transformers")) < (4, 58) and util.find_spec("optimum") is not None:
        if util.find_spec("optimum.exporters.onnx") is not None:
            return OPTIMUM
    return TORCH


def exporter_id(name: str) -> str:
    """`name` with the version of the tool behind it, as the export record names it (the key has the name only:
    a patch release of the tool does not redo exports)."""
    dist = {OPTIMUM: "optimum-onnx", TORCH: "torch"}.get(name, name)
    return f"{name} {version(dist) or '?'}"


def genai_builder_line() -> str:
    """The onnxruntime-genai release line installed, e.g. '0.18' ('0.0' when none is)."""
    major, minor = release(version("onnxruntime-genai"))
    return f"{major}.{minor}"


def auto_tokenizer(path: str | Path, **kwargs: Any) -> Any:
    """`AutoTokenizer.from_pretrained(path)`, also for a folder transformers 5 saved when 4.x loads it (see
    fast_tokenizer_kwargs), so that a run directory built on one line loads on the other."""
    import transformers

    fast = fast_tokenizer_kwargs(path)
    if fast is not None:
        return transformers.PreTrainedTokenizerFast.from_pretrained(path, **{**fast, **kwargs})
    return transformers.AutoTokenizer.from_pretrained(path, **kwargs)


def fast_tokenizer_kwargs(path: str | Path) -> dict[str, Any] | None:
    """On transformers 4.x, for a tokenizer folder transformers 5 saved: the keyword arguments with which
    PreTrainedTokenizerFast loads it (its tokenizer_config.json names the class TokenizersBackend, which 4.x lacks,
    and lists extra_special_tokens, 4.x's additional_special_tokens; tokenizer.json is the same). None otherwise."""
    import transformers

    folder = Path(path)
    if hasattr(transformers, "TokenizersBackend") or not (folder / "tokenizer.json").is_file():
        return None
    try:
        saved = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("tokenizer_class") != "TokenizersBackend":
        return None
    extra = saved.get("extra_special_tokens")
    return {"additional_special_tokens": extra, "extra_special_tokens": {}} if isinstance(extra, list) else {}


def auto_config(path: str | Path, **kwargs: Any) -> Any:
    """`AutoConfig.from_pretrained(path)`, with the rotary settings of a config transformers 5 saved put where 4.x
    reads them (legacy_rope), so that a model folder built on one line is the same model on the other."""
    import transformers

    return legacy_rope(transformers.AutoConfig.from_pretrained(path, **kwargs))


def legacy_rope(config: Any, line: str | None = None) -> Any:
    """On transformers 4.x, a config that transformers 5 saved keeps its rotary settings in `rope_parameters`, a
    key 4.x does not read: it builds the model with its class's default base (10000 for LLaMA, where SmolLM2 has
    100000) and no scaling, without a word, and the ONNX export agrees with that wrong model (measured: the chat
    recipe's merged model, trained on 5, scored 0.792 JSON exact match on 4.57 instead of 0.842). Copy them into
    the names 4.x reads: rope_theta (global_rope_theta), rope_scaling when the type is not default,
    partial_rotary_factor, and a sliding-window layer type's base (rope_local_base_freq, local_rope_theta).
    A no-op on transformers 5 (`line`: transformers_line()'s value, for tests) and where nothing is to move."""
    params = getattr(config, "rope_parameters", None)
    if (line or transformers_line()) != "transformers 4" or not isinstance(params, dict) or not params:
        return config
    nested = {k: v for k, v in params.items() if isinstance(v, dict)}
    full = nested.get("full_attention", {}) if nested else params
    for name in ("rope_theta", "global_rope_theta"):
        if "rope_theta" in full and hasattr(config, name):
            setattr(config, name, full["rope_theta"])
    if "partial_rotary_factor" in full and hasattr(config, "partial_rotary_factor"):
        config.partial_rotary_factor = full["partial_rotary_factor"]
    if full.get("rope_type", "default") != "default":
        config.rope_scaling = {k: v for k, v in full.items() if k not in ("rope_theta", "partial_rotary_factor")}
    local = nested.get("sliding_attention", {})
    for name in ("rope_local_base_freq", "local_rope_theta"):
        if "rope_theta" in local and hasattr(config, name):
            setattr(config, name, local["rope_theta"])
    return config
