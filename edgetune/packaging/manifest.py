"""The package manifest: one typed schema for every reader (the package stage, its checks, device bundles,
`bench --adb`, the CLI). The Android app reads the same JSON (android_demo/.../core/PackageManifest.kt)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from edgetune import __version__
from edgetune.core.data import file_sha256
from edgetune.core.rundir import atomic_write_json

MANIFEST = "manifest.json"
GOLDEN = "golden.json"
SCHEMA_VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileEntry(_Model):
    """A model file of the package: its name, hash, the size of every file it needs, and all those files."""

    file: str
    sha256: str
    size_bytes: int
    precision: str
    files: list[str]


class TensorSpec(_Model):
    name: str
    dtype: str
    shape: list[int]


class GoldenRef(_Model):
    file: str
    count: int


class ChatAdapter(_Model):
    """One task's `.onnx_adapter` file beside the package's base model, and that task's system prompt."""

    name: str
    file: str
    system_prompt: str = ""


class ChatFormat(_Model):
    """How the app builds a prompt: `prompt_format` with {system} and {user} replaced. With `adapters`, the model
    is the base and the app generates with one of them active (its system_prompt, when set, replacing the
    package's)."""

    system_prompt: str
    prompt_format: str
    max_new_tokens: int
    adapters: list[ChatAdapter] = []


class SourceRef(_Model):
    """The run's quantized model the package was made from (a package of another model is stale)."""

    quantized_sha256: str
    precision: str


class PackageManifest(_Model):
    schema_version: int
    task: str
    recipe: str
    model: FileEntry
    ort_model: FileEntry | None = None  # the same model in ORT format (classifier, arm64)
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    tokenizer: dict[str, Any]  # {"kind": "embedded", ...} (in the graph) or {"kind": "onnxruntime-genai", ...}
    labels: list[str] = []
    golden: GoldenRef
    chat: ChatFormat | None = None
    versions: dict[str, str]
    source: SourceRef
    bundle: dict[str, Any] | None = None  # device bundles only (edgetune/device/bundle.py)

    def write(self, folder: Path) -> Path:
        data = self.model_dump(mode="json", exclude_none=True)
        data.setdefault("ort_model", None)  # the app's parser expects the key
        path = Path(folder) / MANIFEST
        atomic_write_json(path, data)
        return path


class ManifestError(ValueError):
    """manifest.json is missing or does not match the schema (the message says which)."""


def read_manifest(folder: Path) -> PackageManifest:
    """The manifest of the package in `folder`; ManifestError names the file and the first problem."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise ManifestError(f"{path} not found")
    try:
        return PackageManifest.model_validate(json.loads(path.read_text()))
    except ValueError as e:  # JSON or schema
        if isinstance(e, ValidationError):
            err = e.errors()[0]
            where = ".".join(str(x) for x in err["loc"])
            raise ManifestError(f"{path}: not a valid package manifest ({where}: {err['msg']})") from None
        raise ManifestError(f"{path}: not a valid package manifest ({e})") from None


def file_entry(folder: Path, name: str, precision: str, files: list[str]) -> FileEntry:
    path = Path(folder) / name
    return FileEntry(
        file=name,
        sha256=file_sha256(path),
        size_bytes=sum((folder / f).stat().st_size for f in files),
        precision=precision,
        files=files,
    )


def runtime_versions() -> dict[str, str]:
    import onnxruntime
    import onnxruntime_extensions

    return {
        "edgetune": __version__,
        "onnxruntime": onnxruntime.__version__,
        "onnxruntime_extensions": onnxruntime_extensions.__version__,
    }
