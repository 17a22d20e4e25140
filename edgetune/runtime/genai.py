"""An onnxruntime-genai model folder as a greedy decoder (what verify, bench and `edgetune chat` run)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


def _window(folder: Path) -> int:
    """The decoder's sliding window (at most its context length) from genai_config.json; 0 when it has none."""
    try:
        model = json.loads((folder / "genai_config.json").read_text())["model"]
    except (OSError, ValueError, KeyError):
        return 0
    window = (model.get("decoder", {}).get("sliding_window") or {}).get("window_size") or 0
    return min(int(window), int(model.get("context_length") or window))


class GenaiLM:
    """An onnxruntime-genai model folder (genai_config.json beside model.onnx) with greedy decoding."""

    def __init__(self, folder: Path, threads: int = 0) -> None:
        import onnxruntime_genai as og

        from edgetune.core.errors import EdgetuneError

        self.og, self.folder = og, Path(folder)
        # onnxruntime (1.32, with the 0.18 builder's graphs) makes no KV cache shorter than a sliding window
        self.min_length = _window(self.folder)
        self.pruned = False  # found on the first `logits` call: prefill gives the last position's logits only
        self.adapters: Any = None  # og.Adapters, made by the first load_adapter
        self.loaded: set[str] = set()
        self.active: str | None = None
        try:
            cfg = og.Config(str(folder))
            cfg.clear_providers()
            if threads:
                cfg.overlay(
                    json.dumps(
                        {
                            "model": {
                                "decoder": {
                                    "session_options": {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
                                }
                            }
                        }
                    )
                )
            self.model = og.Model(cfg)
        except Exception as e:
            raise EdgetuneError(f"onnxruntime-genai cannot load {folder}: {str(e).splitlines()[0][:200]}") from None

    def eval(self) -> GenaiLM:
        return self

    def load_adapter(self, name: str, path: Path) -> None:
        """Load an `.onnx_adapter` file (edgetune.engines.adapters) under `name`, beside the base model: every
        adapter shares the one og.Model; `use_adapter` picks which one later generations run with."""
        from edgetune.core.errors import EdgetuneError

        if self.adapters is None:
            self.adapters = self.og.Adapters(self.model)
        try:
            self.adapters.load(str(path), name)
            self.loaded.add(name)
        except Exception as e:
            raise EdgetuneError(
                f"onnxruntime-genai cannot load adapter {path}: {str(e).splitlines()[0][:200]}"
            ) from None

    def use_adapter(self, name: str | None) -> None:
        """Run the next generations with adapter `name` (loaded with load_adapter), or the bare base (None)."""
        from edgetune.core.errors import EdgetuneError

        if name is not None and (self.adapters is None or name not in self.loaded):
            raise EdgetuneError(
                f"no adapter named '{name}' loaded (loaded: {', '.join(sorted(self.loaded)) or 'none'})"
            )
        self.active = name

    def _failed(self, e: Exception) -> Exception:
        from edgetune.core.errors import EdgetuneError

        return EdgetuneError(f"onnxruntime-genai failed running {self.folder}: {str(e).splitlines()[0][:300]}")

    def _generator(self, ids: list[int], max_length: int) -> Any:
        try:
            params = self.og.GeneratorParams(self.model)
            params.set_search_options(do_sample=False, max_length=max(max_length, self.min_length))
            gen = self.og.Generator(self.model, params)
            if self.active is not None:
                gen.set_active_adapter(self.adapters, self.active)
            gen.append_tokens([ids])
        except RuntimeError as e:
            raise self._failed(e) from None
        return gen

    def logits(self, ids: list[int], first: int = 0) -> np.ndarray:
        """Next-token logits at positions `first`..len(ids)-1 of `ids`: [len(ids) - first, vocab].

        A model built with the lm_head pruned (the builder's prune_lm_head: prefill computes the last position's
        logits only, as llama.cpp does) gives the later positions one decoding step each."""
        first = max(0, min(first, len(ids) - 1))
        gen = self._generator(ids[: first + 1] if self.pruned else ids, len(ids) + 1)
        out = np.asarray(gen.get_output("logits"))[0]
        if out.shape[0] == len(ids) or (self.pruned and out.shape[0] == 1):
            rows = [out[first:]] if not self.pruned else [out[-1:]]
        else:  # the first call on a pruned model: its one row is the last position's
            self.pruned = True
            return self.logits(ids, first)
        if self.pruned:
            try:
                for t in ids[first + 1 :]:
                    gen.append_tokens([[t]])
                    rows.append(np.asarray(gen.get_output("logits"))[0][-1:])
            except RuntimeError as e:
                raise self._failed(e) from None
        return np.concatenate(rows)

    def tokens(self, ids: list[int], max_new_tokens: int) -> Iterator[int]:
        """Greedy new tokens after `ids`, one at a time as they are decoded."""
        gen = self._generator(ids, len(ids) + max_new_tokens)
        for _ in range(max_new_tokens):
            if gen.is_done():
                return
            try:
                gen.generate_next_token()
            except RuntimeError as e:
                raise self._failed(e) from None
            yield int(gen.get_next_tokens()[0])

    def greedy(self, ids: list[int], max_new_tokens: int, eos: set[int]) -> list[int]:
        """Greedy new tokens up to and including the first end token."""
        out: list[int] = []
        for t in self.tokens(ids, max_new_tokens):
            out.append(t)
            if t in eos:
                break
        return out
