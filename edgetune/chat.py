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


ADAPTERS = Path("adapters") / "model"  # the adapters stage's base model folder in a run directory


def adapters_folder(run_dir: Path, precision: str | None = None) -> Path:
    """The run's int4 base with its .onnx_adapter files (the adapters stage's output)."""
    if precision not in (None, "int4"):
        raise RecipeError(f"--adapter: adapters run over the int4 base only (not --precision {precision})")
    folder = Path(run_dir) / ADAPTERS
    if not (folder / "genai_config.json").is_file():
        raise RecipeError(f"{run_dir}: no adapters built (a recipe with an adapters: list, then `edgetune build`)")
    return folder


def opening_messages(run_dir: Path, system: str | None = None, adapter: str | None = None) -> list[dict]:
    """The conversation's start: `system`, else the run's recipe system prompt (with `adapter`, that adapter's
    dataset's, when it has its own), else nothing."""
    meta = Path(run_dir) / "recipe.json"
    if system is None and meta.is_file():
        recipe = json.loads(meta.read_text())
        system = recipe.get("dataset", {}).get("system_prompt")
        for a in recipe.get("adapters") or []:
            if a["name"] == adapter and a.get("dataset"):
                system = a["dataset"].get("system_prompt")
    return [{"role": "system", "content": system}] if system else []


class Chat:
    """A loaded model plus its tokenizer; `stream` yields text pieces of the assistant's reply. A folder with
    .onnx_adapter files (the adapters stage's) loads each beside the one base model; `use` switches."""

    def __init__(self, folder: Path, threads: int = 0, adapter: str | None = None) -> None:
        from edgetune.core.lines import auto_tokenizer
        from edgetune.runtime.decoding import end_ids
        from edgetune.runtime.genai import GenaiLM

        self.model = GenaiLM(folder, threads)
        self.adapters = sorted(p.stem for p in Path(folder).glob("*.onnx_adapter"))
        for name in self.adapters:
            self.model.load_adapter(name, Path(folder) / f"{name}.onnx_adapter")
        if adapter is not None:
            self.use(adapter)
        try:
            self.tokenizer = auto_tokenizer(folder)
        except Exception as e:
            raise EdgetuneError(f"{folder}: cannot load the tokenizer: {str(e).splitlines()[0][:160]}") from None
        self.eos = end_ids(self.tokenizer)

    def use(self, adapter: str | None) -> None:
        """Generate with `adapter` from now on (None: the bare base), on the same loaded model."""
        if adapter is not None and adapter not in self.adapters:
            raise RecipeError(
                f"--adapter: no adapter named '{adapter}' (the run has: {', '.join(self.adapters) or 'none'})"
            )
        self.model.use_adapter(adapter)

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
    adapter: str | None = None,
) -> str:
    """Answer one prompt with the run's exported model (with `adapter`: the int4 base with that adapter active);
    returns the reply (also streamed to `on_text`)."""
    folder = adapters_folder(run_dir, precision) if adapter else model_folder(run_dir, precision)
    chat = Chat(folder, threads, adapter)
    messages = opening_messages(run_dir, system, adapter) + [{"role": "user", "content": prompt}]
    pieces = []
    for piece in chat.stream(messages, max_tokens):
        pieces.append(piece)
        if on_text:
            on_text(piece)
    return "".join(pieces)
