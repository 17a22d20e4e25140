"""The two kinds of failure edgetune shows to users without a traceback."""

from __future__ import annotations


class EdgetuneError(Exception):
    """A problem the user can fix or a failed check; shown without traceback (exit 1)."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RecipeError(EdgetuneError):
    """Bad input: recipe, dataset or model source (exit 2)."""

    exit_code = 2


class CheckFailed(EdgetuneError):
    """A verification gate failed (exit 1); the report is still written."""

    exit_code = 1


def shorten(text: str, limit: int = 300) -> str:
    """`text` on one line and at most `limit` characters: cut at the last word boundary that fits, with '...',
    never inside a word."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 3 + 1]  # one character more, to see whether the cut falls between two words
    cut = cut[: cut.rfind(" ")] if " " in cut else cut[: limit - 3]
    return cut.rstrip(" ,;:.") + "..."
