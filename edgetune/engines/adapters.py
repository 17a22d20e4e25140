"""LoRA adapters kept apart from one base ONNX model: onnxruntime's multi-LoRA format.

A base model built by onnxruntime-genai's model builder (fp32, int8 or int4 MatMulNBits) gets, at each
projection some adapter trains, a float branch beside the base MatMul:

    x --MatMul(base W)-------------------------+--> Add --> (the node's old output name)
     \\--MatMul(lora_A [K, r])--MatMul(lora_B [r, N])--/

lora_A and lora_B are graph inputs with empty defaults ([K, 0] and [0, N]: the branch adds zeros), so the model
runs as the base model with no adapter. An `.onnx_adapter` file (onnxruntime.AdapterFormat) holds one adapter's
values for those inputs; onnxruntime feeds them when the adapter is active (RunOptions.add_active_adapter, which
onnxruntime-genai's `Adapters` / `Generator.set_active_adapter` use, in Python, Java and the Android app).

The builder fuses projections that read the same input (q/k/v into qkv_proj; gate/up into gate_up_proj where it
does): their adapters share one branch, lora_A the A matrices side by side and lora_B a block matrix with each B
in its own rows and output columns (zeros elsewhere), so x·lora_A·lora_B is each projection's own B·A·x.
peft's scaling (alpha / r, or rsLoRA's) is folded into lora_B.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgetune.core.errors import EdgetuneError
from edgetune.engines.int4 import round_base_for_int4

# the builder's projection nodes: /model/layers.N/attn|mlp/NAME/MatMul[_Q4|_Q8]
NODE = re.compile(r"^/model/layers\.(\d+)/(attn|mlp)/(\w+)/MatMul(?:_Q\d+)?$")
PACKED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}
BLOCKS = {"attn": "self_attn", "mlp": "mlp"}  # the builder's block names -> transformers' module names


@dataclass
class Member:
    """One transformers linear inside a builder MatMul: its module name and its columns of the node's output."""

    module: str
    start: int
    width: int


@dataclass
class Slot:
    """One LoRA branch of the graph: the input names it reads and the linears it stands for."""

    a: str
    b: str
    k: int
    n: int
    members: list[Member] = field(default_factory=list)


def _members(block: str, layer: int, name: str, linears: dict[str, tuple[int, int]]) -> list[Member]:
    """The transformers linears behind a builder node, with their output columns (fused nodes: several)."""
    out, at = [], 0
    for part in PACKED.get(name, (name,)):
        module = f"model.layers.{layer}.{BLOCKS[block]}.{part}"
        if module not in linears:
            return []
        out.append(Member(module, at, linears[module][1]))
        at += linears[module][1]
    return out


def add_lora_inputs(src: Path, dst: Path, linears: dict[str, tuple[int, int]], targets: set[str]) -> list[Slot]:
    """Copy the builder model `src` (model.onnx, external data beside it) to `dst` with a LoRA branch at each
    projection whose linears include one of `targets` (transformers module names, e.g.
    model.layers.0.self_attn.q_proj). `linears`: every linear of the base model, {name: (in, out)}.
    Returns the branches; raises EdgetuneError when a target has no node (an architecture the mapping misses)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(src)
    graph = model.graph
    slots: list[Slot] = []
    found: set[str] = set()
    new_nodes = []
    for node in graph.node:
        new_nodes.append(node)
        m = NODE.match(node.name)
        if not m or node.op_type not in ("MatMul", "MatMulNBits"):
            continue
        layer, block, name = int(m[1]), m[2], m[3]
        members = _members(block, layer, name, linears)
        if not any(mem.module in targets for mem in members):
            continue
        found |= {mem.module for mem in members}
        prefix = f"model.layers.{layer}.{block}.{name}"
        k = linears[members[0].module][0]
        n = sum(mem.width for mem in members)
        slot = Slot(f"{prefix}.lora_A", f"{prefix}.lora_B", k, n, members)
        rank = f"lora_rank_{prefix}"
        graph.input.extend(
            [
                helper.make_tensor_value_info(slot.a, TensorProto.FLOAT, [k, rank]),
                helper.make_tensor_value_info(slot.b, TensorProto.FLOAT, [rank, n]),
            ]
        )
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.zeros((k, 0), np.float32), slot.a),
                numpy_helper.from_array(np.zeros((0, n), np.float32), slot.b),
            ]
        )
        out = node.output[0]
        base = f"{out}/base"
        node.output[0] = base
        xa, delta = f"/lora/{prefix}/xA", f"/lora/{prefix}/xAB"
        new_nodes += [
            helper.make_node("MatMul", [node.input[0], slot.a], [xa], name=f"/lora/{prefix}/MatMul_A"),
            helper.make_node("MatMul", [xa, slot.b], [delta], name=f"/lora/{prefix}/MatMul_B"),
            helper.make_node("Add", [base, delta], [out], name=f"/lora/{prefix}/Add"),
        ]
        slots.append(slot)
    missing = sorted(targets - found)
    if missing:
        raise EdgetuneError(
            f"adapters: no projection of the exported graph for {', '.join(missing[:3])}"
            + (f" (and {len(missing) - 3} more)" if len(missing) > 3 else "")
        )
    del graph.node[:]
    graph.node.extend(new_nodes)
    dst.mkdir(parents=True, exist_ok=True)
    data = "model.onnx.data"
    onnx.save(model, dst / "model.onnx", save_as_external_data=True, all_tensors_to_one_file=True, location=data)
    return slots


def adapter_values(
    slots: list[Slot], state: dict[str, tuple[np.ndarray, np.ndarray]], scaling: dict[str, float]
) -> dict[str, np.ndarray]:
    """One adapter's values for the graph's LoRA inputs. `state`: {module: (A [r, in], B [out, r])} of the
    linears it trains (float arrays); `scaling`: {module: peft's scale}. A branch none of whose linears this
    adapter trains is left out (its empty default applies)."""
    values = {}
    for slot in slots:
        parts = [mem for mem in slot.members if mem.module in state]
        if not parts:
            continue
        ranks = [state[mem.module][0].shape[0] for mem in parts]
        a = np.zeros((slot.k, sum(ranks)), np.float32)
        b = np.zeros((sum(ranks), slot.n), np.float32)
        row = 0
        for mem, r in zip(parts, ranks):
            lora_a, lora_b = state[mem.module]
            a[:, row : row + r] = lora_a.T
            b[row : row + r, mem.start : mem.start + mem.width] = (lora_b * scaling[mem.module]).T
            row += r
        values[slot.a], values[slot.b] = a, b
    return values


def write_adapter(values: dict[str, np.ndarray], path: Path) -> None:
    """`values` as an onnxruntime `.onnx_adapter` file (written whole, then renamed into place)."""
    import onnxruntime as ort

    fmt = ort.AdapterFormat()
    fmt.set_adapter_version(1)
    fmt.set_model_version(1)
    fmt.set_parameters({k: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v)) for k, v in values.items()})
    tmp = path.with_name(path.name + ".tmp")
    fmt.export_adapter(str(tmp))
    tmp.replace(path)


def peft_state(adapter_dir: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, float]]:
    """A peft LoRA adapter folder as {module: (A [r, in], B [out, r])} and {module: scale}, module names as in
    the base transformers model (model.layers.0.self_attn.q_proj)."""
    import json

    from safetensors.numpy import load_file

    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    if cfg.get("peft_type") != "LORA":
        raise EdgetuneError(f"adapters: {adapter_dir} is a {cfg.get('peft_type')} adapter; only LoRA ships unmerged")
    if cfg.get("use_dora") or cfg.get("modules_to_save"):
        raise EdgetuneError(f"adapters: {adapter_dir} trains more than LoRA matrices (DoRA or modules_to_save)")
    tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        m = re.match(r"^(?:base_model\.model\.)?(.+)\.lora_([AB])\.weight$", key)
        if not m:
            raise EdgetuneError(f"adapters: {adapter_dir}: unexpected tensor {key}")
        pairs.setdefault(m[1], {})[m[2]] = value.astype(np.float32)
    state, scaling = {}, {}
    for module, ab in pairs.items():
        r = ab["A"].shape[0]
        rank = cfg.get("rank_pattern", {}).get(module.split(".")[-1], cfg["r"])
        alpha = cfg.get("alpha_pattern", {}).get(module.split(".")[-1], cfg["lora_alpha"])
        if rank != r:
            raise EdgetuneError(f"adapters: {adapter_dir}: {module} has rank {r}, its config says {rank}")
        state[module] = (ab["A"], ab["B"])
        scaling[module] = alpha / (r**0.5 if cfg.get("use_rslora") else r)
    return state, scaling


ADAPTER_SUFFIX = ".onnx_adapter"


def base_with_adapters(
    base: Path, tokenizer: Path, adapters: dict[str, Path], out: Path, options: dict
) -> tuple[Path, dict[str, Path]]:
    """Build the transformers model `base` with onnxruntime-genai's model builder (int4, builder `options`) into
    `out`/model/ with a LoRA branch at every projection some adapter trains, and write each peft LoRA adapter
    folder of `adapters` ({name: folder}) as `out`/model/NAME.onnx_adapter. The folder's tokenizer is the one
    saved in `tokenizer` (a trained adapter's folder: it carries the chat template training used). Returns the
    model file and the adapter files by name."""
    import shutil

    from edgetune.engines.builder import MODEL_NAME, build_genai

    states = {name: peft_state(folder) for name, folder in adapters.items()}
    source, built, folder = out / "base.src", out / "base.build", out / "model"
    source.mkdir(parents=True)
    for f in Path(base).iterdir():  # the base's weights and config, linked, not copied
        (source / f.name).symlink_to(f.resolve())
    for f in Path(tokenizer).iterdir():
        if f.is_file() and not f.name.startswith("adapter_") and f.name != "README.md":
            (source / f.name).unlink(missing_ok=True)
            shutil.copy2(f, source / f.name)
    built.mkdir()
    build_genai(source, built, "int4", options)
    shutil.rmtree(source)
    targets = {module for state, _ in states.values() for module in state}
    slots = add_lora_inputs(built / MODEL_NAME, folder, _linears(base), targets)
    for f in built.iterdir():  # genai_config.json and the tokenizer
        if not f.name.startswith(MODEL_NAME):
            shutil.copy2(f, folder / f.name)
    shutil.rmtree(built)
    files = {}
    for name, (state, scaling) in states.items():
        files[name] = folder / f"{name}{ADAPTER_SUFFIX}"
        write_adapter(adapter_values(slots, state, scaling), files[name])
    return folder / MODEL_NAME, files


def _linears(base: Path) -> dict[str, tuple[int, int]]:
    """Every linear of the transformers model at `base`, {name: (in, out)}, from its config alone (no weights
    are read: the model is made on torch's meta device)."""
    import torch
    from transformers import AutoModelForCausalLM

    from edgetune.core.lines import auto_config

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(auto_config(base))
    return {n: (m.in_features, m.out_features) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def merged_with(load_model: Callable[[Path], Any], base: Path, adapter: Path, int4_base: int | None = None) -> Any:
    """The PyTorch model an adapter is checked against: the base (loaded by `load_model`, a task's) with the peft
    adapter folder `adapter` merged in float, in eval mode. With `int4_base` (the adapter trained against the
    base rounded to int4 in blocks of that size: Adapter.int4_base), the base's linears rounded so first: the
    model the adapter was trained as, which the int4 base + adapter on the device computes."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(load_model(base), adapter)
    if int4_base:
        round_base_for_int4(model, int4_base)
    return model.merge_and_unload().eval()
