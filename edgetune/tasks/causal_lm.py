"""Causal language modelling on chat data (LLaMA-family decoders): loss on assistant tokens only."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..data import Row, file_sha256, read_rows
from ..errors import RecipeError
from .base import TaskData

ROLES = {"system", "user", "assistant"}
IGNORE = -100


def _messages(row: Row, system_prompt: str | None) -> list[dict]:
    f = row.fields
    if "messages" in f:
        msgs = f["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise RecipeError(f"{row.where}: 'messages' must be a non-empty list")
        out = []
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise RecipeError(f"{row.where}: messages[{i}] must be an object with string 'role' and 'content'")
            if m["role"] not in ROLES:
                raise RecipeError(f"{row.where}: messages[{i}] has unknown role '{m['role']}' (expected system, user or assistant)")
            out.append({"role": m["role"], "content": m["content"]})
    elif "instruction" in f and "response" in f:
        if not isinstance(f["instruction"], str) or not isinstance(f["response"], str):
            raise RecipeError(f"{row.where}: 'instruction' and 'response' must be strings")
        context = f.get("input") or f.get("context") or ""
        user = f["instruction"] + (f"\n\n{context}" if context else "")
        out = [{"role": "user", "content": user}, {"role": "assistant", "content": f["response"]}]
    else:
        raise RecipeError(f"{row.where}: a chat record needs 'messages' or 'instruction' and 'response'")
    if out[-1]["role"] != "assistant":
        raise RecipeError(f"{row.where}: the last message must be the assistant's response")
    for i, m in enumerate(out):
        if m["role"] == "assistant" and not m["content"].strip():
            raise RecipeError(f"{row.where}: messages[{i}]: empty assistant response")
    if not any(m["role"] == "user" for m in out):
        raise RecipeError(f"{row.where}: no user message")
    if system_prompt and out[0]["role"] != "system":
        out = [{"role": "system", "content": system_prompt}] + out
    return out


def parse_json(text: str) -> Any:
    """The first JSON value in `text`, or None when there is none."""
    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
    if start < 0:
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(text[start:])
        return value
    except json.JSONDecodeError:
        return None


class CausalLMTask:
    name = "causal-lm"
    peft_task_type = "CAUSAL_LM"

    # -- data -----------------------------------------------------------------------------------
    def load_data(self, cfg: Any, base_dir: Path, source: Any = None) -> TaskData:
        def resolve(p: str) -> Path:
            q = Path(p).expanduser()
            return q if q.is_absolute() else base_dir / q

        tokenizer = self.load_tokenizer(source.path) if source is not None else None
        context = _context_length(source.path) if source is not None else None

        def load(path: Path, field: str) -> list[dict]:
            rows = read_rows(path, cfg.format, field)
            out = []
            for r in rows:
                msgs = _messages(r, cfg.system_prompt)
                ex = {"messages": msgs, "where": r.where}
                if tokenizer is not None:
                    ids, labels = self._encode(tokenizer, msgs, r.where)
                    if context and len(ids) > context:
                        raise RecipeError(f"{r.where}: {len(ids)} tokens, longer than the model's context of {context}")
                    ex["ids"], ex["labels"] = ids, labels
                out.append(ex)
            return out

        train_path = resolve(cfg.train)
        train = load(train_path, "dataset.train")
        sources = {str(train_path): file_sha256(train_path)}
        if cfg.eval:
            eval_path = resolve(cfg.eval)
            evals = load(eval_path, "dataset.eval")
            sources[str(eval_path)] = file_sha256(eval_path)
        else:
            order = list(range(len(train)))
            random.Random(cfg.seed).shuffle(order)
            n_eval = max(1, round(len(train) * cfg.eval_fraction))
            if n_eval >= len(train):
                raise RecipeError(f"dataset.eval_fraction: leaves no training rows ({len(train)} rows in {train_path})")
            held = set(order[:n_eval])
            evals = [e for i, e in enumerate(train) if i in held]
            train = [e for i, e in enumerate(train) if i not in held]
        settings = cfg.model_dump(exclude={"train", "eval"})
        fp = hashlib.sha256(
            json.dumps([self.name, list(sources.values()), bool(cfg.eval), settings], sort_keys=True).encode()
        ).hexdigest()
        return TaskData(train=train, eval=evals, labels=[], fingerprint=fp, sources=sources)

    def _encode(self, tokenizer: Any, msgs: list[dict], where: str) -> tuple[list[int], list[int]]:
        """Token ids of the whole chat and labels that keep only assistant tokens (the rest is IGNORE)."""
        if not getattr(tokenizer, "chat_template", None):
            raise RecipeError(f"{where}: the tokenizer has no chat template")
        ids = _ids(tokenizer.apply_chat_template(msgs, tokenize=True))
        labels = [IGNORE] * len(ids)
        for i, m in enumerate(msgs):
            if m["role"] != "assistant":
                continue
            before = _ids(tokenizer.apply_chat_template(msgs[:i], tokenize=True, add_generation_prompt=True))
            upto = _ids(tokenizer.apply_chat_template(msgs[: i + 1], tokenize=True))
            if ids[: len(upto)] != upto or upto[: len(before)] != before:
                raise RecipeError(f"{where}: the chat template does not render turns as prefixes of each other")
            labels[len(before): len(upto)] = upto[len(before):]
        return ids, labels

    def prompt_ids(self, tokenizer: Any, example: dict) -> list[int]:
        """The conversation up to the last assistant turn, ready for generation."""
        return _ids(tokenizer.apply_chat_template(example["messages"][:-1], tokenize=True, add_generation_prompt=True))

    # -- model ----------------------------------------------------------------------------------
    def load_model(self, path: Path, data: TaskData | None = None, trust_remote_code: bool = False) -> Any:
        import torch
        from transformers import AutoModelForCausalLM

        path = Path(path)
        kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "dtype": torch.float32}
        if path.is_file() and path.suffix == ".gguf":
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, **kwargs)
        else:
            model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=any(path.glob("*.safetensors")), **kwargs)
        return model.eval()

    def load_tokenizer(self, path: Path, trust_remote_code: bool = False) -> Any:
        from transformers import AutoTokenizer

        path = Path(path)
        if path.is_file() and path.suffix == ".gguf":
            tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, trust_remote_code=trust_remote_code)
        else:
            tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        return tok

    def batches(
        self, examples: list[dict], tokenizer: Any, batch_size: int, max_length: int, shuffle_seed: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Length-bucketed batches: examples of similar length together, so little time goes to padding."""
        import torch

        order = sorted(range(len(examples)), key=lambda i: len(examples[i]["ids"]))
        chunks = [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
        if shuffle_seed is not None:
            random.Random(shuffle_seed).shuffle(chunks)
        pad = tokenizer.pad_token_id
        for chunk in chunks:
            seqs = [examples[i]["ids"][:max_length] for i in chunk]
            labs = [examples[i]["labels"][:max_length] for i in chunk]
            width = max(len(s) for s in seqs)
            ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            labels = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
            for j, (s, lab) in enumerate(zip(seqs, labs)):
                ids[j, : len(s)] = torch.tensor(s)
                mask[j, : len(s)] = 1
                labels[j, : len(lab)] = torch.tensor(lab)
            yield {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def evaluate(self, model: Any, tokenizer: Any, examples: list[dict], batch_size: int, max_length: int) -> tuple[np.ndarray, dict]:
        """Log-probabilities of every assistant token (the comparable output) and the perplexity they give."""
        import torch

        model.eval()
        logps = []
        for b in self.batches(examples, tokenizer, batch_size, max_length):
            with torch.inference_mode():
                logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            logits = logits.double() if logits.dtype == torch.float64 else logits.float()
            target = b["labels"][:, 1:]
            lp = torch.log_softmax(logits[:, :-1], dim=-1)
            keep = target != IGNORE
            picked = lp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            logps.append(picked[keep].numpy())
        out = np.concatenate(logps)
        return out, {"perplexity": float(np.exp(-out.mean())), "tokens": int(out.size)}


def _ids(x: Any) -> list[int]:
    """apply_chat_template returns a list, or a BatchEncoding in newer transformers."""
    if isinstance(x, dict) or hasattr(x, "input_ids"):
        x = x["input_ids"]
    return list(x)


def _context_length(path: Path) -> int | None:
    from transformers import AutoConfig

    path = Path(path)
    try:
        cfg = AutoConfig.from_pretrained(path.parent, gguf_file=path.name) if path.suffix == ".gguf" else AutoConfig.from_pretrained(path)
    except Exception:
        return None
    return getattr(cfg, "max_position_embeddings", None)
