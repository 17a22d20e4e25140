"""Tiny random models and datasets built in tmp_path: no downloads, seconds per build."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
import yaml

# -- skips and xfails under CI -------------------------------------------------------------------------------------
ALLOWED_SKIPS = Path(__file__).with_name("allowed_skips.txt")
_skipped: list[tuple[str, str]] = []  # (node id, reason) of every skipped or xfailed test of this session


def allowed_skips() -> set[str]:
    """The node ids tests/allowed_skips.txt lets skip (comments and blank lines dropped)."""
    lines = (ln.split("#", 1)[0].strip() for ln in ALLOWED_SKIPS.read_text().splitlines())
    return {ln for ln in lines if ln}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        why = getattr(report, "wasxfail", None)
        reason = f"xfail: {why}" if why is not None else str(report.longrepr[-1] if report.longrepr else "")
        _skipped.append((report.nodeid, reason))


def _unexpected() -> list[tuple[str, str]]:
    allowed = allowed_skips()
    return [(node, why) for node, why in _skipped if node not in allowed and node.split("[")[0] not in allowed]


def _worker(config: pytest.Config) -> bool:
    """Whether this is a pytest-xdist worker: its reports also reach the controller, which judges the skips."""
    return hasattr(config, "workerinput")


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if _worker(config):
        return
    unexpected = _unexpected()
    if unexpected:
        verdict = "fail the run under CI" if os.environ.get("CI") else "would fail the run under CI"
        terminalreporter.section(f"skips outside tests/allowed_skips.txt ({verdict})")
        for node, why in unexpected:
            terminalreporter.line(f"{node}: {why}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("CI") and not _worker(session.config) and _unexpected() and exitstatus == 0:
        session.exitstatus = 1


WORDS = {
    "lights": "turn on the lights please switch lamp bright room kitchen bedroom",
    "music": "play some music song jazz rock radio speaker loud",
    "door": "lock the front door garage secure bolt entrance back",
}


def make_rows(n_per_label: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for label, words in WORDS.items():
        vocab = words.split()
        for _ in range(n_per_label):
            rows.append({"text": " ".join(rng.choices(vocab, k=rng.randint(3, 8))), "label": label})
    rng.shuffle(rows)
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide random BERT with a word-level WordPiece vocab, saved like a hub folder."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    root = tmp_path_factory.mktemp("models") / "bert"
    root.mkdir()
    words = sorted({w for ws in WORDS.values() for w in ws.split()})
    (root / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tok = BertTokenizerFast.from_pretrained(root)  # transformers 5 ignores a vocab_file= argument
    tok.save_pretrained(root)
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(words) + 5,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    BertModel(cfg).save_pretrained(root)  # a base encoder: the classifier head is new, as with all-MiniLM
    return root


def tiny_classifier_recipe(folder: Path, model: Path, epochs: int = 2, **sections) -> Path:
    """Write a classification recipe for the tiny BERT (and its data) into `folder`; `sections` override."""
    return write_recipe(
        folder,
        make_rows(16, seed=1),
        make_rows(6, seed=2),
        {
            "name": "tiny",
            "task": "classification",
            "model": {"source": str(model)},
            "lora": {"r": 4, "alpha": 8, "target_modules": ["query", "value"]},
            "training": {"epochs": epochs, "learning_rate": 0.01, "batch_size": 8, "max_length": 16},
            "benchmark": {"threads": 1, "sequence_lengths": [8, 16], "warmup": 1, "runs": 3, "rounds": 1},
            **sections,
        },
    )


@pytest.fixture
def tiny_recipe(tmp_path, tiny_bert) -> Path:
    """A recipe (and its data) for the tiny BERT; returns the recipe path."""
    return tiny_classifier_recipe(tmp_path, tiny_bert)


def write_recipe(tmp_path: Path, train: list[dict], evals: list[dict], recipe: dict) -> Path:
    """Write data/train.jsonl, data/eval.jsonl and recipe.yaml (which points at them) into tmp_path."""
    write_jsonl(tmp_path / "data" / "train.jsonl", train)
    write_jsonl(tmp_path / "data" / "eval.jsonl", evals)
    path = tmp_path / "recipe.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                **recipe,
                "dataset": {"train": "data/train.jsonl", "eval": "data/eval.jsonl", **recipe.get("dataset", {})},
            },
            sort_keys=False,
        )
    )
    return path


def edit_recipe(path: Path, **sections) -> Path:
    """Update sections of a recipe file in place, e.g. edit_recipe(p, training={"epochs": 3})."""
    data = yaml.safe_load(path.read_text())
    for k, v in sections.items():
        if isinstance(v, dict) and isinstance(data.get(k), dict):
            data[k].update(v)
        else:
            data[k] = v
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """A 2-layer random LLaMA with a byte-level tokenizer and a ChatML template, saved like a hub folder."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("models") / "llama"
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
        pad_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    tok.chat_template = CHATML
    tok.save_pretrained(root)
    torch.manual_seed(0)
    # head_dim 16: onnxruntime's GroupQueryAttention needs a multiple of 16
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(cfg).save_pretrained(root)
    return root


def make_chats(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rooms, devices = ["kitchen", "bedroom", "office"], ["light", "fan", "tv"]
    out = []
    for _ in range(n):
        room, dev, on = rng.choice(rooms), rng.choice(devices), rng.random() < 0.5
        user = f"turn {'on' if on else 'off'} the {room} {dev}"
        answer = json.dumps({"device": dev, "room": room, "action": "on" if on else "off", "value": None})
        out.append({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]})
    return out


@pytest.fixture
def tiny_chat_recipe(tmp_path, tiny_llama) -> Path:
    """A causal-lm recipe (and its chat data) for the tiny LLaMA; returns the recipe path."""
    return write_recipe(
        tmp_path,
        make_chats(24, seed=1),
        make_chats(6, seed=2),
        {
            "name": "tiny-chat",
            "task": "causal-lm",
            "model": {"source": str(tiny_llama)},
            "dataset": {"system_prompt": "Reply with JSON.", "response_format": "json"},
            "lora": {"r": 4, "alpha": 8},
            "training": {"epochs": 2, "learning_rate": 0.01, "batch_size": 8, "max_length": 128},
            "quantize": {"precisions": ["int8", "int4"], "int4_block_size": 16},
            "verify": {"greedy_tokens": 8},
            "benchmark": {"threads": 1, "sequence_lengths": [16], "new_tokens": 8, "warmup": 1, "runs": 2, "rounds": 1},
        },
    )
