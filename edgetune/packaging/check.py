"""Check a package: every file present and matching the manifest's hashes, made from the run's model, and
(classifier) reproducing its golden outputs in ONNX Runtime with the extensions library."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgetune.core.data import file_sha256
from edgetune.core.errors import EdgetuneError
from edgetune.packaging.manifest import SCHEMA_VERSION, ManifestError, read_manifest

# The golden cases' tolerance, for a packaged classifier and a board bundle alike: 1.5x the largest difference
# measured on this host between the quantized model and PyTorch (verify's, or the bundle's own), never tighter
# than 0.05 (float noise) and, for the cosine, never looser than 0.999's rule.
GOLDEN_MARGIN = 1.5
MIN_GOLDEN_DIFF = 0.05


def golden_max_diff(measured: float) -> float:
    """The largest |device - PyTorch| logit a golden case allows, from the host's measured `measured`."""
    return round(max(MIN_GOLDEN_DIFF, GOLDEN_MARGIN * float(measured)), 4)


def golden_min_cosine(measured: float) -> float:
    """The smallest cosine to PyTorch's logits a golden case allows, from the host's measured `measured`."""
    return round(min(0.999, 1.0 - GOLDEN_MARGIN * (1.0 - float(measured))), 6)


def check_package(folder: Path, expect_sha256: str | None = None, run_golden: bool = True) -> list[str]:
    """Problems with the package in `folder` (empty when it is complete and every file matches its hash).

    `expect_sha256` is the run's quantized model: a package made from another model is stale. With
    `run_golden`, a classifier's packaged graph (and its ORT-format copy) also runs in ONNX Runtime with the
    extensions library on every golden text, and must reproduce the PyTorch outputs.
    """
    folder = Path(folder)
    try:
        manifest = read_manifest(folder)
    except ManifestError as e:
        return [str(e)]
    mpath, entry = folder / "manifest.json", manifest.model
    problems = []
    if manifest.schema_version != SCHEMA_VERSION:
        problems.append(f"{mpath}: schema_version {manifest.schema_version} (expected {SCHEMA_VERSION})")
    for f in entry.files:
        if not (folder / f).is_file():
            problems.append(f"{folder / f} is missing")
    main = folder / entry.file
    if main.is_file() and file_sha256(main) != entry.sha256:
        problems.append(f"{main}: sha256 differs from the manifest (stale or corrupt package)")
    if expect_sha256 is not None and manifest.source.quantized_sha256 != expect_sha256:
        problems.append(f"{mpath}: packaged from another model than the run's (stale package: run edgetune package)")
    ort = manifest.ort_model
    if ort and (not (folder / ort.file).is_file() or file_sha256(folder / ort.file) != ort.sha256):
        problems.append(f"{folder / ort.file}: missing or sha256 differs from the manifest")
    # a classifier's graph takes text and returns logits: run it on the golden texts (a chat model's golden
    # greedy tokens are checked on boards by edgetune/device)
    if problems or not run_golden or manifest.tokenizer.get("kind") != "embedded":
        return problems
    golden = json.loads((folder / manifest.golden.file).read_text())
    for f in [entry.file] + ([ort.file] if ort else []):
        problems += [f"{f}: {p}" for p in golden_failures(folder / f, golden, manifest.labels)]
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
        if (
            diff > golden["max_abs_diff"]
            or cos < golden["min_cosine"]
            or (c["check_label"] and label != c["pytorch_label"])
        ):
            out.append(
                f"golden '{c['text'][:40]}': max|diff| {diff:.4g} (<= {golden['max_abs_diff']}), "
                f"cosine {cos:.6f} (>= {golden['min_cosine']}), label {label} (PyTorch {c['pytorch_label']})"
            )
    return out
