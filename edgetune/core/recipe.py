"""Recipe schema (pydantic, unknown keys are errors) and load_recipe(), which also checks the recipe's paths."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgetune.core.errors import RecipeError
from edgetune.core.sources import check_model_source
from edgetune.core.templates import check_template_name, is_template_file, template_path

PositiveInt = Annotated[int, Field(gt=0)]
Fraction = Annotated[float, Field(gt=0, lt=1)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(Section):
    source: str = Field(
        description="Where the base model comes from: 'package:PKG/sub/folder' (a folder shipped inside an "
        "installed pip package), a local folder, or a Hugging Face hub id."
    )
    trust_remote_code: bool = False

    @field_validator("source")
    @classmethod
    def _not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v


class DatasetConfig(Section):
    train: str = Field(description="Training file (.jsonl or .csv), relative to the recipe file.")
    eval: str | None = Field(
        None, description="Held-out evaluation file; if absent, eval_fraction of train is held out."
    )
    eval_fraction: Fraction = 0.2
    seed: int = 0
    format: Literal["auto", "jsonl", "csv"] = "auto"
    text_column: str = Field("text", description="classification: the column with the text.")
    label_column: str = Field("label", description="classification: the column with the label.")
    system_prompt: str | None = Field(None, description="causal-lm: system message put before every conversation.")
    response_format: Literal["text", "json"] = Field(
        "text", description="causal-lm: 'json' scores generations by exact match of the parsed JSON."
    )
    chat_template: str | None = Field(
        None,
        description="causal-lm: the chat format of a tokenizer that has none (a base model): chatml, gemma or "
        "llama3, or a Jinja file relative to the recipe. It wins over the tokenizer's own, and every exported "
        "folder's tokenizer carries it.",
    )

    @field_validator("chat_template")
    @classmethod
    def _template_name(cls, v: str | None) -> str | None:
        return None if v is None else check_template_name(v)


# Methods that train weights of their own which merge into the base weights (peft's merge_and_unload), so the
# exported model is an ordinary network of the base architecture.
METHODS = ("lora", "dora", "adalora", "ia3")
# Methods that prepend trained virtual tokens (or a trained prefix of keys/values) to every input instead.
UNMERGEABLE = {
    "prefix",
    "prefix_tuning",
    "prompt",
    "prompt_tuning",
    "p_tuning",
    "ptuning",
    "p-tuning",
    "prefix-tuning",
    "prompt-tuning",
}


class LoraConfig(Section):
    method: str = Field(
        "lora",
        description="lora | dora (weight-decomposed LoRA) | adalora (adaptive rank) | ia3 (learned scaling vectors); "
        "each is merged into plain weights before export.",
    )
    r: PositiveInt = 8
    alpha: Annotated[float, Field(gt=0)] = 16
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.05
    target_modules: list[str] | None = Field(
        None,
        description="Module names to adapt; default: edgetune's per-architecture table (edgetune/core/families.py), "
        "then peft's.",
    )
    modules_to_save: list[str] | None = Field(
        None, description="Modules trained in full and saved with the adapter (the task head always is)."
    )

    @field_validator("method")
    @classmethod
    def _mergeable(cls, v: str) -> str:
        m = v.strip().lower()
        if m in UNMERGEABLE:
            raise ValueError(
                f"'{v}' cannot be merged into the exported weights: it feeds trained virtual tokens "
                f"into every input instead of changing weights, so the ONNX model would need them as "
                f"an extra input; use one of {', '.join(METHODS)}"
            )
        if m not in METHODS:
            raise ValueError(f"unknown method '{v}' (expected one of {', '.join(METHODS)})")
        return m


class TrainingConfig(Section):
    epochs: Annotated[int, Field(gt=0, le=1000)] = 3
    learning_rate: Annotated[float, Field(gt=0, le=1)] = 5e-4
    batch_size: Annotated[int, Field(gt=0, le=4096)] = 16
    max_length: Annotated[int, Field(gt=0, le=8192)] = 64
    weight_decay: Annotated[float, Field(ge=0, le=1)] = 0.0
    warmup_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.06
    seed: int = 0
    precision: Literal["fp32", "bf16", "auto"] = Field(
        "fp32",
        description="Training compute: bf16 mixed precision, or auto = bf16 where the device has native bf16 "
        "(GPUs that report it; CPUs with AMX or AVX512-BF16). A bf16 base checkpoint then stays bf16 in memory.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where training runs: auto = CUDA when torch sees a GPU, else the CPU."
    )
    gradient_accumulation: Annotated[int, Field(gt=0, le=1024)] = Field(
        1,
        description="Micro-batches per optimizer step on each process: batch_size stays the effective batch "
        "(split over processes, then over micro-batches), so this only trades memory for time.",
    )
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute activations in the backward pass instead of keeping them: less memory, ~30% slower.",
    )
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp",
        description="With several processes (torchrun, accelerate launch, or `edgetune build --processes N`): "
        "ddp = a full copy of the model per process; fsdp = accelerate's FSDP2 (parameters sharded over "
        "processes), CUDA GPUs only (refused on CPU, where accelerate runs DDP); written, not yet run on a GPU.",
    )
    int4_aware_epochs: Annotated[int, Field(ge=0, le=1000)] = Field(
        0,
        description="causal-lm: the last N epochs train against the int4 export's exact rounding "
        "(quantize.int4_block_size), so the int4 model keeps what fine-tuning learned. 0: off.",
    )
    # the next two change how training reports and checkpoints, never the result: not part of the finetune key
    progress_seconds: Annotated[float, Field(ge=0, le=86_400)] = Field(
        60,
        description="Without a progress bar (output not a terminal, or --no-progress): one line with step, "
        "rate and ETA at most every N seconds. 0: every step.",
    )
    checkpoint_minutes: Annotated[float, Field(ge=0, le=1440)] = Field(
        10,
        description="Also checkpoint within an epoch at most every N minutes, so an interrupted build resumes "
        "from there rather than from the last finished epoch. 0: at epoch ends only.",
    )


class ExportConfig(Section):
    opset: Annotated[int, Field(ge=14, le=23)] = 17
    optimize: bool = Field(True, description="Apply ONNX Runtime transformer fusions (attention, GELU, LayerNorm).")


class QuantizeConfig(Section):
    precisions: Annotated[list[Literal["int8", "int4"]], Field(min_length=1)] = ["int8"]
    mode: Literal["dynamic", "static"] = Field("dynamic", description="int8 activations: per batch, or calibrated.")
    per_channel: bool = Field(
        True, description="One scale per output channel: measured far closer to fp32 than per-tensor."
    )
    calibration_samples: Annotated[int, Field(gt=0, le=100_000)] = 128
    reduce_range: Literal["auto"] | bool = Field(
        "auto",
        description="int8 weights in 7 bits instead of 8. x86 CPUs without VNNI (AVX2, and AVX512 before VNNI) "
        "add pairs of int8 products into 16 bits and clamp them, which 7-bit weights cannot overflow. auto: on "
        "when this machine's int8 kernels clamp (measured when quantizing) or package.linux has x86_64 (a board "
        "whose CPU is not known when building); off where every CPU the model is built for accumulates in 32 "
        "bits (VNNI, AMX, ARM).",
    )
    auto: bool = Field(
        False,
        description="Search the quantized build instead of taking the settings here. Classifiers (int8): the "
        "candidates dynamic per-channel / per-tensor, static QDQ, head kept in fp32, measured on altered copies of "
        "the training texts. causal-lm (int4): layouts of block size, accuracy level, rounding, lm_head/embedding "
        "table and the most sensitive layers in int8 (measured), measured on up to 96 training rows (a fifth at most) "
        "carved out before finetune, which then trains on the rest. Each candidate is timed; "
        "the fastest within verify's budgets is kept, and every candidate is in the report.",
    )
    int4_block_size: Literal[16, 32, 64, 128, 256, "auto"] = Field(
        32,
        description="int4 weights per scale (MatMulNBits blocks). auto: 64 on x86 (fewer scales to read per "
        "token; measured as fast as 32 or faster with and without VNNI), 32 for ARM targets (package.android, "
        "package.linux arm64; not measured there).",
    )
    int4_accuracy_level: Literal[0, 1, 2, 3, 4] = Field(
        4, description="MatMulNBits compute type: 0 default, 1 fp32, 2 fp16, 3 bf16, 4 int8 (fastest on CPU)."
    )
    int4_keep_lm_head: bool = Field(False, description="Keep the output projection (lm_head) in int8 instead of int4.")
    int4_int8_layers: bool = Field(
        False, description="Keep the quantization-sensitive layers (the builder's 'mixed_layers') in int8."
    )
    embeddings: Literal["auto", "fp16", "fp32"] = Field(
        "auto",
        description="Decoders' token-embedding table. auto: share the lm_head's int4 weights when lm_head is int4 "
        "(tied models), else fp16; fp16: its own fp16 table; fp32: its own fp32 table.",
    )


class CompressConfig(Section):
    """A smaller student made from the fine-tuned model (edgetune/engines/compress/), distilled from it."""

    every: Annotated[int, Field(ge=2, le=12)] | None = Field(
        2, description="Keep every n-th encoder layer (2: 6 -> 3 layers), the last one always."
    )
    keep_layers: list[Annotated[int, Field(ge=0)]] | None = Field(
        None, description="Or the teacher's layers to keep, by index (instead of every)."
    )
    prune_heads: Annotated[float, Field(ge=0, lt=1)] = Field(0.0, description="Share of attention heads to prune.")
    prune_ffn: Annotated[float, Field(ge=0, lt=1)] = Field(0.0, description="Share of FFN neurons to prune.")
    epochs: Annotated[int, Field(gt=0, le=1000)] = 8
    learning_rate: Annotated[float, Field(gt=0, le=1)] = 1e-4
    temperature: Annotated[float, Field(gt=0, le=100)] = 2.0
    alpha: Annotated[float, Field(ge=0, le=1)] = Field(0.9, description="Weight of the distillation loss vs labels.")
    hidden_weight: Annotated[float, Field(ge=0)] = Field(0.0, description="Weight of a hidden-state MSE loss.")
    augment: Annotated[int, Field(ge=0, le=32)] = Field(
        0, description="Add this many altered copies of each training text to the distillation set (teacher-labelled)."
    )
    batch_size: Annotated[int, Field(gt=0, le=4096)] = 16
    int8_aware_epochs: Annotated[int, Field(ge=0, le=1000)] = Field(
        0,
        description="The last N epochs distil the student as its dynamic-int8 ONNX file computes (int8 weights "
        "per quantize.per_channel, 7-bit where quantize.reduce_range resolves so; uint8 inputs per text), so "
        "the int8 model is what is distilled. 0: off.",
    )

    @model_validator(mode="after")
    def _aware_within_epochs(self) -> CompressConfig:
        if self.int8_aware_epochs > self.epochs:
            raise ValueError(f"int8_aware_epochs ({self.int8_aware_epochs}) exceeds epochs ({self.epochs})")
        return self


# verify.fp32_max_rel_diff's default. Correct fp32 exports measured (README, recipe reference): SmolLM2-135M
# 1.75e-6, the tests' tiny LLaMA 2.6e-7 (2.2e-7 with its logits 3000x larger); planted wrong exports of the tiny
# LLaMA (tests/test_parity_gate.py): logits scaled by 1.001 1.0e-3, one logit shifted 1.4e-2, two layers swapped
# 4.8e-2. Set below the smallest wrong one with room for a model worse conditioned than these (a Gemma 3 270M
# export that was correct differed by 0.0063 in absolute terms: within 5e-4 if its logits reach 12.6)
REL_DIFF = 5e-4


class VerifyConfig(Section):
    fp32_max_rel_diff: Annotated[float, Field(ge=0)] = Field(
        REL_DIFF,
        description="ONNX fp32 vs PyTorch: the largest |diff| of an output row over that row's max |output| "
        "(the logits' scale): a correct export's float error grows with it.",
    )
    fp32_max_abs_diff: Annotated[float | None, Field(ge=0)] = Field(
        None, description="ONNX fp32 vs PyTorch: also a bound on max |diff| itself, for a model whose scale is known."
    )
    fp32_min_cosine: Annotated[float, Field(ge=-1, le=1)] = 0.99999
    int8_min_top1_agreement: Annotated[float, Field(ge=0, le=1)] = 0.98
    int8_max_accuracy_drop: Annotated[float, Field(ge=0, le=1)] = 0.01
    int8_min_cosine: Annotated[float, Field(ge=-1, le=1)] = 0.99
    merge_max_abs_diff: Annotated[float, Field(ge=0)] = 1e-5
    merge_check_rows: Annotated[int, Field(ge=0, description="Eval rows of the float64 merge check (0: all).")] = 32
    int4_max_accuracy_drop: Annotated[float, Field(ge=0, le=1)] = 0.05
    greedy_tokens: Annotated[int, Field(gt=0, le=4096)] = 32
    greedy_min_agreement: Annotated[float, Field(ge=0, le=1)] = 0.95
    max_perplexity_ratio: Annotated[float, Field(ge=1)] = 1.25


class BenchmarkConfig(Section):
    threads: Annotated[int, Field(gt=0, le=256)] = 2
    batch_size: Annotated[int, Field(gt=0, le=1024)] = 1
    sequence_lengths: Annotated[list[Annotated[int, Field(gt=0, le=8192)]], Field(min_length=1)] = [16, 32, 128]
    warmup: Annotated[int, Field(ge=0, le=100_000)] = 20
    runs: Annotated[int, Field(gt=0, le=1_000_000)] = Field(
        100, description="Timed runs in all, split over the rounds."
    )
    rounds: Annotated[int, Field(gt=0, le=100)] = Field(
        3, description="Interleaved rounds: each round runs every model once, each in a fresh process."
    )
    new_tokens: Annotated[int, Field(gt=0, le=4096)] = 64
    threads_sweep: list[Annotated[int, Field(gt=0, le=256)]] = Field(
        [], description="causal-lm: also measure at these thread counts (e.g. [1])."
    )


class PackageConfig(Section):
    android: str | None = Field(
        None, description="The Android demo project to install the package into (relative to the recipe), or null."
    )
    ort_format: bool = Field(True, description="Also write the model in ORT format, optimized for arm64.")
    golden: Annotated[int, Field(ge=1, le=1000)] = Field(16, description="How many golden input/output cases.")
    linux: list[Literal["arm64", "x86_64"]] = Field(
        [], description="Linux boards to write a device bundle for (package/linux-<arch>/, with run_device.py)."
    )


class AdapterTask(Section):
    """One task shipped as a LoRA adapter over the shared int4 base (the recipe's adapters: list)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")] = Field(
        description="The adapter's name: its file (NAME.onnx_adapter), `edgetune chat --adapter NAME`, the app's picker."
    )
    dataset: DatasetConfig | None = Field(
        None,
        description="This task's data (the recipe's lora and training settings train it). None: the recipe's own "
        "dataset, i.e. the adapter the finetune stage trains; exactly one entry has none.",
    )


class Recipe(Section):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    task: Literal["classification", "causal-lm"]
    model: ModelConfig
    dataset: DatasetConfig
    lora: LoraConfig = LoraConfig()
    training: TrainingConfig = TrainingConfig()
    export: ExportConfig = ExportConfig()
    compress: CompressConfig | None = None
    quantize: QuantizeConfig = QuantizeConfig()
    verify: VerifyConfig = VerifyConfig()
    benchmark: BenchmarkConfig = BenchmarkConfig()
    package: PackageConfig = PackageConfig()
    adapters: list[AdapterTask] = Field(
        [],
        description="causal-lm: also ship the base model once (int4) and each task as an .onnx_adapter that the "
        "runtime switches between (the adapters stage), instead of only a merged model per task.",
    )
    # Not part of the YAML: the folder the recipe's relative paths are resolved against.
    base_dir: Path = Field(Path("."), exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _no_base_dir_in_yaml(cls, data: object) -> object:
        if isinstance(data, dict) and "base_dir" in data:
            raise ValueError("'base_dir' is not a recipe key")
        return data

    @model_validator(mode="after")
    def _adapters(self) -> Recipe:
        if not self.adapters:
            return self
        if self.task != "causal-lm":
            raise ValueError("adapters: only causal-lm models ship adapters apart from their base")
        if self.lora.method != "lora":
            raise ValueError(
                f"adapters: ship LoRA adapters only, so they need lora.method: lora (not {self.lora.method})"
            )
        if "int4" not in self.quantize.precisions:
            raise ValueError("adapters: the shared base is the int4 model, so quantize.precisions must have int4")
        names = [a.name for a in self.adapters]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"adapters: the name {twice[0]} is given twice")
        own = [a.name for a in self.adapters if a.dataset is None]
        if len(own) != 1:
            raise ValueError(
                "adapters: exactly one entry has no dataset (it names the adapter trained on the recipe's own "
                f"dataset:); {len(own)} have none"
            )
        return self

    def own_adapter(self) -> str | None:
        """The name of the adapters: entry trained on the recipe's own dataset (None without adapters:)."""
        return next((a.name for a in self.adapters if a.dataset is None), None)

    def path(self, relative: str) -> Path:
        """Resolve a path written in the recipe against the recipe's folder."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else self.base_dir / p


def field_path(loc: tuple) -> str:
    """A pydantic location as the YAML path a user reads: training.epochs, benchmark.sequence_lengths[0];
    keys that are not plain words are quoted, so a key such as ':' or '' stays visible."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = str(part) if re.fullmatch(r"[A-Za-z0-9_-]+", str(part)) else json.dumps(str(part))
            out += ("." if out else "") + text
    return out


def _format_error(source: str, err: ValidationError) -> str:
    first = err.errors()[0]
    loc = field_path(first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key" + _did_you_mean(first["loc"])
    if first["type"] == "value_error":  # our validators' messages; a recipe-wide one names its own fields
        msg = msg.removeprefix("Value error, ")
        if not first["loc"]:
            return f"{source}: {msg}" + (f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else "")
    more = len(err.errors()) - 1
    tail = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    return f"{source}: {loc}: {msg}{tail}"


def _did_you_mean(loc: tuple) -> str:
    """The "; did you mean 'learning_rate'?" for an unknown key close to a key of its section, or ""."""
    section = _section_at(loc[:-1]) if loc else None
    if section is None:
        return ""
    keys = [name for name, f in section.model_fields.items() if not f.exclude]
    close = difflib.get_close_matches(str(loc[-1]), keys, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _section_at(loc: tuple) -> type[BaseModel] | None:
    """The schema class of the mapping at a YAML path (() is the recipe itself), or None if it is not one."""
    model: type[BaseModel] = Recipe
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        inner = field.annotation if field is not None else None
        if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            return None
        model = inner
    return model


def parse_recipe(data: object, source: str = "recipe", base_dir: Path = Path(".")) -> Recipe:
    """Validate a recipe mapping; raise RecipeError naming the bad field."""
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe must be a YAML mapping, got {type(data).__name__}")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        raise RecipeError(_format_error(source, e)) from None
    return recipe.model_copy(update={"base_dir": base_dir})


def load_recipe(path: Path | str) -> Recipe:
    """Read and validate a recipe YAML file; raise RecipeError on any problem."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError(f"{path}: cannot read recipe: {e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise RecipeError(f"{path}: YAML syntax error: {where}{problem}") from None
    recipe = parse_recipe(data, str(path), path.resolve().parent)
    check_paths(recipe, str(path))
    return recipe


# The file that marks a folder as the edgetune Android demo project (the package stage installs into it).
ANDROID_MARKER = Path("app") / "build.gradle.kts"


def check_paths(recipe: Recipe, source: str | None = None) -> None:
    """Refuse a recipe whose paths lead nowhere, before any stage runs, in one line naming the field and the
    path it resolves to: model.source (a package folder or a local path; a hub id is resolved later, as it may
    need the network), dataset.train, dataset.eval, dataset.chat_template (a file) and package.android."""
    problem = next(_path_problems(recipe), None)
    if problem is not None:
        raise RecipeError(f"{source}: {problem}" if source else problem)


def _path_problems(recipe: Recipe) -> Iterator[str]:
    """Each path field that does not lead where it must, as 'field: problem', in the recipe's order."""
    try:
        check_model_source(recipe.model.source, recipe.base_dir)
    except RecipeError as e:
        yield e.message
    files = [("dataset.train", recipe.dataset.train), ("dataset.eval", recipe.dataset.eval)]
    for i, a in enumerate(recipe.adapters):
        if a.dataset is not None:
            files += [
                (f"adapters[{i}].dataset.train", a.dataset.train),
                (f"adapters[{i}].dataset.eval", a.dataset.eval),
            ]
    for field, value in files:
        if value is not None and not recipe.path(value).is_file():
            where = recipe.path(value).resolve()
            what = "is a folder, not a dataset file" if where.is_dir() else "dataset file not found"
            yield f"{field}: {what}: {value} (resolved to {where})"
    template = recipe.dataset.chat_template
    if template is not None and is_template_file(template):
        found = template_path(template, recipe.base_dir)
        if not found.is_file():
            what = "is a folder, not a Jinja file" if found.is_dir() else "Jinja file not found"
            yield f"dataset.chat_template: {what}: {template} (resolved to {found.resolve()})"
    android = recipe.package.android
    if android is not None and not is_android_demo(recipe.path(android)):
        yield (
            f"package.android: {android} (resolved to {recipe.path(android).resolve()}) is not the edgetune "
            f"Android demo (no {ANDROID_MARKER.as_posix()}); set it to the android_demo folder of edgetune, or "
            f"to null to build without the app"
        )


def is_android_demo(folder: Path) -> bool:
    """Whether `folder` is the edgetune Android demo project: the check the package stage's install() makes."""
    return (Path(folder) / ANDROID_MARKER).is_file()
