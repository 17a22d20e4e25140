"""Generate text with an exported causal LM (onnxruntime-genai), streaming tokens as they come."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

from edgetune.core.errors import EdgetuneError, RecipeError

PRECISIONS = ("int4", "int8", "fp32")


def model_folder(run_dir: Path, precision: str | None = None) -> Path:
    """The genai folder of a run's exported model: the smallest precision present unless one is named."""
    run_dir = Path(run_dir)
    if (run_dir / "genai_config.json").is_file():
        return run_dir
    candidates = {"fp32": run_dir / "export", **{p: run_dir / "quantize" / p for p in ("int4", "int8")}}
    for p in [precision] if precision else PRECISIONS:
        if (candidates[p] / "genai_config.json").is_file():
            return candidates[p]
    raise RecipeError(
        f"{run_dir}: no exported causal-LM model{' of precision ' + precision if precision else ''} "
        f"(run `edgetune build` on a causal-lm recipe first)"
    )


def opening_messages(run_dir: Path, system: str | None = None) -> list[dict]:
    """The conversation's start: `system`, else the run's recipe system prompt, else nothing."""
    meta = Path(run_dir) / "recipe.json"
    if system is None and meta.is_file():
        system = json.loads(meta.read_text()).get("dataset", {}).get("system_prompt")
    return [{"role": "system", "content": system}] if system else []


class Chat:
    """A loaded model plus its tokenizer; `stream` yields text pieces of the assistant's reply."""

    def __init__(self, folder: Path, threads: int = 0) -> None:
        from edgetune.core.lines import auto_tokenizer
        from edgetune.runtime.decoding import end_ids
        from edgetune.runtime.genai import GenaiLM

        self.model = GenaiLM(folder, threads)
        try:
            self.tokenizer = auto_tokenizer(folder)
        except Exception as e:
            raise EdgetuneError(f"{folder}: cannot load the tokenizer: {str(e).splitlines()[0][:160]}") from None
        self.eos = end_ids(self.tokenizer)

    def stream(self, messages: list[dict], max_tokens: int = 128) -> Iterator[str]:
        from edgetune.runtime.decoding import chat_ids

        ids = chat_ids(self.tokenizer, messages)
        out: list[int] = []
        shown = ""
        for t in self.model.tokens(ids, max_tokens):
            if t in self.eos:
                break
            out.append(t)
            text = self.tokenizer.decode(out, skip_special_tokens=True)
            if len(text) > len(shown) and not text.endswith("\ufffd"):  # wait for whole UTF-8 characters
                yield text[len(shown) :]
                shown = text


def generate(
    run_dir: Path,
    prompt: str,
    max_tokens: int = 128,
    precision: str | None = None,
    threads: int = 0,
    system: str | None = None,
    on_text: Callable[[str], None] | None = None,
) -> str:
    """Answer one prompt with the run's exported model; returns the reply (also streamed to `on_text`)."""
    chat = Chat(model_folder(run_dir, precision), threads)
    messages = opening_messages(run_dir, system) + [{"role": "user", "content": prompt}]
    pieces = []
    for piece in chat.stream(messages, max_tokens):
        pieces.append(piece)
        if on_text:
            on_text(piece)
    return "".join(pieces)
