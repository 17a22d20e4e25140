"""Sequence classification (BERT-family encoders): text in, one label out."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgetune.build import TaskData
from edgetune.core.data import Row, data_fingerprint, load_splits
from edgetune.core.errors import RecipeError
from edgetune.core.lines import auto_config, auto_tokenizer
from edgetune.engines.verify import fp32_gates
from edgetune.packaging.graph import EMBEDDABLE_TOKENIZERS

if TYPE_CHECKING:
    from edgetune.build import Stage


# Longer texts are cut before tokenizing: far beyond any max_length, and a 100k-character row would only cost
# tokenizer time (and memory in every batch) for tokens that truncation throws away.
MAX_TEXT_CHARS = 20_000


def _forward_inputs(path: Path, trust_remote_code: bool) -> set[str] | None:
    """The argument names of the sequence classifier's forward for the model at `path`; None when the folder has
    no model config or transformers has no class for it here."""
    import inspect

    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

    if not (Path(path) / "config.json").is_file():
        # no guessing: AutoConfig would take a model type from the folder's name (".../end_t5/adapter" is T5)
        return None
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        cls: Any = MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[type(config)]
    except (OSError, ValueError, KeyError):  # no class for it here (remote code)
        return None
    return set(inspect.signature(cls.forward).parameters)


def _summarize(warnings: list[str]) -> list[str]:
    """The first warning of a kind, with a count of the rest."""
    if len(warnings) <= 1:
        return warnings
    return [f"{warnings[0]} (and {len(warnings) - 1} more rows)"]


class ClassificationTask:
    name = "classification"
    peft_task_type = "SEQ_CLS"
    auto_carves_selection = False  # its int8 search measures on altered copies of training rows (autoquant.py)

    def stages(self) -> list[Stage]:
        from edgetune.stages.bench import EncoderBench
        from edgetune.stages.compress import Compress
        from edgetune.stages.export import EncoderExport
        from edgetune.stages.finetune import Finetune
        from edgetune.stages.merge import Merge
        from edgetune.stages.package import ClassifierPackage
        from edgetune.stages.quantize import OrtInt8
        from edgetune.stages.report import ReportStage
        from edgetune.stages.verify import Verify

        return [
            Finetune(),
            Merge(),
            Compress(),
            EncoderExport("text-classification"),
            OrtInt8(),
            Verify(deployed_batch=True),
            ClassifierPackage(),
            EncoderBench(),
            ReportStage(),
        ]

    # -- data -----------------------------------------------------------------------------------
    def _examples(self, rows: list[Row], text_col: str, label_col: str, warnings: list[str]) -> list[dict]:
        first = rows[0]
        for col, what in ((text_col, "dataset.text_column"), (label_col, "dataset.label_column")):
            if col not in first.fields:
                have = ", ".join(sorted(first.fields)) or "none"
                raise RecipeError(f"{what}: column '{col}' not found in {first.file} (columns: {have})")
        out = []
        for r in rows:
            text, label = r.fields.get(text_col), r.fields.get(label_col)
            if not isinstance(text, str) or not text.strip():
                raise RecipeError(f"{r.where}: '{text_col}' is empty or not a string")
            if label is None or isinstance(label, (dict, list)) or str(label).strip() == "":
                raise RecipeError(f"{r.where}: '{label_col}' is missing or not a scalar")
            text = text.strip()
            if len(text) > MAX_TEXT_CHARS:
                warnings.append(f"{r.where}: text of {len(text)} characters truncated to {MAX_TEXT_CHARS}")
                text = text[:MAX_TEXT_CHARS]
            out.append({"text": text, "label_name": str(label).strip(), "where": r.where})
        return out

    def load_data(self, cfg: Any, base_dir: Path, source: Any = None, max_length: int | None = None) -> TaskData:
        warnings: list[str] = []
        train, evals, sources = load_splits(
            cfg, base_dir, lambda rows: self._examples(rows, cfg.text_column, cfg.label_column, warnings)
        )
        warnings = _summarize(warnings)
        if source is not None and max_length is not None:
            warnings += _over_length(self.load_tokenizer(source.path), train + evals, max_length)
        train_path = next(iter(sources))
        labels = sorted({e["label_name"] for e in train})
        if len(labels) < 2:
            raise RecipeError(f"dataset.train: needs at least 2 distinct labels, found {len(labels)} in {train_path}")
        index = {name: i for i, name in enumerate(labels)}
        for e in evals:
            if e["label_name"] not in index:
                raise RecipeError(f"{e['where']}: eval label '{e['label_name']}' never occurs in the training data")
        for e in train + evals:
            e["label"] = index[e["label_name"]]
        fp = data_fingerprint(self.name, sources, cfg, labels)
        return TaskData(train=train, eval=evals, labels=labels, fingerprint=fp, sources=sources, warnings=warnings)

    def check_model(self, info: Any, source: Any, package: Any, trust_remote_code: bool = False) -> list[str]:
        """A package puts the tokenizer inside the graph, which onnxruntime-extensions' BertTokenizer op does for
        WordPiece tokenizers only."""
        field = "package.android" if package.android is not None else "package.linux" if package.linux else None
        if field is not None:
            kind = type(self.load_tokenizer(source.path, trust_remote_code)).__name__
            if kind not in EMBEDDABLE_TOKENIZERS:
                raise RecipeError(
                    f"{field}: a package embeds the tokenizer in the graph, which edgetune does for "
                    f"WordPiece (BERT-style) tokenizers only; this {info.model_type} model's is {kind} "
                    f"(leave {field} unset to build without a package)"
                )
        return []

    # -- model ----------------------------------------------------------------------------------
    def load_model(
        self, path: Path, labels: list[str] | None = None, trust_remote_code: bool = False, dtype: str = "float32"
    ) -> Any:
        import torch
        from transformers import AutoModelForSequenceClassification
        from transformers.utils import logging as hf_logging

        if not labels:
            raise ValueError("a classifier is loaded with its labels")
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # "classifier newly initialized" is expected for a base encoder
        try:
            config = auto_config(
                path,
                num_labels=len(labels),
                id2label=dict(enumerate(labels)),
                label2id={n: i for i, n in enumerate(labels)},
                trust_remote_code=trust_remote_code,
            )
            model, loading = AutoModelForSequenceClassification.from_pretrained(
                path,
                config=config,
                ignore_mismatched_sizes=True,
                trust_remote_code=trust_remote_code,
                use_safetensors=_has_safetensors(path),
                output_loading_info=True,
                dtype="auto" if dtype == "auto" else getattr(torch, dtype),
            )
        finally:
            hf_logging.set_verbosity(verbosity)
        # Modules the checkpoint does not hold start random: the head, and for some families more (DeBERTa-v2's
        # pooler, ModernBERT's head). Fine-tuning must train and save them, or every load draws them anew.
        missing = list(loading["missing_keys"]) + [k for k, *_ in loading["mismatched_keys"]]
        model.new_modules = sorted({k.split(".")[0] for k in missing})
        return model.eval()

    def load_tokenizer(self, path: Path, trust_remote_code: bool = False, chat_template: str | None = None) -> Any:
        """The model's tokenizer (`chat_template`: always None here, a classifier's data has no chat), giving
        only the inputs the model's forward takes (a BERT tokenizer paired with DistilBERT or MPNet would add
        token_type_ids, which their forward refuses)."""
        tokenizer = auto_tokenizer(path, trust_remote_code=trust_remote_code)
        taken = _forward_inputs(path, trust_remote_code)
        if taken is not None:
            tokenizer.model_input_names = [n for n in tokenizer.model_input_names if n in taken]
            # saved with it (tokenizer_config.json), so the copies in the adapter, merged and export folders,
            # which have no model config to ask, give the same inputs
            tokenizer.init_kwargs["model_input_names"] = tokenizer.model_input_names
        return tokenizer

    def batches(
        self, examples: list[dict], tokenizer: Any, batch_size: int, max_length: int, shuffle_seed: int | None = None
    ) -> Iterator[dict[str, Any]]:
        import torch

        order = list(range(len(examples)))
        if shuffle_seed is not None:
            random.Random(shuffle_seed).shuffle(order)
        for start in range(0, len(order), batch_size):
            chunk = [examples[i] for i in order[start : start + batch_size]]
            enc = tokenizer(
                [e["text"] for e in chunk], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            )
            batch = dict(enc)
            batch["labels"] = torch.tensor([e["label"] for e in chunk], dtype=torch.long)
            yield batch

    def loss(self, model: Any, batch: dict[str, Any]) -> Any:
        return model(**batch).loss

    def loss_items(self, batch: dict[str, Any]) -> int:
        """The loss is a mean over examples."""
        return int(batch["labels"].shape[0])

    def logits(self, model: Any, batch: dict[str, Any]) -> np.ndarray:
        import torch

        device = next(model.parameters()).device if hasattr(model, "parameters") else None
        inputs = {k: v if device is None else v.to(device) for k, v in batch.items() if k != "labels"}
        with torch.inference_mode():
            out = model(**inputs).logits
        return (out if out.dtype == torch.float64 else out.float()).cpu().numpy()

    def evaluate(
        self, model: Any, tokenizer: Any, examples: list[dict], batch_size: int, max_length: int, generate: int = 0
    ) -> tuple[np.ndarray, dict]:
        """Stacked logits on `examples` and the accuracy they give."""
        model.eval()
        stacked = np.concatenate(
            [self.logits(model, b) for b in self.batches(examples, tokenizer, batch_size, max_length)]
        )
        return stacked, self.score(stacked, examples)

    def load_onnx(self, path: Path, threads: int = 0) -> OrtClassifier:
        """An ONNX Runtime session that `evaluate` can use in place of the PyTorch model."""
        return OrtClassifier(path, threads)

    def checks(self, precision: str, cfg: Any, ref_metrics: dict, metrics: dict) -> list[tuple[str, float, float, str]]:
        """The gates for one ONNX model: (name, value, threshold, op)."""
        if precision == "fp32":
            return fp32_gates(cfg, metrics)
        return [
            ("top1_agreement", metrics["top1_agreement"], cfg.int8_min_top1_agreement, ">="),
            ("accuracy_drop", ref_metrics["accuracy"] - metrics["accuracy"], cfg.int8_max_accuracy_drop, "<="),
            ("mean_cosine", metrics["mean_cosine"], cfg.int8_min_cosine, ">="),
        ]

    def score(self, outputs: np.ndarray, examples: list[dict]) -> dict[str, float]:
        gold = np.array([e["label"] for e in examples])
        return {"accuracy": float((outputs.argmax(-1) == gold).mean())}


def _over_length(tokenizer: Any, examples: list[dict], max_length: int) -> list[str]:
    """One warning counting the texts longer than `max_length` tokens, which training and evaluation cut."""
    lengths = [
        len(ids) for ids in tokenizer([e["text"] for e in examples], truncation=False, verbose=False)["input_ids"]
    ]
    over = [i for i, n in enumerate(lengths) if n > max_length]
    if not over:
        return []
    longest = max(over, key=lambda i: lengths[i])
    return [
        f"dataset: {len(over)} of {len(examples)} texts are longer than training.max_length ({max_length} "
        f"tokens) and are cut to it; the longest is {lengths[longest]} tokens ({examples[longest]['where']})"
    ]


def _has_safetensors(path: Path) -> bool:
    return any(Path(path).glob("*.safetensors"))


class OrtClassifier:
    """Wraps an InferenceSession so it can be called like a transformers classifier (returns .logits)."""

    def __init__(self, path: Path, threads: int = 0) -> None:
        from edgetune.core.errors import EdgetuneError
        from edgetune.runtime.ort import ort_session

        self.path = Path(path)
        try:
            self.session = ort_session(path, threads)
        except Exception as e:
            raise EdgetuneError(f"onnxruntime cannot load {path}: {str(e).splitlines()[0][:200]}") from None
        self.inputs = [i.name for i in self.session.get_inputs()]

    def eval(self) -> OrtClassifier:
        return self

    def __call__(self, **batch: Any) -> Any:
        import torch

        from edgetune.core.errors import EdgetuneError

        missing = [n for n in self.inputs if n not in batch]
        if missing:
            raise EdgetuneError(f"{self.path.name} wants inputs {missing}; the task gives {sorted(batch)}")
        try:
            out = self.session.run(None, {n: batch[n].numpy() for n in self.inputs})[0]
        except Exception as e:
            raise EdgetuneError(f"onnxruntime failed on {self.path.name}: {str(e).splitlines()[0][:200]}") from None
        return type("Output", (), {"logits": torch.from_numpy(np.asarray(out, dtype=np.float32))})()
