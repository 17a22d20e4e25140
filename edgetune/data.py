"""Read tabular datasets (JSONL, CSV) into rows that remember file and line, with one-line errors."""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import RecipeError


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
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
