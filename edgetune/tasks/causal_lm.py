"""Causal language modelling on chat data (LLaMA-family decoders): loss on assistant tokens only; or on
prompt/completion rows (a base model's raw text, no chat format): loss on the completion and its end token."""

from __future__ import annotations

import copy
import functools
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgetune.build import TaskData
from edgetune.core.data import Row, data_fingerprint, file_sha256, load_splits
from edgetune.core.errors import RecipeError
from edgetune.core.families import for_genai_builder
from edgetune.core.lines import auto_config, auto_tokenizer
from edgetune.core.templates import TOKENS, completion_template, read_template
from edgetune.engines.verify import fp32_gates
from edgetune.runtime.decoding import _all_logits, _ids, _logsumexp, _padded, end_ids, greedy_torch
from edgetune.runtime.genai import GenaiLM

if TYPE_CHECKING:
    from edgetune.build import Stage

ROLES = {"system", "user", "assistant"}
IGNORE = -100
NO_TEMPLATE = (
    "the tokenizer has no chat template; set dataset.chat_template (chatml, gemma, llama3, or a .jinja file) "
    "or use prompt/completion rows"
)


def _is_completion(row: Row) -> bool:
    """A prompt/completion row (raw text for a base model) rather than a chat row."""
    return "prompt" in row.fields and "completion" in row.fields and "messages" not in row.fields


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
                raise RecipeError(
                    f"{row.where}: messages[{i}] has unknown role '{m['role']}' (expected system, user or assistant)"
                )
            out.append({"role": m["role"], "content": m["content"]})
    elif _is_completion(row):
        if not isinstance(f["prompt"], str) or not isinstance(f["completion"], str):
            raise RecipeError(f"{row.where}: 'prompt' and 'completion' must be strings")
        if not f["prompt"].strip():
            raise RecipeError(f"{row.where}: empty prompt")
        if not f["completion"].strip():
            raise RecipeError(f"{row.where}: empty completion")
        out = [{"role": "user", "content": f["prompt"]}, {"role": "assistant", "content": f["completion"]}]
    elif "instruction" in f and "response" in f:
        if not isinstance(f["instruction"], str) or not isinstance(f["response"], str):
            raise RecipeError(f"{row.where}: 'instruction' and 'response' must be strings")
        context = f.get("input") or f.get("context") or ""
        user = f["instruction"] + (f"\n\n{context}" if context else "")
        out = [{"role": "user", "content": user}, {"role": "assistant", "content": f["response"]}]
    else:
        raise RecipeError(
            f"{row.where}: a record needs 'messages', 'instruction' and 'response', or 'prompt' and 'completion'"
        )
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
    auto_carves_selection = True  # its int4 layout search (engines/int4_auto.py)

    def stages(self) -> list[Stage]:
        from edgetune.stages.adapters import ShipAdapters, TrainAdapters
        from edgetune.stages.bench import DecodeBench
        from edgetune.stages.export import GenaiExport
        from edgetune.stages.finetune import Finetune
        from edgetune.stages.merge import Merge
        from edgetune.stages.package import ChatPackage
        from edgetune.stages.quantize import GenaiQuantize
        from edgetune.stages.report import ReportStage
        from edgetune.stages.verify import Verify

        return [
            Finetune(),
            TrainAdapters(),
            Merge(),
            GenaiExport(),
            GenaiQuantize(),
            Verify(generate=True),
            ShipAdapters(),
            ChatPackage(),
            DecodeBench(),
            ReportStage(),
        ]

    # -- data -----------------------------------------------------------------------------------
    def load_data(self, cfg: Any, base_dir: Path, source: Any = None, max_length: int | None = None) -> TaskData:
        """Rows are all chat rows (messages, or instruction/response) or all prompt/completion rows. The chat
        template the rows are encoded with, when it is not the tokenizer's own (dataset.chat_template, or the raw
        template of prompt/completion rows), is TaskData.chat_template: finetune writes it into the tokenizer it
        saves with the adapter, and every later folder copies that tokenizer."""
        given, template_file = read_template(cfg.chat_template, base_dir) if cfg.chat_template else (None, None)
        tokenizer = self.load_tokenizer(source.path) if source is not None else None
        context = _context_length(source.path) if source is not None else None
        state: dict[str, Any] = {"template": given}
        warnings: list[str] = []

        def begin(completion: bool, where: str) -> None:
            """Before the first row: the chat template this dataset's rows are encoded with."""
            nonlocal tokenizer
            state["completion"], state["where"] = completion, where
            own = bool(tokenizer is not None and getattr(tokenizer, "chat_template", None))
            if completion:
                for key, value in (("system_prompt", cfg.system_prompt), ("chat_template", cfg.chat_template)):
                    if value:
                        raise RecipeError(
                            f"dataset.{key}: prompt/completion rows ({where}) go to the model as they are, "
                            f"with no chat format; remove dataset.{key}, or write the rows as 'messages' or "
                            f"'instruction'/'response' to train in a chat format"
                        )
                if tokenizer is None:
                    return
                state["template"] = completion_template(_starts_with_bos(tokenizer))
                if tokenizer.eos_token_id is None:
                    raise RecipeError(
                        "model.source: prompt/completion rows end with the tokenizer's eos_token, and it has none; "
                        "set eos_token in tokenizer_config.json"
                    )
                if own:
                    warnings.append(
                        "prompt/completion rows: the exported tokenizer's chat template is the raw prompt "
                        "(edgetune chat and the app pass prompts as they are), not the tokenizer's own"
                    )
            elif tokenizer is not None:
                if given is None and not own:
                    raise RecipeError(NO_TEMPLATE)
                if given is not None and own:
                    warnings.append(f"dataset.chat_template: {cfg.chat_template} replaces the tokenizer's own template")
                missing = [t for t in TOKENS.get(cfg.chat_template or "", ()) if t not in tokenizer.get_vocab()]
                if missing:
                    raise RecipeError(
                        f"dataset.chat_template: {cfg.chat_template} writes {', '.join(missing)}, which the "
                        f"tokenizer does not have as tokens (so no turn would end with one token to stop at); "
                        f"use the template of the model's family, or a .jinja file"
                    )
            if tokenizer is not None and state["template"] is not None:
                tokenizer = _with_template(tokenizer, state["template"])

        def parse(rows: list[Row]) -> list[dict]:
            out = []
            for r in rows:
                msgs = _messages(r, cfg.system_prompt)
                completion = _is_completion(r)
                if "completion" not in state:
                    begin(completion, r.where)
                elif completion != state["completion"]:
                    kinds = ("a chat row", "a prompt/completion row")
                    raise RecipeError(
                        f"{r.where}: {kinds[completion]}, but {state['where']} is {kinds[not completion]}; a "
                        f"dataset's rows (train and eval) are all chat rows or all prompt/completion rows"
                    )
                ex: dict[str, Any] = {"messages": msgs, "where": r.where}
                if tokenizer is not None:
                    encode = self._encode_completion if completion else self._encode
                    ids, labels = encode(tokenizer, msgs, r.where)
                    if context and len(ids) > context:
                        raise RecipeError(f"{r.where}: {len(ids)} tokens, longer than the model's context of {context}")
                    start = next(i for i, lab in enumerate(labels) if lab != IGNORE)
                    if max_length is not None and start >= max_length:
                        raise RecipeError(
                            f"{r.where}: the prompt takes {start} tokens, so no assistant token fits "
                            f"in training.max_length ({max_length}); raise training.max_length or "
                            f"shorten the conversation"
                        )
                    ex["ids"], ex["labels"] = ids, labels
                if cfg.response_format == "json":
                    if parse_json(msgs[-1]["content"]) is None:
                        raise RecipeError(
                            f"{r.where}: the assistant's answer is not JSON, but dataset.response_format "
                            f"is json (answers are scored by exact match of the parsed JSON)"
                        )
                    ex["score_json"] = True
                out.append(ex)
            return out

        train, evals, sources = load_splits(cfg, base_dir, parse)
        template = state["template"]
        if template_file is not None:
            sources[str(template_file)] = file_sha256(template_file)
        extra = [template] if template is not None else []  # its text: a named template's too, or the raw one
        return TaskData(
            train=train,
            eval=evals,
            labels=[],
            fingerprint=data_fingerprint(self.name, sources, cfg, *extra),
            sources=sources,
            warnings=warnings,
            chat_template=template,
        )

    def _encode(self, tokenizer: Any, msgs: list[dict], where: str) -> tuple[list[int], list[int]]:
        """Token ids of the whole chat and labels that keep only assistant tokens (the rest is IGNORE)."""
        if not getattr(tokenizer, "chat_template", None):
            raise RecipeError(NO_TEMPLATE)
        import jinja2

        def render(chat: list[dict], generation: bool = False) -> list[int]:
            try:
                return _ids(tokenizer.apply_chat_template(chat, tokenize=True, add_generation_prompt=generation))
            except jinja2.TemplateError as e:  # raise_exception() in the template, or an error rendering it
                raise RecipeError(f"{where}: the chat template refuses this conversation: {e}") from None

        ids = render(msgs)
        labels = [IGNORE] * len(ids)
        for i, m in enumerate(msgs):
            if m["role"] != "assistant":
                continue
            before = render(msgs[:i], generation=True)
            upto = render(msgs[: i + 1])
            if ids[: len(upto)] != upto or upto[: len(before)] != before:
                raise RecipeError(f"{where}: the chat template does not render turns as prefixes of each other")
            labels[len(before) : len(upto)] = upto[len(before) :]
        return ids, labels

    def _encode_completion(self, tokenizer: Any, msgs: list[dict], where: str) -> tuple[list[int], list[int]]:
        """A prompt/completion row: the prompt as generation sees it (the raw template: bos_token first where the
        tokenizer starts texts with it), then the completion and eos, tokenized on their own; labels on those."""
        prompt = _ids(tokenizer.apply_chat_template(msgs[:1], tokenize=True, add_generation_prompt=True))
        answer = [*tokenizer(msgs[1]["content"], add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
        return prompt + answer, [IGNORE] * len(prompt) + answer

    def check_model(self, info: Any, source: Any, package: Any, trust_remote_code: bool = False) -> list[str]:
        """The end token generation stops at must be known to the config or the tokenizer (load_model fills the
        config from the tokenizer, so the exported genai_config.json has it)."""
        tok = self.load_tokenizer(source.path, trust_remote_code)
        ids = info.special_ids()
        if ids["eos_token_id"] is None and tok.eos_token_id is None:
            raise RecipeError(
                f"model.source: no end-of-sequence token: the {info.model_type} config has no "
                f"eos_token_id and the tokenizer no eos_token, so generation could not stop; set "
                f"eos_token in tokenizer_config.json or eos_token_id in config.json"
            )
        if ids["bos_token_id"] is None and tok.bos_token_id is None:
            return [
                "model: no bos_token_id in the config or the tokenizer; the exported genai_config.json gets "
                "onnxruntime-genai's default (1), which edgetune's prompts never use"
            ]
        return []

    # -- model ----------------------------------------------------------------------------------
    def load_model(
        self, path: Path, labels: list[str] | None = None, trust_remote_code: bool = False, dtype: str = "float32"
    ) -> Any:
        import torch
        from transformers import AutoModelForCausalLM

        path = Path(path)
        gguf = path.is_file() and path.suffix == ".gguf"
        # "auto": the checkpoint's own dtype (a bf16 checkpoint stays bf16); a GGUF file dequantizes to float32
        torch_dtype = torch.float32 if dtype == "float32" or gguf else "auto" if dtype == "auto" else dtype
        kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "dtype": torch_dtype}
        if gguf:
            import transformers

            if hasattr(transformers, "GgufConfig"):  # transformers 5 keeps GGUF blocks packed where it has kernels
                kwargs["quantization_config"] = transformers.GgufConfig(dequantize=True)
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, **kwargs)
            # dequantized: a plain float model, which save_pretrained writes (transformers 5 refuses while the
            # GGUF quantizer is attached) and whose config claims no quantization
            model.hf_quantizer = None  # type: ignore[assignment]
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
        else:
            config = auto_config(path, trust_remote_code=trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(
                path, config=config, use_safetensors=any(path.glob("*.safetensors")), **kwargs
            )
        _fill_special_ids(model, self.load_tokenizer(path, trust_remote_code))
        for_genai_builder(model.config)  # the merged model's config.json is what the exporter reads
        return model.eval()

    def load_tokenizer(self, path: Path, trust_remote_code: bool = False, chat_template: str | None = None) -> Any:
        """The model's tokenizer; with `chat_template` (TaskData.chat_template), carrying that template instead of
        its own, so that saving it writes the template."""
        path = Path(path)
        if path.is_file() and path.suffix == ".gguf":
            tok = _gguf_tokenizer(path)
        else:
            tok = auto_tokenizer(path, trust_remote_code=trust_remote_code)
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        return tok if chat_template is None else _with_template(tok, chat_template)

    def batches(
        self, examples: list[dict], tokenizer: Any, batch_size: int, max_length: int, shuffle_seed: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Length-bucketed batches: examples of similar length together, so little time goes to padding."""
        order = sorted(range(len(examples)), key=lambda i: len(examples[i]["ids"]))
        chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        if shuffle_seed is not None:
            random.Random(shuffle_seed).shuffle(chunks)
        for chunk in chunks:
            ids, mask = _padded([examples[i]["ids"][:max_length] for i in chunk], tokenizer.pad_token_id)
            labels, _ = _padded([examples[i]["labels"][:max_length] for i in chunk], IGNORE)
            yield {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def loss(self, model: Any, batch: dict[str, Any]) -> Any:
        """Mean cross-entropy over assistant tokens, with the output projection applied only at those positions:
        the vocabulary-wide logits of prompt tokens (most of each sequence) are never computed."""
        import torch.nn.functional as F

        if model.peft_type == "ADALORA":  # peft adds AdaLoRA's orthogonality penalty in the full forward only
            return model(**batch).loss
        base = model.get_base_model()
        hidden = base.get_decoder()(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).last_hidden_state
        target = batch["labels"][:, 1:]
        keep = target != IGNORE
        logits = base.get_output_embeddings()(hidden[:, :-1][keep])
        return F.cross_entropy(logits.float(), target[keep])

    def loss_items(self, batch: dict[str, Any]) -> int:
        """The loss is a mean over target (assistant) tokens."""
        return int((batch["labels"][:, 1:] != IGNORE).sum())

    def evaluate(
        self, model: Any, tokenizer: Any, examples: list[dict], batch_size: int, max_length: int, generate: int = 0
    ) -> tuple[np.ndarray, dict]:
        """Next-token logits after each prompt (the comparable output) and perplexity on the responses.

        With `generate` > 0 it also decodes greedily (up to the response length + `generate` tokens) and scores
        the generations: token lists in metrics['generations'], JSON exact match when responses are JSON.
        """
        first, logps, gens, texts, prompts, budgets = [], [], [], [], [], []
        eos = end_ids(tokenizer)
        seqs = [ex["ids"][:max_length] for ex in examples]
        # the first response token's position: logits before it are not needed (a pruned lm_head computes none)
        starts = [next(i for i, lab in enumerate(ex["labels"][:max_length]) if lab != IGNORE) for ex in examples]
        all_logits = _all_logits(model, seqs, batch_size, [s - 1 for s in starts])
        for ex, ids, start, logits in zip(examples, seqs, starts, all_logits):
            labels = ex["labels"][:max_length]
            first.append(logits[0])  # after the prompt
            lp = logits[:-1] - _logsumexp(logits[:-1])
            target = np.array(labels[start:])
            keep = target != IGNORE
            logps.append(lp[np.arange(len(target))[keep], target[keep]])
            if generate:
                prompts.append(ids[:start])
                budgets.append(max(generate, len(ids) - start + 8))
        if generate:
            if hasattr(model, "greedy"):
                gens = [model.greedy(p, b, eos) for p, b in zip(prompts, budgets)]
            else:
                gens = greedy_torch(model, prompts, budgets, eos, batch_size)
            texts = [tokenizer.decode([t for t in toks if t not in eos], skip_special_tokens=True) for toks in gens]
        lp_all = np.concatenate(logps)
        metrics: dict[str, Any] = {"perplexity": float(np.exp(-lp_all.mean())), "tokens": int(lp_all.size)}
        if generate:
            metrics["generations"] = gens
            if examples and all(ex.get("score_json") for ex in examples):  # dataset.response_format: json
                hits = json_hits(texts, examples)
                metrics["json_exact_match"] = sum(hits) / max(1, len(hits))
                metrics["json_exact_match_rows"] = hits  # per row (quantize.auto's paired drop and its noise)
        return np.stack(first), metrics

    def load_onnx(self, path: Path, threads: int = 0) -> GenaiLM:
        """An onnxruntime-genai model that `evaluate` can use in place of the PyTorch model."""
        return GenaiLM(Path(path).parent, threads)

    def checks(self, precision: str, cfg: Any, ref_metrics: dict, metrics: dict) -> list[tuple[str, float, float, str]]:
        """The gates for one ONNX model: (name, value, threshold, op)."""
        out = []
        if precision == "fp32":
            out += [
                *fp32_gates(cfg, metrics),
                ("greedy_agreement", metrics["greedy_agreement"], cfg.greedy_min_agreement, ">="),
            ]
        else:
            ratio = metrics["perplexity"] / ref_metrics["perplexity"]
            out.append(("perplexity_ratio", ratio, cfg.max_perplexity_ratio, "<="))
            if "json_exact_match" in metrics:
                limit = cfg.int4_max_accuracy_drop if precision == "int4" else cfg.int8_max_accuracy_drop
                drop = ref_metrics["json_exact_match"] - metrics["json_exact_match"]
                out.append(("json_exact_match_drop", drop, limit, "<="))
        return out


def _with_template(tokenizer: Any, template: str) -> Any:
    """A copy of `tokenizer` with `template` as its chat template (a GGUF's tokenizer is shared: see
    _gguf_tokenizer's cache)."""
    tok = copy.copy(tokenizer)
    tok.chat_template = template
    return tok


def _starts_with_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer puts bos_token before every text it encodes (Llama, Gemma; not GPT-2 or Qwen)."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a")["input_ids"][:1] == [bos]


def _fill_special_ids(model: Any, tokenizer: Any) -> None:
    """Copy bos/eos/pad token ids the config lacks from the tokenizer, so that the merged model's config.json,
    and the genai_config.json the model builder writes from it, name them (the builder needs eos_token_id)."""
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(tokenizer, key, None)
        if getattr(model.config, key, None) is None and value is not None:
            setattr(model.config, key, value)
            if getattr(model, "generation_config", None) is not None and getattr(model.generation_config, key) is None:
                setattr(model.generation_config, key, value)


def _gguf_string(reader: Any, key: str) -> str:
    field = reader.fields.get(key)
    return bytes(field.parts[field.data[0]]).decode() if field else ""


@functools.lru_cache(maxsize=4)
def _gguf_tokenizer(path: Path) -> Any:
    """Load a GGUF file's tokenizer and repair what transformers' GGUF conversion gets wrong for byte-level BPE.

    transformers 4.57 turns a GGUF 'gpt2' (byte-level BPE) vocabulary into a SentencePiece-style tokenizer:
    byte fallback, a metaspace decoder, BOS added to every encode and the wrong end token; onnxruntime-genai
    then encodes text to -1 ids. We rebuild the byte-level pieces (digits split one by one, as the 'smollm'
    pre-tokenizer does) and end turns with the chat template's end token.
    """
    import tempfile

    from gguf import GGUFReader
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    reader = GGUFReader(path)
    if _gguf_string(reader, "tokenizer.ggml.model") != "gpt2":
        return tok
    pre = _gguf_string(reader, "tokenizer.ggml.pre")
    with tempfile.TemporaryDirectory() as d:
        tok.save_pretrained(d)
        tj = json.loads((Path(d) / "tokenizer.json").read_text())
        tj["model"]["byte_fallback"] = False
        tj["normalizer"] = None
        byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
        digits = [{"type": "Digits", "individual_digits": True}] if pre in ("smollm", "llama-bpe", "llama3") else []
        tj["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": digits + [byte_level]}
        tj["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
        tj["post_processor"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}
        (Path(d) / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False))
        cfg = json.loads((Path(d) / "tokenizer_config.json").read_text())
        end = "<|im_end|>" if "<|im_end|>" in tok.get_vocab() else tok.eos_token
        cfg.update(
            tokenizer_class="GPT2Tokenizer", add_bos_token=False, add_eos_token=False, eos_token=end, pad_token=end
        )
        for k in ("legacy", "add_prefix_space", "bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
            cfg.pop(k, None)
        (Path(d) / "tokenizer_config.json").write_text(json.dumps(cfg, ensure_ascii=False))
        (Path(d) / "special_tokens_map.json").unlink(missing_ok=True)
        return AutoTokenizer.from_pretrained(d)


def _context_length(path: Path) -> int | None:
    """The model's context length, from GGUF metadata or config.json, without loading weights."""
    path = Path(path)
    if path.suffix == ".gguf":
        from gguf import GGUFReader

        reader = GGUFReader(path)
        arch = _gguf_string(reader, "general.architecture")
        field = reader.fields.get(f"{arch}.context_length")
        return int(field.parts[field.data[0]][0]) if field else None
    cfg = path / "config.json"
    return json.loads(cfg.read_text()).get("max_position_embeddings") if cfg.is_file() else None


def json_exact_match(texts: list[str], examples: list[dict]) -> float:
    """Share of generations whose first JSON value equals the reference response's parsed JSON."""
    return sum(json_hits(texts, examples)) / max(1, len(examples))


def json_hits(texts: list[str], examples: list[dict]) -> list[int]:
    """Per generation: 1 where its first JSON value equals the reference response's parsed JSON, else 0."""
    out = []
    for text, ex in zip(texts, examples):
        want = parse_json(ex["messages"][-1]["content"])
        out.append(int(want is not None and parse_json(text) == want))
    return out
