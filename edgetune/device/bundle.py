"""Write a device bundle: a run's package (model files, golden.json, manifest.json) plus run_device.py, which
checks the golden cases and benchmarks on a Linux board with only numpy and onnxruntime installed there."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from edgetune import __version__, runner
from edgetune.core.data import file_sha256
from edgetune.core.errors import EdgetuneError, RecipeError
from edgetune.core.rundir import atomic_write_json, refuse_symlink, replace_dir
from edgetune.packaging.check import golden_max_diff
from edgetune.packaging.manifest import MANIFEST, ManifestError, PackageManifest, read_manifest

TARGETS = tuple(runner.TARGETS)  # linux-arm64, linux-x86_64
RUNNER = "run_device.py"
HASH_FILE = ".edgetune-bundle.sha256"  # on the device, beside the copied bundle
BUNDLE_SCHEMA = 1


def runner_sha256() -> str:
    """The hash of the runner every bundle carries (part of the package stage's key)."""
    return file_sha256(Path(runner.__file__))


def bundle_dir(package_dir: Path, target: str) -> Path:
    """Where the package stage writes the bundle for `target`: package/<target>/."""
    return Path(package_dir) / target


def write_bundle(
    package_dir: Path,
    target: str,
    tokenizer: Any = None,
    benchmark: Any = None,
    greedy_tokens: int = 32,
    reference: Any = None,
) -> Path:
    """Write package_dir/<target>/ from the package in `package_dir`; return the bundle folder.

    Classification: model.onnx (+ model.ort for linux-arm64, where its arm-optimized layout belongs), golden.json
    as packaged; `tokenizer` (the Hugging Face one) picks words the in-graph tokenizer reads as one token each,
    so the runner can build a text of any benchmark length. Causal LM: the int4 genai folder; golden.json gains
    the prompt ids, greedy tokens and top logits of this host's onnxruntime-genai, computed by the runner's own
    code, with PyTorch's logits for the same tokens from `reference` (([(prompt_ids, tokens)], [adapter name or
    None per case]) -> per-step logit
    rows, see `_llm_golden`).
    """
    if target not in TARGETS:
        raise RecipeError(f"unknown device target '{target}' (known: {', '.join(TARGETS)})")
    package_dir = Path(package_dir)
    manifest = read_manifest(package_dir)
    golden_file = manifest.golden.file
    golden = json.loads((package_dir / golden_file).read_text())
    out = bundle_dir(package_dir, target)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    entry, chat = manifest.model, manifest.chat  # a chat model's package carries its prompt format
    files = list(entry.files)
    models = [
        {
            "name": f"device_{entry.precision}",
            "file": entry.file,
            "format": "genai" if chat else "onnx",
            "size_bytes": entry.size_bytes,
        }
    ]
    ort = manifest.ort_model if target == "linux-arm64" else None  # its arm-optimized layout belongs on arm64
    if ort:
        files.append(ort.file)
        models.append(
            {"name": f"device_{entry.precision}_ort", "file": ort.file, "format": "ort", "size_bytes": ort.size_bytes}
        )
    for name in files:
        src = package_dir / name
        if src.is_symlink() or not src.is_file():
            raise EdgetuneError(f"device bundle: {src} is not a regular file; refusing to copy it")
        shutil.copy2(src, out / name)
    shutil.copy2(Path(runner.__file__), out / RUNNER)
    bench = benchmark.model_dump() if benchmark is not None else {}
    extra: dict = {}
    versions = dict(manifest.versions)
    if chat:
        import onnxruntime_genai

        requires = ["numpy", "onnxruntime", "onnxruntime-genai"]
        if reference is None:
            raise EdgetuneError("device bundle: a chat bundle needs PyTorch's logits (reference)")
        golden = _llm_golden(out, chat.model_dump(), golden, greedy_tokens, reference)
        extra["vocab_size"] = json.loads((out / "genai_config.json").read_text())["model"]["vocab_size"]
        versions["onnxruntime_genai"] = onnxruntime_genai.__version__
    else:
        requires = ["numpy", "onnxruntime", "onnxruntime-extensions"]
        if tokenizer is None:
            raise EdgetuneError("device bundle: a classifier bundle needs the model's tokenizer")
        extra.update(_bench_words(tokenizer, golden), max_length=manifest.tokenizer["max_length"])
    atomic_write_json(out / golden_file, golden)
    bundle = {
        "schema_version": BUNDLE_SCHEMA,
        "target": target,
        "runner": RUNNER,
        "requires": requires,
        "models": models,
        "files": {n: file_sha256(out / n) for n in sorted({*files, golden_file, RUNNER})},
        "defaults": {
            "threads": bench.get("threads", 2),
            "warmup": bench.get("warmup", 20),
            "runs": bench.get("runs", 100),
            "sequence_lengths": bench.get("sequence_lengths", [16, 32, 128]),
            "new_tokens": bench.get("new_tokens", 64),
            "rounds": bench.get("rounds", 3),
        },
        "created_with": {"edgetune": __version__},
        **extra,
    }
    manifest.model_copy(update={"versions": versions, "bundle": bundle, "ort_model": ort}).write(out)
    return out


def _bench_words(tokenizer: Any, golden: dict) -> dict:
    """Words from the golden texts (then the vocabulary) that the tokenizer keeps as one token each, and the
    number of special tokens it adds to every text."""
    special = len(tokenizer("")["input_ids"])
    seen: list[str] = []
    candidates = [w.lower() for c in golden["cases"] for w in re.findall(r"\b[A-Za-z]{2,}\b", c["text"], re.A)]
    candidates += sorted(w for w in tokenizer.get_vocab() if re.fullmatch(r"[a-z]{2,}", w))
    for w in candidates:
        ids = tokenizer(w, add_special_tokens=False)["input_ids"]
        if w not in seen and len(ids) == 1 and ids[0] != tokenizer.unk_token_id:
            seen.append(w)
        if len(seen) == 32:
            break
    if not seen:
        raise EdgetuneError("device bundle: no word in the vocabulary is a single token; cannot build benchmark texts")
    return {"bench_words": seen, "special_tokens": special}


def _llm_golden(folder: Path, chat: dict, golden: dict, n: int, reference: Any) -> dict:
    """golden.json for a chat bundle: each prompt with this host's prompt ids, first `n` greedy tokens and, at each
    step, the host's top logits and PyTorch's logits for the same tokens (teacher-forced along the host's tokens).
    The tolerance is the classifier's rule (edgetune.packaging.check.golden_max_diff): 1.5x the largest difference between this host's quantized model and
    PyTorch over those logits; a board must stay as close to PyTorch as that."""
    import numpy as np

    prompts, names = [c["prompt"] for c in golden["cases"]], [c.get("adapter") for c in golden["cases"]]
    try:
        host = runner.greedy_cases(str(folder), chat, prompts, n, adapters=names)
    except Exception as e:  # onnxruntime-genai's own errors carry no type worth keeping
        raise EdgetuneError(
            f"device bundle: onnxruntime-genai cannot run {folder}: {str(e).splitlines()[0][:200]}"
        ) from None
    ref_rows = reference([(h["prompt_ids"], h["tokens"]) for h in host], names)
    cases, worst = [], 0.0
    for c, h, rows in zip(golden["cases"], host, ref_rows):
        ref = [[round(float(row[i]), 4) for i in ids] for row, ids in zip(rows, h["top_ids"])]
        worst = max([worst] + [float(np.abs(np.subtract(a, b)).max()) for a, b in zip(h["top_logits"], ref)])
        cases.append(
            {
                **c,
                "prompt_ids": h["prompt_ids"],
                "host_tokens": h["tokens"],
                "top_ids": h["top_ids"],
                "top_logits": h["top_logits"],
                "pytorch_logits": ref,
            }
        )
    return {
        **golden,
        "greedy_tokens": n,
        "top_k": runner.TOP_K,
        "host_max_abs_diff": round(worst, 4),
        "max_abs_diff": golden_max_diff(worst),
        "cases": cases,
    }


def bundle_sha256(folder: Path) -> str:
    """One hash over every file of a bundle (names and contents): what the device keeps to skip a copy."""
    h = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        h.update(f"{path.relative_to(folder).as_posix()}\t{file_sha256(path)}\n".encode())
    return h.hexdigest()


def read_bundle(folder: Path) -> PackageManifest:
    """A bundle's manifest; RecipeError when `folder` is not a bundle."""
    try:
        manifest = read_manifest(Path(folder))
    except ManifestError:
        manifest = None
    if manifest is None or manifest.bundle is None:
        raise RecipeError(f"{folder}: not a device bundle (no manifest.json with a 'bundle' entry)") from None
    return manifest


def find_bundles(target: Path) -> list[Path]:
    """The device bundles of TARGET: a bundle folder itself, or a run directory's package/<target>/ folders."""
    target = Path(target)
    if (target / RUNNER).is_file() and (target / MANIFEST).is_file():
        return [target]
    found = [
        bundle_dir(target / "package", t) for t in TARGETS if (bundle_dir(target / "package", t) / RUNNER).is_file()
    ]
    if not found:
        raise RecipeError(f"{target}: no device bundle: run `edgetune package {target} --target linux-arm64` first")
    return found


def export_bundle(src: Path, dest: Path) -> Path:
    """Copy the bundle `src` to the folder `dest` (replacing an earlier bundle there, nothing else)."""
    dest = Path(dest)
    if dest.exists():
        refuse_symlink(dest)
        if not dest.is_dir() or (any(dest.iterdir()) and not (dest / RUNNER).is_file()):
            raise RecipeError(
                f"--dest {dest}: exists and is not an edgetune device bundle; choose an empty or new folder"
            )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(src, tmp, symlinks=False)
        replace_dir(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
