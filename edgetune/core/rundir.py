"""Run directory: one folder per stage, manifest.json, atomic writes, a lock against concurrent builds."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgetune.core.data import file_sha256
from edgetune.core.errors import EdgetuneError, RecipeError

MANIFEST = "manifest.json"


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temp file in the same folder and os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the final file should read like any other
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def replace_dir(tmp: Path, final: Path) -> None:
    """Put the finished folder `tmp` at `final`, replacing what is there: the old one is renamed aside first,
    so `final` always holds either the old or the new folder, never a mix."""
    if final.exists():
        old = final.with_name(final.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def refuse_symlink(path: Path) -> None:
    """Raise RecipeError (exit 2) when `path` is a symlink: edgetune never follows one inside a run directory."""
    if path.is_symlink():
        raise RecipeError(
            f"{path} is a symlink (to {os.readlink(path)}); edgetune does not follow symlinks inside "
            f"a run directory: remove it"
        )


def config_key(*parts: Any) -> str:
    """A stable sha256 of JSON-serializable parts (stage name, config, input hashes)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class StageEntry:
    key: str
    record: dict
    outputs: dict[str, str]  # path relative to run dir -> sha256
    seconds: float
    versions: dict[str, str]
    key_version: int = 0  # build.Key.version the key was made with (0: before keys had versions)
    # peak resident MB of the build's process and all its descendants while the stage ran (None: not recorded)
    peak_rss_mb: float | None = None


class RunDir:
    """A run's folder. Hold it with `with RunDir(path) as run:` to take the lock."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._lock_fd: int | None = None
        self._hash_cache: dict[tuple[str, int, int], str] = {}

    def __enter__(self) -> RunDir:
        self.root.mkdir(parents=True, exist_ok=True)
        for child in self.root.iterdir():  # stage folders, scratch folders, manifest, lock
            refuse_symlink(child)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise EdgetuneError(
                f"{self.root} is in use by another edgetune process (lock {self.root / '.lock'})"
            ) from None
        self._lock_fd = fd
        # a write of the manifest or recipe.json killed before its rename leaves its temp file, .NAME.XXXX.tmp
        # (atomic_write_text); with the lock held, no live process owns one
        for stale in self.root.glob(".*.tmp"):
            if stale.is_file():
                stale.unlink()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- manifest -------------------------------------------------------------------------------
    def manifest(self) -> dict:
        path = self.root / MANIFEST
        if not path.exists():
            return {"stages": {}}
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            raise EdgetuneError(f"{path} is corrupt; delete it to rebuild the run from scratch") from None

    def entry(self, stage: str) -> StageEntry | None:
        raw = self.manifest()["stages"].get(stage)
        return StageEntry(**raw) if raw else None

    def write_entry(self, stage: str, entry: StageEntry, meta: dict | None = None) -> None:
        m = self.manifest()
        m["stages"][stage] = entry.__dict__
        if meta:
            m.update(meta)
        atomic_write_json(self.root / MANIFEST, m)

    def drop_entry(self, stage: str) -> None:
        m = self.manifest()
        if m["stages"].pop(stage, None) is not None:
            atomic_write_json(self.root / MANIFEST, m)

    # -- files ----------------------------------------------------------------------------------
    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def scratch_dir(self, stage: str) -> Path:
        """A fresh, empty folder the stage writes into; renamed to stage_dir() on success."""
        tmp = self.root / f"{stage}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        return tmp

    def commit_dir(self, stage: str) -> None:
        """Move the finished scratch folder into place, replacing an older result. The caller writes the stage's
        manifest entry first (hashes from the scratch folder): a folder under a final name is then always one the
        manifest records, and an entry whose folder never arrived fails its hash check and reruns."""
        replace_dir(self.root / f"{stage}.tmp", self.stage_dir(stage))

    def hash_file(self, path: Path) -> str:
        st = path.stat()
        k = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)  # survives the rename of a scratch folder
        if k not in self._hash_cache:
            self._hash_cache[k] = file_sha256(path)
        return self._hash_cache[k]

    def hash_outputs(self, stage: str, folder: Path | None = None) -> dict[str, str]:
        """sha256 of every file of a stage's folder (or of `folder`, named as if it were the stage's folder);
        a symlink anywhere in it is refused, so neither a rerun nor a later stage reads or writes outside the
        run directory through one."""
        final = self.stage_dir(stage)
        folder = final if folder is None else folder
        refuse_symlink(folder)
        if not folder.is_dir():
            return {}
        files = []
        for parent, dirs, names in os.walk(folder):
            for name in dirs + names:
                refuse_symlink(Path(parent) / name)
            files += [Path(parent) / n for n in names]
        return {
            (final / p.relative_to(folder)).relative_to(self.root).as_posix(): self.hash_file(p) for p in sorted(files)
        }

    def is_valid(self, stage: str, key: str) -> bool:
        """True when the stage finished with this key and its files are unchanged on disk."""
        e = self.entry(stage)
        if e is None or e.key != key or not self.stage_dir(stage).is_dir():
            return False
        current = self.hash_outputs(stage)
        return current == e.outputs
