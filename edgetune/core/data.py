"""Read tabular datasets (JSONL, CSV) into rows that remember file and line, with one-line errors."""

from __future__ import annotations

import csv
import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgetune.core.errors import RecipeError
from edgetune.runner import sha256_file


@dataclass(frozen=True)
class Row:
    """One dataset record and where it came from."""

    fields: dict[str, Any]
    file: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def file_sha256(path: Path) -> str:
    """The file's sha256, as the board's runner checks a bundle's files (one definition: edgetune/runner.py)."""
    return sha256_file(str(path))


def _format_of(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffix in (".csv", ".tsv"):
        return "csv"
    raise RecipeError(f"{path}: cannot tell the format from the extension; set dataset.format to jsonl or csv")


def read_rows(path: Path, fmt: str = "auto", field: str = "dataset") -> list[Row]:
    """Read every record of a JSONL or CSV file; raise RecipeError naming the file and line."""
    if not path.is_file():
        raise RecipeError(f"{field}: dataset file not found: {path}")
    kind = _format_of(path, fmt)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise RecipeError(f"{path}:{line}: not valid UTF-8") from None
    rows: list[Row] = []
    if kind == "jsonl":
        for i, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as e:
                raise RecipeError(f"{path}:{i}: invalid JSON: {e.msg}") from None
            if not isinstance(obj, dict):
                raise RecipeError(f"{path}:{i}: expected a JSON object, got {type(obj).__name__}")
            rows.append(Row(obj, str(path), i))
    else:
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        reader = csv.DictReader(text.splitlines(keepends=True), delimiter=delimiter, strict=True)
        try:
            for rec in reader:
                if None in rec:
                    raise RecipeError(f"{path}:{reader.line_num}: more fields than the header has")
                if not any((v or "").strip() for v in rec.values()):
                    continue
                rows.append(Row(dict(rec), str(path), reader.line_num))
        except csv.Error as e:
            raise RecipeError(f"{path}:{reader.line_num}: CSV error: {e}") from None
    if not rows:
        raise RecipeError(f"{field}: dataset file is empty: {path}")
    return rows


def load_splits(
    cfg: Any, base_dir: Path, parse: Callable[[list[Row]], list[dict]]
) -> tuple[list[dict], list[dict], dict[str, str]]:
    """Train and held-out examples per the dataset section: the `eval` file, or a seeded `eval_fraction` of train.

    `parse` turns a file's rows into a task's examples. Returns (train, eval, {file: sha256}).
    """

    def resolve(p: str) -> Path:
        q = Path(p).expanduser()
        return q if q.is_absolute() else base_dir / q

    train_path = resolve(cfg.train)
    train = parse(read_rows(train_path, cfg.format, "dataset.train"))
    sources = {str(train_path): file_sha256(train_path)}
    if cfg.eval:
        eval_path = resolve(cfg.eval)
        evals = parse(read_rows(eval_path, cfg.format, "dataset.eval"))
        sources[str(eval_path)] = file_sha256(eval_path)
        return train, evals, sources
    order = list(range(len(train)))
    random.Random(cfg.seed).shuffle(order)
    n_eval = max(1, round(len(train) * cfg.eval_fraction))
    if n_eval >= len(train):
        raise RecipeError(f"dataset.eval_fraction: leaves no training rows ({len(train)} rows in {train_path})")
    return (*_partition(train, set(order[:n_eval])), sources)


def carve(train: list[dict], n: int, seed: int) -> tuple[list[dict], list[dict]]:
    """`n` seeded rows taken out of `train` (at most a fifth of it): (the rest in their order, the rows taken)."""
    n = min(n, len(train) // 5)
    return _partition(train, set(random.Random(seed).sample(range(len(train)), n)))


def _partition(rows: list[dict], taken: set[int]) -> tuple[list[dict], list[dict]]:
    """(the rows whose index is not in `taken`, those whose index is), each in file order."""
    return [e for i, e in enumerate(rows) if i not in taken], [e for i, e in enumerate(rows) if i in taken]


LATER_KEYS = ("chat_template",)


def data_fingerprint(task: str, sources: dict[str, str], cfg: Any, *extra: Any) -> str:
    """Identity of a task's data for caching: file contents and settings, not file locations."""
    # keys added to the dataset section later are left out while unset, so that a run directory built before
    # them keeps its identity (and its finished stages)
    unset = {k for k in LATER_KEYS if getattr(cfg, k, None) is None}
    settings = cfg.model_dump(exclude={"train", "eval", *unset})
    payload = [task, list(sources.values()), bool(cfg.eval), settings, *extra]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
