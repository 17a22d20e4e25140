"""More text for the teacher to label: perturbed copies of the training texts (words dropped, masked,
swapped)."""

from __future__ import annotations


def augment_examples(
    examples: list[dict],
    copies: int,
    seed: int = 0,
    mask_token: str | None = None,
    p_drop: float = 0.1,
    p_mask: float = 0.1,
    p_swap: float = 0.1,
) -> list[dict]:
    """`examples` followed by `copies` perturbed copies of each: every word is dropped with p_drop, replaced by
    `mask_token` (or, without one, by a random word of the training texts) with p_mask, and swapped with its
    right neighbour with p_swap. The copies keep their gold label; in distillation mostly the teacher's
    soft labels on them teach the student (small data: the student sees more of the teacher's function than
    the training texts alone show). Deterministic for a seed; a copy never comes out empty."""
    import random

    if copies <= 0:
        return list(examples)
    rng = random.Random(seed)
    vocab = sorted({w for e in examples for w in e["text"].split()})
    out = list(examples)
    for c in range(copies):
        for e in examples:
            words = e["text"].split()
            new = []
            for w in words:
                r = rng.random()
                if r < p_drop:
                    continue
                if r < p_drop + p_mask:
                    new.append(mask_token if mask_token else rng.choice(vocab))
                else:
                    new.append(w)
            for i in range(len(new) - 1):
                if rng.random() < p_swap:
                    new[i], new[i + 1] = new[i + 1], new[i]
            text = " ".join(new) if new else rng.choice(words)
            out.append({**e, "text": text, "augmented": c + 1})
    return out
