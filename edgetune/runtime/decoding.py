"""Decoding helpers for causal LMs in PyTorch: chat-template ids, padded batches, logits at every position,
teacher-forced step logits, greedy generation with the KV cache."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np


def _logsumexp(x: np.ndarray) -> np.ndarray:
    m = x.max(-1, keepdims=True)
    return m + np.log(np.exp(x - m).sum(-1, keepdims=True))


def _device(model: Any) -> Any:
    """Where a PyTorch model's weights are (inputs go there; a model trained on a GPU is evaluated there)."""
    return next(model.parameters()).device


def _padded(seqs: list[list[int]], value: int, left: bool = False) -> tuple[Any, Any]:
    """Sequences as one [batch, longest] long tensor, filled with `value` on the right (or the left, for
    generation), and the attention mask that marks the real tokens."""
    import torch

    width = max(len(s) for s in seqs)
    fill = [[value] * (width - len(s)) for s in seqs]
    ones = [[1] * len(s) for s in seqs]
    zeros = [[0] * (width - len(s)) for s in seqs]
    ids = [f + list(s) if left else list(s) + f for s, f in zip(seqs, fill)]
    mask = [z + o if left else o + z for o, z in zip(ones, zeros)]
    return torch.tensor(ids, dtype=torch.long), torch.tensor(mask, dtype=torch.long)


def _all_logits(
    model: Any, seqs: list[list[int]], batch_size: int, firsts: list[int] | None = None
) -> Iterator[np.ndarray]:
    """Logits at positions firsts[i]..len-1 of each sequence (default: every position): [len(seq) - first,
    vocab], float64 for a float64 model.

    A PyTorch model runs `batch_size` sequences at a time, right-padded (causal attention: padding after a
    sequence cannot change its logits); an ONNX runner takes them one by one (and, where prefill computes the
    last position's logits only, steps through the positions from `first`)."""
    firsts = firsts if firsts is not None else [0] * len(seqs)
    if hasattr(model, "logits") and not hasattr(model, "config"):
        for ids, first in zip(seqs, firsts):
            yield np.asarray(model.logits(ids, first), dtype=np.float32)
        return
    import torch

    device = _device(model)
    for at in range(0, len(seqs), max(1, batch_size)):
        chunk = seqs[at : at + batch_size]
        ids, mask = _padded(chunk, 0)
        with torch.inference_mode():
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        out = (out if out.dtype == torch.float64 else out.float()).cpu()
        for j, s in enumerate(chunk):  # one batch in memory at a time: vocabulary-wide logits are large
            yield out[j, firsts[at + j] : len(s)].numpy()


def prompt_ids(tokenizer: Any, example: dict) -> list[int]:
    """The conversation up to the last assistant turn, ready for generation."""
    return chat_ids(tokenizer, example["messages"][:-1])


def chat_ids(tokenizer: Any, messages: list[dict]) -> list[int]:
    """`messages` through the chat template, ending with the assistant's turn opened."""
    return _ids(tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True))


def step_logits(model: Any, seqs: list[tuple[list[int], list[int]]]) -> list[np.ndarray]:
    """For each (prompt ids, generated tokens): the next-token logits before each generated token, from one
    causal forward pass (teacher-forced: as if the model had chosen exactly those tokens)."""
    import torch

    out = []
    with torch.inference_mode():
        for prompt, tokens in seqs:
            ids = torch.tensor([list(prompt) + list(tokens[:-1])])
            logits = model(input_ids=ids).logits[0].float().numpy()
            out.append(logits[len(prompt) - 1 : len(prompt) - 1 + len(tokens)])
    return out


def end_ids(tokenizer: Any) -> set[int]:
    """The tokens generation stops at: eos, ChatML's <|im_end|> where the vocabulary has it, and the token the
    chat template closes an assistant turn with (<end_of_turn>, <|eot_id|>, ...)."""
    ids = {tokenizer.eos_token_id, turn_end_id(tokenizer)}
    if "<|im_end|>" in tokenizer.get_vocab():
        ids.add(tokenizer.convert_tokens_to_ids("<|im_end|>"))
    return {i for i in ids if i is not None}


_REPLY = "edgetune-reply"


def turn_end_id(tokenizer: Any) -> int | None:
    """The special token the tokenizer's chat template writes right after an assistant message, or None (no
    template, or no special token there)."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    import jinja2

    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _REPLY}]
    try:
        text = tokenizer.apply_chat_template(chat, tokenize=False)
    except jinja2.TemplateError:  # a template that wants another conversation (a system message, ...)
        return None
    after = text.partition(_REPLY)[2]
    ids = tokenizer(after, add_special_tokens=False)["input_ids"] if after else []
    special = set(tokenizer.all_special_ids) | set(tokenizer.get_added_vocab().values())
    return ids[0] if ids and ids[0] in special else None


def _ids(x: Any) -> list[int]:
    """apply_chat_template returns a list, or a BatchEncoding in newer transformers."""
    if isinstance(x, dict) or hasattr(x, "input_ids"):
        x = x["input_ids"]
    return list(x)


def greedy_torch(
    model: Any, prompts: list[list[int]], budgets: list[int], eos: set[int], batch_size: int = 16
) -> list[list[int]]:
    """Greedy decoding with the PyTorch model and its KV cache, `batch_size` prompts at a time (left-padded,
    prompts of similar length together); each result stops after its first end token or its budget."""
    import torch

    pad = sorted(eos)[0]
    out: list[list[int]] = [[] for _ in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    for at in range(0, len(order), batch_size):
        chunk = order[at : at + batch_size]
        ids, mask = _padded([prompts[i] for i in chunk], pad, left=True)
        width = ids.shape[1]
        with torch.inference_mode():
            new = model.generate(
                ids.to(_device(model)),
                attention_mask=mask.to(_device(model)),
                max_new_tokens=max(budgets[i] for i in chunk),
                do_sample=False,
                eos_token_id=sorted(eos),
                pad_token_id=pad,
            )[:, width:]
        for row, i in zip(new.tolist(), chunk):
            toks = row[: budgets[i]]
            end = next((k for k, t in enumerate(toks) if t in eos), None)
            out[i] = toks if end is None else toks[: end + 1]
    return out
