"""What edgetune knows per model family, in one table, checked before stage one.

- Adapter targets where peft has no default (or none for a method): LoRA, DoRA and AdaLoRA adapt the same
  linears; IA3 scales `ia3` modules, feeding the `ia3_feedforward` ones a scaled input.
- Which architectures each task's exporter handles, per library line (core/lines.py): decoders go through
  onnxruntime-genai's model builder, whose releases know the text architectures in GENAI_BUILDERS; encoders
  through optimum-onnx (asked directly) on the transformers 4.57 line, through torch's exporter on the
  transformers 5 line, where TORCH_EXPORT_REFUSED lists what the architecture matrix found it cannot export.

A model outside this knowledge is refused by `recipe validate` and `build` in one line, naming the architecture
and the reason, before any work starts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgetune.core.errors import RecipeError
from edgetune.core.lines import OPTIMUM, genai_builder_line, release, version


@dataclass(frozen=True)
class Targets:
    """Module names (peft matches a module whose dotted name equals or ends with one) per adaptation method;
    None: use peft's default for that method."""

    lora: tuple[str, ...] | None = None
    ia3: tuple[str, ...] | None = None
    ia3_feedforward: tuple[str, ...] | None = None


# Families peft 0.21 has no default for (xlm-roberta, electra: no IA3 default). Attention query and value
# projections for LoRA (peft's own choice for BERT and LLaMA), the fused projection where the family fuses q, k
# and v (Phi-3: all four of its linears, as its fused projections each carry several roles); for IA3, keys,
# values and the feed-forward output projection, as peft does for BERT and LLaMA.
TARGETS: dict[str, Targets] = {
    # encoders
    "distilbert": Targets(("q_lin", "v_lin"), ("k_lin", "v_lin", "lin2"), ("lin2",)),
    "xlm-roberta": Targets(None, ("key", "value", "output.dense"), ("output.dense",)),
    "electra": Targets(None, ("key", "value", "output.dense"), ("output.dense",)),
    "albert": Targets(("query", "value"), ("key", "value", "ffn_output"), ("ffn_output",)),
    "mpnet": Targets(("q", "v"), ("k", "v", "output.dense"), ("output.dense",)),
    "modernbert": Targets(("Wqkv",), ("Wqkv", "mlp.Wo"), ("mlp.Wo",)),
    # decoders
    "phi3": Targets(("qkv_proj", "o_proj", "gate_up_proj", "down_proj"), ("qkv_proj", "down_proj"), ("down_proj",)),
    "granite": Targets(("q_proj", "v_proj"), ("k_proj", "v_proj", "down_proj"), ("down_proj",)),
    "lfm2": Targets(("q_proj", "v_proj"), ("k_proj", "v_proj", "w2"), ("w2",)),
    "nemotron": Targets(("q_proj", "v_proj"), ("k_proj", "v_proj", "down_proj"), ("down_proj",)),
    "ernie4_5": Targets(("q_proj", "v_proj"), ("k_proj", "v_proj", "down_proj"), ("down_proj",)),
    "hunyuan_v1_dense": Targets(("q_proj", "v_proj"), ("k_proj", "v_proj", "down_proj"), ("down_proj",)),
    # its experts are fused parameter tensors, not linears: attention only
    "gpt_oss": Targets(("q_proj", "v_proj"), ("k_proj", "v_proj"), ()),
}

# The text-only decoder classes each onnxruntime-genai release line's model builder exports (its builder.py
# dispatches on config.architectures[0]); anything else ends in its NotImplementedError. 0.18 dropped ERNIE 4.5 and
# added the hybrid Granite and LFM2 mixtures of experts.
_GENAI_0_15 = frozenset(
    {
        "ChatGLMForConditionalGeneration",
        "ChatGLMModel",
        "Ernie4_5ForCausalLM",
        "GemmaForCausalLM",
        "Gemma2ForCausalLM",
        "Gemma3ForCausalLM",
        "GptOssForCausalLM",
        "GraniteForCausalLM",
        "HunYuanDenseV1ForCausalLM",
        "InternLM2ForCausalLM",
        "Lfm2ForCausalLM",
        "LlamaForCausalLM",
        "MistralForCausalLM",
        "NemotronForCausalLM",
        "OlmoForCausalLM",
        "PhiForCausalLM",
        "Phi3ForCausalLM",
        "PhiMoEForCausalLM",
        "Phi3SmallForCausalLM",
        "Qwen2ForCausalLM",
        "Qwen3ForCausalLM",
        "SmolLM3ForCausalLM",
    }
)
GENAI_BUILDERS = {
    "0.15": _GENAI_0_15,
    "0.18": (_GENAI_0_15 - {"Ernie4_5ForCausalLM"}) | {"GraniteMoeHybridForCausalLM", "Lfm2MoeForCausalLM"},
}


def genai_builder() -> frozenset[str]:
    """The decoder classes the installed onnxruntime-genai's builder exports (the newest table known for a
    release edgetune has no table of)."""
    line = genai_builder_line()
    if line in GENAI_BUILDERS:
        return GENAI_BUILDERS[line]
    return GENAI_BUILDERS[max(GENAI_BUILDERS, key=release)]


# Architectures the builder dispatches on but whose export cannot pass edgetune's parity gate, or cannot run
# here; refused before stage one with the reason (found by the architecture matrix, tests/archs.py).
_REMOTE_CODE = "it needs the model's own Python code, which edgetune does not let the model builder run"
GENAI_REFUSED = {
    "OlmoForCausalLM": "the model builder exports OLMo's LayerNorm as RMSNorm, so the ONNX model computes "
    "something else than PyTorch",
    "SmolLM3ForCausalLM": "the model builder fails on SmolLM3's layers without rotary embeddings (NoPE)",
    "PhiMoEForCausalLM": "the model builder exports PhiMoE for CUDA only",
    "InternLM2ForCausalLM": _REMOTE_CODE,
    "ChatGLMForConditionalGeneration": _REMOTE_CODE,
    "ChatGLMModel": _REMOTE_CODE,
    "Phi3SmallForCausalLM": _REMOTE_CODE,
}


@dataclass(frozen=True)
class ModelInfo:
    """A base model's family, read from its config without loading weights."""

    model_type: str
    architecture: str  # the transformers class edgetune loads it as, and saves the merged model as
    config: Any  # transformers PretrainedConfig

    def special_ids(self) -> dict[str, Any]:
        return {k: getattr(self.config, k, None) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}


@dataclass(frozen=True)
class Head:
    """What a task trains on top of a base architecture, in transformers' terms."""

    mapping: str  # transformers.models.auto.modeling_auto's table of architectures with this head
    auto_class: str  # the Auto class (also the key of a remote-code model's auto_map)
    kind: str  # in messages


HEADS = {
    "classification": Head(
        "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
        "AutoModelForSequenceClassification",
        "sequence-classification",
    ),
    "causal-lm": Head("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "AutoModelForCausalLM", "causal-LM"),
}


def model_info(path: Path, task: str, trust_remote_code: bool = False) -> ModelInfo:
    """The model_type and task class of the model at `path` (HF folder or .gguf); RecipeError when the task has
    no class for it."""
    from transformers import AutoConfig
    from transformers.models.auto import modeling_auto

    path = Path(path)
    try:
        if path.is_file() and path.suffix == ".gguf":
            config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
        else:
            config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
        raise RecipeError(
            f"model.source: cannot read the model's config in {path}: {str(e).splitlines()[0][:200]}"
        ) from None
    head = HEADS[task]
    mapping = getattr(modeling_auto, head.mapping)
    model_type = getattr(config, "model_type", "") or "unknown"
    auto_map = getattr(config, "auto_map", None) or {}
    if model_type in mapping:
        arch = mapping[model_type]
    elif trust_remote_code and head.auto_class in auto_map:
        arch = auto_map[head.auto_class].split(".")[-1]
    else:
        raise RecipeError(
            f"model.source: architecture '{model_type}' has no {head.kind} model class in "
            f"transformers, so task {task} cannot train it"
        )
    return ModelInfo(model_type, arch, config)


def check_genai_exportable(info: ModelInfo) -> None:
    """RecipeError, naming the architecture and the reason, when onnxruntime-genai's model builder cannot export
    the decoder (or exports it wrongly)."""
    if info.architecture in GENAI_REFUSED:
        raise RecipeError(
            f"model.source: architecture '{info.model_type}' ({info.architecture}) cannot be "
            f"exported: {GENAI_REFUSED[info.architecture]}"
        )
    known = genai_builder()
    if info.architecture not in known:
        usable = sorted(a.removesuffix("ForCausalLM") for a in known - GENAI_REFUSED.keys())
        older = [line for line, archs in GENAI_BUILDERS.items() if info.architecture in archs]
        raise RecipeError(
            f"model.source: architecture '{info.model_type}' ({info.architecture}) cannot be "
            f"exported: onnxruntime-genai {version('onnxruntime-genai')}'s model builder does not support it"
            + (f" (its {older[0]} release does)" if older else "")
            + f" (it supports {', '.join(usable)})"
        )


# Encoder families torch's exporter (as edgetune calls it, engines/encoder_export.py) cannot export on the
# transformers 5 line, with the reason, found by the architecture matrix (tests/archs.py).
TORCH_EXPORT_REFUSED: dict[str, str] = {}


def check_encoder_exportable(info: ModelInfo, onnx_task: str, exporter: str) -> None:
    """RecipeError when `exporter` (core/lines.py's OPTIMUM or TORCH) cannot export the architecture for
    `onnx_task`: optimum-onnx's registry is asked directly; for torch's exporter, what the matrix found."""
    if exporter == OPTIMUM:
        import optimum.exporters.onnx.model_configs  # noqa: F401  (fills the registry asked below)
        from optimum.exporters.tasks import TasksManager

        try:
            tasks = TasksManager.get_supported_tasks_for_model_type(
                info.model_type, exporter="onnx", library_name="transformers"
            )
        except (KeyError, ValueError):
            tasks = {}
        if onnx_task not in tasks:
            raise RecipeError(
                f"model.source: architecture '{info.model_type}' cannot be exported: optimum-onnx has no "
                f"ONNX export for it as {onnx_task}"
            )
    elif info.model_type in TORCH_EXPORT_REFUSED:
        raise RecipeError(
            f"model.source: architecture '{info.model_type}' cannot be exported on the transformers "
            f"{version('transformers')} line: {TORCH_EXPORT_REFUSED[info.model_type]}"
        )


def for_genai_builder(config: Any) -> None:
    """Name in a decoder's config what onnxruntime-genai 0.15.2's builder reads under other names: the norm
    epsilon as rms_norm_eps (else it takes 1e-6: phi's layer_norm_eps, nemotron's norm_eps are 1e-5) and LFM2's
    rope as transformers 5's rope_parameters. PyTorch ignores the added keys."""
    eps = getattr(config, "layer_norm_eps", None) or getattr(config, "norm_eps", None)
    if getattr(config, "rms_norm_eps", None) is None and eps is not None:
        config.rms_norm_eps = eps
    if config.model_type == "lfm2" and getattr(config, "rope_parameters", None) is None:
        config.rope_parameters = {"rope_type": "default", "rope_theta": config.rope_theta}


def default_targets(model_type: str, method: str) -> tuple[list[str] | None, list[str] | None]:
    """(target_modules, feedforward_modules) for `method` on a family: edgetune's table first, then peft's
    defaults; (None, None) when neither has one."""
    from peft.utils import constants as pc

    t = TARGETS.get(model_type, Targets())
    if method == "ia3":
        targets = t.ia3 or pc.TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING.get(model_type)
        ff = t.ia3_feedforward or pc.TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING.get(model_type)
        return (list(targets), list(ff or [])) if targets else (None, None)
    # LoRA, DoRA and AdaLoRA adapt the same modules, so the methods differ only in how they train them.
    targets = t.lora or pc.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type)
    return (list(targets), None) if targets else (None, None)


@dataclass(frozen=True)
class AdapterPlan:
    """What fine-tuning adapts, resolved and checked against the model's modules before stage one."""

    method: str
    target_modules: list[str]
    feedforward_modules: list[str] | None  # IA3 only
    modules_to_save: list[str] | None
    inferred: str = ""  # how the targets were found when no table row or peft default names them (for the log)


# How attention projections are named across families (BERT and its kin, LLaMA and its kin, DistilBERT, MPNet):
# (query, key, value) per naming.
ATTENTION_NAMES = (
    ("query", "key", "value"),
    ("q_proj", "k_proj", "v_proj"),
    ("q_lin", "k_lin", "v_lin"),
    ("q", "k", "v"),
)


def infer_targets(modules: dict[str, Any], method: str) -> tuple[list[str], list[str] | None] | None:
    """Targets for a family neither the table nor peft knows, from the model's structure: the query and value
    projections (LoRA, DoRA, AdaLoRA: peft's choice for BERT and LLaMA), or the key and value projections plus
    BERT's feed-forward output (IA3), found among the linear children of its attention modules. None when the
    attention's linears are named in no known way."""
    import torch

    attention = {n for n, m in modules.items() if "attention" in type(m).__name__.lower()}
    names = {
        n.rsplit(".", 1)[-1]
        for n, m in modules.items()
        if isinstance(m, torch.nn.Linear) and "." in n and n.rsplit(".", 1)[0] in attention
    }
    for q, k, v in ATTENTION_NAMES:
        if method == "ia3" and {k, v} <= names:
            # BERT's layout (intermediate, then output.dense) has peft's BERT default for the feed-forward
            bert_ff = any(n.endswith("intermediate.dense") for n in modules) and any(
                n.endswith("output.dense") for n in modules
            )
            return ([k, v, "output.dense"], ["output.dense"]) if bert_ff else ([k, v], [])
        if method != "ia3" and {q, v} <= names:
            return [q, v], None
    return None


def matches(name: str, target: str) -> bool:
    """peft's rule for a list of target names: the module's dotted name is the target or ends with '.target'."""
    return name == target or name.endswith("." + target)


def plan_adapter(info: ModelInfo, task: str, lora: Any, trust_remote_code: bool = False) -> AdapterPlan:
    """Resolve the recipe's `lora` section (method, target_modules, modules_to_save) for this model; RecipeError
    when there is no default or a name matches no module, listing the names the model does have."""
    import torch
    import transformers

    auto = getattr(transformers, HEADS[task].auto_class)
    with torch.device("meta"):  # the module tree without weights: milliseconds, no memory
        model = auto.from_config(info.config, trust_remote_code=trust_remote_code)
    modules = {n: m for n, m in model.named_modules() if n}
    adaptable = {
        n
        for n, m in modules.items()
        if isinstance(m, (torch.nn.Linear, torch.nn.Embedding)) or type(m).__name__ == "Conv1D"
    }
    linears = sorted(
        {
            [p for p in n.split(".") if not p.isdigit()][-1]
            for n in adaptable
            if not isinstance(modules[n], torch.nn.Embedding)
        }
    )
    targets, ff = default_targets(info.model_type, lora.method)
    inferred = ""
    if lora.target_modules:
        targets = list(lora.target_modules)
        ff = [f for f in ff if f in targets] if ff is not None else None
    elif targets is None and (found := infer_targets(modules, lora.method)) is not None:
        targets, ff = found
        inferred = (
            f"lora.target_modules: no table row or peft default for '{info.model_type}'; adapting its attention's "
            f"{', '.join(targets)} (found in the model's structure; set lora.target_modules to choose)"
        )
    elif targets is None:
        raise RecipeError(
            f"lora.target_modules: no default for architecture '{info.model_type}' (neither "
            f"edgetune's table nor peft has one); set it to some of its linear layers: "
            f"{', '.join(linears)}"
        )
    for t in targets:
        hit = [n for n in modules if matches(n, t)]
        if not hit:
            raise RecipeError(
                f"lora.target_modules: '{t}' matches no module of this {info.model_type} model; "
                f"its linear layers are: {', '.join(linears)}"
            )
        if not any(n in adaptable for n in hit):
            raise RecipeError(
                f"lora.target_modules: '{t}' names {type(modules[hit[0]]).__name__} modules, which "
                f"{lora.method} cannot adapt; name linear layers: {', '.join(linears)}"
            )
    for t in lora.modules_to_save or []:
        if not any(matches(n, t) for n in modules):
            tops = sorted({n.split(".")[-1] for n in modules if not n.split(".")[-1].isdigit()})
            raise RecipeError(
                f"lora.modules_to_save: '{t}' matches no module of this {info.model_type} model; "
                f"its modules are named: {', '.join(tops)}"
            )
    return AdapterPlan(lora.method, targets, ff, list(lora.modules_to_save) if lora.modules_to_save else None, inferred)
