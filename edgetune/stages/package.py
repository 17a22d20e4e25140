"""Package a run's quantized model for the Android demo app: model, tokenizer, labels, manifest, golden vectors.

Classification: the BERT tokenizer goes inside the graph (onnxruntime-extensions' BertTokenizer op, generated
from the Hugging Face tokenizer by `gen_processing_models`), so the app passes a string and gets logits; the
model is also converted to ORT format for arm64. Causal LM: the int4 onnxruntime-genai folder, with the chat
prompt format. Golden vectors hold inputs with the outputs PyTorch computed, and tolerances taken from verify.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..artifacts import MergedModel, OnnxModel, Package, Verification
from ..data import file_sha256
from ..errors import CheckFailed, EdgetuneError, RecipeError
from ..recipe import PackageConfig
from ..rundir import atomic_write_json, replace_dir
from ..tasks.base import Task, TaskData
from .common import quiet

MANIFEST = "manifest.json"
GOLDEN = "golden.json"
SCHEMA_VERSION = 1
# Domains of ONNX Runtime's layout-specific (x86 NCHWc) kernels: never in a model meant for a phone.
X86_ONLY_DOMAINS = {"com.microsoft.nchwc"}
# Hand-picked edge cases added to the golden set: accents, case, punctuation, and a text over max_length.
EDGE_TEXTS = ["TURN ON the Kitchen lights!!!", "Café lights: ON, s'il vous plaît", "lights " * 200]


def package(
    model: OnnxModel,
    merged: MergedModel,
    verification: Verification,
    data: TaskData,
    task: Task,
    cfg: PackageConfig,
    recipe_name: str,
    out: Path,
    max_length: int,
    system_prompt: str | None = None,
) -> Package:
    """Write the app's package into `out` (manifest.json, golden.json, model files) and check it reproduces
    the golden outputs in ONNX Runtime; raise CheckFailed when it does not."""
    if task.name == "classification":
        manifest = _package_classifier(model, merged, verification, data, task, cfg, out, max_length)
    else:
        manifest = _package_llm(model, merged, data, task, cfg, out, system_prompt)
    manifest = {"schema_version": SCHEMA_VERSION, "task": task.name, "recipe": recipe_name, **manifest,
                "versions": _versions(), "source": {"quantized_sha256": model.sha256, "precision": model.precision}}
    atomic_write_json(out / MANIFEST, manifest)
    problems = check_package(out)
    if problems:
        raise CheckFailed("package: " + "; ".join(problems))
    entry = manifest["model"]
    return Package(path=out, manifest_path=out / MANIFEST, model_sha256=entry["sha256"],
                   size_bytes=entry["size_bytes"], files=entry["files"], golden_cases=manifest["golden"]["count"])


# -- classification -----------------------------------------------------------------------------------------
def _package_classifier(model: OnnxModel, merged: MergedModel, verification: Verification, data: TaskData,
                        task: Task, cfg: PackageConfig, out: Path, max_length: int) -> dict:
    import onnx

    tokenizer = task.load_tokenizer(merged.path)
    try:
        graph = onnx.load(model.path)
    except Exception as e:
        raise EdgetuneError(f"package: {model.path} is not a readable ONNX model ({str(e).splitlines()[0][:120]})") from None
    graph = with_tokenizer(graph, tokenizer, max_length)
    onnx.save(graph, out / "model.onnx")
    ort_model = None
    if cfg.ort_format:
        ort_model = _to_ort_format(out / "model.onnx")
    texts = [e["text"] for e in data.eval[: max(0, cfg.golden - len(EDGE_TEXTS))]] + EDGE_TEXTS[: cfg.golden]
    examples = [{"text": t, "label": 0} for t in texts]
    torch_model = task.load_model(merged.path, data)
    ref, _ = task.evaluate(torch_model, tokenizer, examples, 16, max_length)
    ref = np.asarray(ref, dtype=np.float64)
    # Tolerances come from verify, which measured this model against PyTorch on the whole held-out split with
    # the Hugging Face tokenizer: a tokenizer-in-graph mistake shows up as a larger difference than that.
    m = verification.models.get(f"onnx_{model.precision}", {})
    max_diff = round(max(0.05, 1.5 * float(m.get("max_abs_diff", 0.0))), 4)
    min_cos = round(min(0.999, 1.0 - 1.5 * (1.0 - float(m.get("min_cosine", 1.0)))), 6)
    cases = []
    for text, logits in zip(texts, ref):
        top2 = np.sort(logits)[-2:]
        cases.append({"text": text, "pytorch_logits": [round(float(x), 6) for x in logits],
                      "pytorch_label": data.labels[int(np.argmax(logits))],
                      # a label can only flip when the runner-up is within twice the tolerance
                      "check_label": bool(top2[1] - top2[0] > 2 * max_diff)})
    atomic_write_json(out / GOLDEN, {"max_abs_diff": max_diff, "min_cosine": min_cos, "cases": cases})
    files = ["model.onnx"]
    return {
        "model": _file_entry(out, "model.onnx", model.precision, files),
        "ort_model": _file_entry(out, ort_model.name, model.precision, [ort_model.name]) if ort_model else None,
        "inputs": [{"name": "text", "dtype": "string", "shape": [1]}],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": [1, len(data.labels)]}],
        "tokenizer": {"kind": "embedded", "op": "BertTokenizer", "library": "onnxruntime-extensions",
                      "max_length": max_length},
        "labels": list(data.labels),
        "golden": {"file": GOLDEN, "count": len(cases)},
    }


def with_tokenizer(model: Any, tokenizer: Any, max_length: int) -> Any:
    """`model` (inputs input_ids, attention_mask[, token_type_ids]) with a BertTokenizer node in front of it:
    the result takes `text`, a 1-D string tensor holding one text."""
    from onnx import TensorProto, helper

    from ..tasks.classification import EMBEDDABLE_TOKENIZERS

    if type(tokenizer).__name__ not in EMBEDDABLE_TOKENIZERS:
        raise EdgetuneError(f"package: only BERT WordPiece tokenizers can be embedded in the graph so far, "
                            f"not {type(tokenizer).__name__}")
    from onnxruntime_extensions import gen_processing_models

    with quiet():
        pre, _ = gen_processing_models(tokenizer, pre_kwargs={})
    node = pre.graph.node[0]
    # gen_processing_models maps strip_accents=None to 0, but for BERT None means "strip when lowercasing".
    norm = json.loads(tokenizer.backend_tokenizer.normalizer.__getstate__()) if hasattr(tokenizer, "backend_tokenizer") else {}
    strip = norm.get("strip_accents")
    strip = norm.get("lowercase", False) if strip is None else strip
    attrs = {a.name: a for a in node.attribute}
    if "strip_accents" in attrs:
        attrs["strip_accents"].i = int(bool(strip))
    else:
        node.attribute.append(helper.make_attribute("strip_accents", int(bool(strip))))
    node.attribute.append(helper.make_attribute("max_length", max_length))
    names = {i.name for i in model.graph.input}
    needed = {"input_ids", "attention_mask"}
    if not needed <= names or names - needed - {"token_type_ids"}:
        raise EdgetuneError(f"package: the model's inputs are {sorted(names)}; expected input_ids, attention_mask "
                            f"and optionally token_type_ids")
    g = model.graph
    tok_out = {o: f"tokenizer/{o}" for o in ("input_ids", "token_type_ids", "attention_mask", "offset_mapping")}
    new_node = helper.make_node(node.op_type, ["text"], [tok_out[o] for o in node.output], name="tokenizer",
                                domain=node.domain)
    new_node.attribute.extend(node.attribute)
    axes = helper.make_tensor("tokenizer/axes0", TensorProto.INT64, [1], [0])
    front = [new_node] + [helper.make_node("Unsqueeze", [tok_out[n], axes.name], [n], name=f"tokenizer/unsqueeze_{n}")
                          for n in sorted(names)]
    nodes = front + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.append(axes)
    del g.input[:]
    g.input.append(helper.make_tensor_value_info("text", TensorProto.STRING, [1]))
    used = {n.domain or "" for n in g.node}
    bad = used & X86_ONLY_DOMAINS
    if bad:
        raise EdgetuneError(f"package: the model uses x86-only ops ({', '.join(sorted(bad))}); export it without "
                            f"layout optimizations")
    keep = [o for o in model.opset_import if (o.domain or "") in used | {""}]
    del model.opset_import[:]
    model.opset_import.extend(keep + [helper.make_opsetid(node.domain, 1)])
    return model


def _to_ort_format(path: Path) -> Path:
    """Convert to ORT format with arm64 as the target platform (no x86-specific optimizations)."""
    import subprocess
    import sys

    from onnxruntime_extensions import get_library_path

    cmd = [sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", str(path),
           "--target_platform", "arm", "--optimization_style", "Fixed", "--custom_op_library", get_library_path()]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    ort_path = path.with_suffix(".ort")
    if proc.returncode != 0 or not ort_path.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise EdgetuneError(f"package: ORT format conversion failed: {tail[0][:200]}")
    for extra in path.parent.glob("*.required_operators*.config"):
        extra.unlink()
    return ort_path


# -- causal LM ----------------------------------------------------------------------------------------------
def _package_llm(model: OnnxModel, merged: MergedModel, data: TaskData, task: Task, cfg: PackageConfig,
                 out: Path, system_prompt: str | None) -> dict:
    folder = Path(model.path).parent
    files = sorted(f.name for f in folder.iterdir() if f.is_file() or f.is_symlink())
    for name in files:
        if (folder / name).is_symlink():
            raise EdgetuneError(f"package: {folder / name} is a symlink; refusing to follow it out of the run dir")
        shutil.copy2(folder / name, out / name)
    tokenizer = task.load_tokenizer(merged.path)
    prompt_format = tokenizer.apply_chat_template(
        ([{"role": "system", "content": "{system}"}] if system_prompt else []) + [{"role": "user", "content": "{user}"}],
        tokenize=False, add_generation_prompt=True)
    examples = data.eval[: cfg.golden]
    torch_model = task.load_model(merged.path, data)
    from ..tasks.causal_lm import _end_ids, greedy_torch

    eos = _end_ids(tokenizer)
    budgets = [len(tokenizer(ex["messages"][-1]["content"])["input_ids"]) + 8 for ex in examples]
    gens = greedy_torch(torch_model, [task.prompt_ids(tokenizer, ex) for ex in examples], budgets, eos)
    cases = [{"prompt": next(m["content"] for m in ex["messages"] if m["role"] == "user"),
              "pytorch_text": tokenizer.decode([t for t in toks if t not in eos], skip_special_tokens=True)}
             for ex, toks in zip(examples, gens)]
    atomic_write_json(out / GOLDEN, {"cases": cases})
    return {
        "model": _file_entry(out, "model.onnx", model.precision, files),
        "ort_model": None,
        "inputs": [{"name": "input_ids", "dtype": "int64", "shape": [1, -1]}],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": [1, -1, -1]}],
        "tokenizer": {"kind": "onnxruntime-genai", "file": "tokenizer.json"},
        "chat": {"system_prompt": system_prompt or "", "prompt_format": prompt_format, "max_new_tokens": 64},
        "labels": [],
        "golden": {"file": GOLDEN, "count": len(cases)},
    }


# -- checks and installation --------------------------------------------------------------------------------
def check_package(folder: Path, expect_sha256: str | None = None, run_golden: bool = True) -> list[str]:
    """Problems with the package in `folder` (empty when it is complete and every file matches its hash).

    `expect_sha256` is the run's quantized model: a package made from another model is stale. With
    `run_golden`, a classifier's packaged graph (and its ORT-format copy) also runs in ONNX Runtime with the
    extensions library on every golden text, and must reproduce the PyTorch outputs.
    """
    folder = Path(folder)
    mpath = folder / MANIFEST
    if not mpath.is_file():
        return [f"{mpath} not found"]
    try:
        manifest = json.loads(mpath.read_text())
        entry = manifest["model"]
    except (ValueError, KeyError, TypeError) as e:
        return [f"{mpath}: not a valid package manifest ({e})"]
    problems = []
    if manifest.get("schema_version") != SCHEMA_VERSION:
        problems.append(f"{mpath}: schema_version {manifest.get('schema_version')} (expected {SCHEMA_VERSION})")
    for f in entry.get("files", []):
        if not (folder / f).is_file():
            problems.append(f"{folder / f} is missing")
    main = folder / entry["file"]
    if main.is_file() and file_sha256(main) != entry["sha256"]:
        problems.append(f"{main}: sha256 differs from the manifest (stale or corrupt package)")
    if expect_sha256 is not None and manifest.get("source", {}).get("quantized_sha256") != expect_sha256:
        problems.append(f"{mpath}: packaged from another model than the run's (stale package: run edgetune package)")
    ort_entry = manifest.get("ort_model")
    if ort_entry and (not (folder / ort_entry["file"]).is_file()
                      or file_sha256(folder / ort_entry["file"]) != ort_entry["sha256"]):
        problems.append(f"{folder / ort_entry['file']}: missing or sha256 differs from the manifest")
    if problems or not run_golden or manifest.get("task") != "classification":
        return problems
    golden = json.loads((folder / manifest["golden"]["file"]).read_text())
    for f in [entry["file"]] + ([ort_entry["file"]] if ort_entry else []):
        problems += [f"{f}: {p}" for p in golden_failures(folder / f, golden, manifest["labels"])]
    return problems


def run_classifier(path: Path, texts: list[str]) -> np.ndarray:
    """Logits of the packaged classifier for each text, one text per run, as the app runs it."""
    import onnxruntime as ort
    from onnxruntime_extensions import get_library_path

    so = ort.SessionOptions()
    so.register_custom_ops_library(get_library_path())
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise EdgetuneError(f"onnxruntime cannot load {path}: {str(e).splitlines()[0][:200]}") from None
    return np.stack([sess.run(["logits"], {"text": np.array([t], dtype=object)})[0][0] for t in texts])


def golden_failures(path: Path, golden: dict, labels: list[str]) -> list[str]:
    """The golden cases the packaged classifier at `path` does not reproduce."""
    cases = golden["cases"]
    got = run_classifier(path, [c["text"] for c in cases]).astype(np.float64)
    out = []
    for c, g in zip(cases, got):
        ref = np.asarray(c["pytorch_logits"], dtype=np.float64)
        diff = float(np.abs(g - ref).max())
        cos = float(g @ ref / (np.linalg.norm(g) * np.linalg.norm(ref) + 1e-12))
        label = labels[int(np.argmax(g))]
        if diff > golden["max_abs_diff"] or cos < golden["min_cosine"] or (c["check_label"] and label != c["pytorch_label"]):
            out.append(f"golden '{c['text'][:40]}': max|diff| {diff:.4g} (<= {golden['max_abs_diff']}), "
                       f"cosine {cos:.6f} (>= {golden['min_cosine']}), label {label} (PyTorch {c['pytorch_label']})")
    return out


def assets_dir(android_dir: Path, task_name: str) -> Path:
    """Where the app reads a task's package: assets/edgetune (classifier) or assets/edgetune/llm (causal LM)."""
    assets = Path(android_dir) / "app" / "src" / "main" / "assets" / "edgetune"
    return assets if task_name == "classification" else assets / "llm"


def install(package_dir: Path, android_dir: Path, task_name: str) -> Path:
    """Copy the package into the app's assets (assets/edgetune, or assets/edgetune/llm for a causal LM),
    replacing the previous one in a single rename; the other task's package is kept."""
    android_dir = Path(android_dir)
    if not (android_dir / "app" / "build.gradle.kts").is_file():
        raise RecipeError(f"package.android: {android_dir} is not the edgetune Android demo (no app/build.gradle.kts)")
    final = assets_dir(android_dir, task_name)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".edgetune-", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the build tools that read the assets run as the user anyway
    try:
        for f in package_dir.iterdir():
            if f.name.startswith("linux-") and f.is_dir() and not f.is_symlink():
                continue  # a device bundle for Linux boards (edgetune/device), not for the app
            if f.is_symlink() or not f.is_file():
                raise EdgetuneError(f"package: {f} is not a regular file; refusing to copy it")
            shutil.copy2(f, tmp / f.name)
        if task_name == "classification" and (final / "llm").is_dir():
            os.replace(final / "llm", tmp / "llm")
        replace_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


# -- small helpers ------------------------------------------------------------------------------------------
def _file_entry(folder: Path, name: str, precision: str, files: list[str]) -> dict:
    path = folder / name
    return {"file": name, "sha256": file_sha256(path), "size_bytes": sum((folder / f).stat().st_size for f in files),
            "precision": precision, "files": files}


def _versions() -> dict:
    import onnxruntime
    import onnxruntime_extensions

    return {"edgetune": __version__, "onnxruntime": onnxruntime.__version__,
            "onnxruntime_extensions": onnxruntime_extensions.__version__}
