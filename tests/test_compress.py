"""Students (edgetune/engines/compress/) on tiny random encoders: kept layers carry the teacher's weights exactly, the
config follows through save/load, pruning keeps the most important heads and neurons, distillation lowers the
distillation loss, and layouts the module does not handle are refused."""

from __future__ import annotations

import importlib.metadata

import pytest
from archs import ENCODERS, make_tiny
from click.testing import CliRunner
from conftest import WORDS, make_rows, tiny_classifier_recipe
from test_recipe import assert_one_line_error

from edgetune.cli import cli
from edgetune.engines.compress.distillation import _TeacherLogits, distill, hidden_loss, kd_loss
from edgetune.engines.compress.layout import EVERY_KEEPS_LAST, choose_layers, encoder_layers, num_layers
from edgetune.engines.compress.prune import ffn_importance, head_importance
from edgetune.engines.compress.student import make_student
from edgetune.tasks import get_task

LABELS = sorted(WORDS)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train 10-25x faster on one thread than on two when other jobs share the CPU."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_teacher(layers: int = 4, seed: int = 0, kind: str = "bert"):
    """A random `layers`-deep, 32-wide classifier over the tiny vocab, with logits large enough to distill."""
    import torch
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        DistilBertConfig,
        DistilBertForSequenceClassification,
        RobertaConfig,
        RobertaForSequenceClassification,
    )

    torch.manual_seed(seed)
    common = {"vocab_size": 64, "max_position_embeddings": 64, "num_labels": len(LABELS)}
    if kind == "distilbert":
        model = DistilBertForSequenceClassification(
            DistilBertConfig(dim=32, n_layers=layers, n_heads=4, hidden_dim=37, **common)
        )
    else:
        cls, cfg = (
            (RobertaForSequenceClassification, RobertaConfig)
            if kind == "roberta"
            else (BertForSequenceClassification, BertConfig)
        )
        kw = {"pad_token_id": 1} if kind == "roberta" else {}
        model = cls(
            cfg(hidden_size=32, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=37, **common, **kw)
        )
    return model.eval()


def layer_state(model, i: int) -> dict:
    holder, attr, _ = encoder_layers(model)
    return getattr(holder, attr)[i].state_dict()


def assert_same(a: dict, b: dict) -> None:
    import torch

    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def logits(model, seed: int = 1):
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 64, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


@pytest.mark.parametrize("kind", ["bert", "roberta", "distilbert"])
def test_a_student_keeps_the_chosen_layers_with_the_teachers_weights(kind):
    teacher = tiny_teacher(4, kind=kind)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = make_student(teacher, keep_layers=[0, 3])
    assert num_layers(student) == 2 and student.config.num_hidden_layers == 2
    assert student.kept_layers == [0, 3]
    for new, old in enumerate([0, 3]):
        assert_same(layer_state(student, new), layer_state(teacher, old))
    # everything outside the encoder layers (embeddings, pooler, head) is the teacher's too
    outside = {k: v for k, v in teacher.state_dict().items() if ".layer." not in k}
    assert_same({k: v for k, v in student.state_dict().items() if ".layer." not in k}, outside)
    # a copy: the teacher keeps its layers and weights
    assert num_layers(teacher) == 4 and teacher.config.num_hidden_layers == 4
    assert_same(teacher.state_dict(), before)


def test_every_keeps_one_layer_per_group():
    teacher = tiny_teacher(6)
    assert choose_layers(6, every=2) == ([1, 3, 5] if EVERY_KEEPS_LAST else [0, 2, 4])
    assert choose_layers(6, every=3) == ([2, 5] if EVERY_KEEPS_LAST else [0, 3])
    assert choose_layers(6) == choose_layers(6, every=2)
    student = make_student(teacher, every=2)
    assert student.kept_layers == choose_layers(6, every=2)
    for new, old in enumerate(student.kept_layers):
        assert_same(layer_state(student, new), layer_state(teacher, old))


@pytest.mark.parametrize("kind", ["bert", "distilbert"])
def test_a_student_saves_and_loads_with_its_depth(tmp_path, kind):
    import json

    from transformers import AutoModelForSequenceClassification

    teacher = tiny_teacher(4, kind=kind)
    student = make_student(teacher, every=2)
    student.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["n_layers" if kind == "distilbert" else "num_hidden_layers"] == 2
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert num_layers(loaded) == 2 and loaded.config.num_hidden_layers == 2
    assert_same(loaded.state_dict(), student.state_dict())
    assert (logits(loaded) == logits(student)).all()
    assert not (logits(student) == logits(teacher)).all()  # dropping layers changed the network


TRANSFORMERS_5 = int(importlib.metadata.version("transformers").split(".")[0]) >= 5


def test_head_pruning_is_refused_on_transformers_5_and_the_build_says_so(tmp_path, tiny_bert):
    """transformers 5 removed prune_heads and config.pruned_heads (what reloads a pruned model): the engine
    refuses, and a build stops before stage one in one line; on the 4.57 line the recipe is accepted."""
    if TRANSFORMERS_5:
        with pytest.raises(ValueError, match="transformers 5 has no head pruning"):
            make_student(tiny_teacher(4), every=2, prune_heads=0.5)
    recipe = tiny_classifier_recipe(tmp_path, tiny_bert, compress={"every": 2, "prune_heads": 0.5, "epochs": 1})
    r = CliRunner().invoke(cli, ["recipe", "validate", str(recipe)])
    if TRANSFORMERS_5:
        assert_one_line_error(r, 2, "compress.prune_heads", "has no head pruning", "compress.prune_ffn")
    else:
        assert r.exit_code == 0, r.output


def test_pruning_keeps_the_most_important_heads_and_neurons(tmp_path):
    """Heads on the 4.57 line only (transformers 5 has none: the test above); FFN neurons on both."""
    import torch
    from transformers import AutoModelForSequenceClassification

    teacher = tiny_teacher(4)
    plain = make_student(teacher, every=2)
    heads, neurons = head_importance(plain), ffn_importance(plain)
    student = make_student(teacher, every=2, prune_heads=0 if TRANSFORMERS_5 else 0.5, prune_ffn=0.25)
    keep = 37 - 37 // 4
    assert student.config.intermediate_size == keep
    for i in range(2):
        if not TRANSFORMERS_5:
            assert sorted(student.config.pruned_heads[i]) == sorted(heads[i].argsort()[:2].tolist())
            assert getattr(*encoder_layers(student)[:2])[i].attention.self.query.weight.shape[0] == 16  # 2 of 4 heads
        layer, ref = getattr(*encoder_layers(student)[:2])[i], getattr(*encoder_layers(plain)[:2])[i]
        top = neurons[i].argsort(descending=True)[:keep].sort().values
        assert torch.equal(layer.intermediate.dense.weight, ref.intermediate.dense.weight[top])
        assert torch.equal(layer.output.dense.weight, ref.output.dense.weight[:, top])
    student.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert torch.allclose(logits(loaded), logits(student), atol=1e-6)


def distill_setup(layers: int = 4):
    """A teacher with confident logits, a 2-layer student, the tiny tokenizer's batches and a fixed probe set."""
    import torch
    from transformers import BertTokenizerFast

    words = sorted({w for ws in WORDS.values() for w in ws.split()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    tokenizer = BertTokenizerFast(**_vocab(vocab))
    teacher = tiny_teacher(layers)
    with torch.no_grad():
        teacher.classifier.weight.mul_(30.0)  # a random head gives near-uniform logits: nothing to distill
    task = get_task("classification")
    index = {n: i for i, n in enumerate(LABELS)}
    rows = [{**r, "label": index[r["label"]]} for r in make_rows(12, seed=3)]

    def batches(epoch: int):
        return task.batches(rows, tokenizer, 8, 16, shuffle_seed=epoch)

    return teacher, task, tokenizer, rows, batches


def _vocab(tokens: list[str]) -> dict:
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp()) / "vocab.txt"
    path.write_text("\n".join(tokens) + "\n")
    return {"vocab_file": str(path)}


def probe_kd(student, teacher, batches, temperature: float) -> float:
    import torch

    student.eval(), teacher.eval()  # no dropout: the probe must give the same figure for the same weights
    total = 0.0
    with torch.no_grad():
        for b in batches(99):
            inputs = {k: v for k, v in b.items() if k != "labels"}
            total += float(kd_loss(student(**inputs).logits, teacher(**inputs).logits, temperature))
    return total


def test_distillation_lowers_the_distillation_loss():
    teacher, _, _, _, batches = distill_setup()
    import torch

    student = make_student(teacher, keep_layers=[0, 2])
    with torch.no_grad():  # a student head the teacher disagrees with, so there is a gap to close
        student.classifier.weight.copy_(
            torch.randn(student.classifier.weight.shape, generator=torch.Generator().manual_seed(5))
        )
    before = probe_kd(student, teacher, batches, 2.0)
    student, history = distill(
        student, teacher, batches, epochs=6, lr=3e-3, temperature=2.0, alpha=1.0, seed=0, eval_fn=lambda m: 0.5
    )
    after = probe_kd(student, teacher, batches, 2.0)
    assert after < 0.5 * before, (before, after)
    assert history[-1].kd_loss < history[0].kd_loss
    assert [h.epoch for h in history] == list(range(1, 7)) and all(h.eval_accuracy == 0.5 for h in history)
    assert not student.training  # handed back in eval mode


def probe_hidden(student, teacher, batches, kept: list[int]) -> float:
    import torch

    student.eval(), teacher.eval()  # no dropout: the probe must give the same figure for the same weights
    total = 0.0
    with torch.no_grad():
        for b in batches(99):
            inputs = {k: v for k, v in b.items() if k != "labels"}
            s, t = (m(**inputs, output_hidden_states=True).hidden_states for m in (student, teacher))
            total += float(hidden_loss(s, t, kept, b["attention_mask"]))
    return total


def test_the_hidden_state_loss_maps_student_layers_to_their_teacher_layers():
    import torch

    g = torch.Generator().manual_seed(0)
    teacher = [torch.randn(2, 5, 8, generator=g) for _ in range(5)]  # embeddings + 4 layers
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    student = [teacher[0], teacher[2], teacher[4]]  # student layers 0, 1 = teacher layers 1, 3
    assert float(hidden_loss(student, teacher, [1, 3], mask)) == 0.0
    assert float(hidden_loss(student, teacher, [0, 2], mask)) > 0.5
    padded = [t.clone() for t in student]
    padded[1][1, 3:] += 100.0  # padding positions do not count
    assert float(hidden_loss(padded, teacher, [1, 3], mask)) == 0.0


def test_distilling_hidden_states_pulls_student_layers_to_their_teacher_layers():
    teacher, _, _, _, batches = distill_setup()
    # a student whose two layers come from another random network (scaled up so that they change the hidden
    # states), asked to match teacher layers 1 and 3
    student = make_student(teacher, keep_layers=[0, 1])
    other = tiny_teacher(4, seed=7)
    for i in range(2):
        state = {k: v * 20 if v.dim() == 2 else v for k, v in layer_state(other, 2 * i).items()}
        getattr(*encoder_layers(student)[:2])[i].load_state_dict(state)
    before = probe_hidden(student, teacher, batches, [1, 3])
    _, history = distill(
        student,
        teacher,
        batches,
        epochs=6,
        lr=1e-2,
        temperature=2.0,
        alpha=1.0,
        hidden_weight=1.0,
        kept_layers=[1, 3],
    )
    after = probe_hidden(student, teacher, batches, [1, 3])
    assert after < 0.7 * before, (before, after)
    assert history[-1].hidden_loss < history[0].hidden_loss
    with pytest.raises(ValueError, match="hidden_weight"):
        distill(make_student(teacher, every=2), teacher, batches, epochs=1, hidden_weight=1.0, kept_layers=[3])


def test_cached_teacher_logits_match_the_teacher_in_any_batch_order():
    import torch

    teacher, _, _, _, batches = distill_setup()
    cache = _TeacherLogits(teacher)
    for epoch in (0, 1, 2):  # other orders and paddings: the cache must hand back each example's own logits
        for b in batches(epoch):
            inputs = {k: v for k, v in b.items() if k != "labels"}
            with torch.no_grad():
                direct = teacher(**inputs).logits
            assert torch.allclose(cache(b, inputs), direct, atol=1e-5)
    assert len(cache.cache) <= 36


def test_unsupported_layouts_are_refused():
    import torch
    from transformers import AlbertConfig, AlbertForSequenceClassification, GPT2Config, GPT2ForSequenceClassification

    gpt2 = GPT2ForSequenceClassification(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=64, n_positions=32))
    with pytest.raises(ValueError, match="GPT2ForSequenceClassification.*unsupported layout"):
        make_student(gpt2, every=2)
    albert = AlbertForSequenceClassification(
        AlbertConfig(vocab_size=64, embedding_size=16, hidden_size=32, num_attention_heads=2, intermediate_size=37)
    )
    with pytest.raises(ValueError, match="unsupported layout"):
        make_student(albert, every=2)
    with pytest.raises(ValueError, match="not a transformers model"):
        make_student(torch.nn.Linear(2, 2))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"keep_layers": [0, 4]}, "out of range"),
        ({"keep_layers": [2, 1]}, "strictly increasing"),
        ({"keep_layers": []}, "empty"),
        ({"keep_layers": [0], "every": 2}, "not both"),
        ({"every": 5}, "every"),
        ({"every": 0}, "every"),
        ({"prune_heads": 1.0}, "prune_heads"),
        ({"prune_ffn": -0.1}, "prune_ffn"),
    ],
)
def test_bad_choices_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_student(tiny_teacher(4), **kwargs)


def test_augmented_copies_are_perturbed_deterministic_and_keep_their_label():
    from edgetune.engines.compress.augment import augment_examples

    rows = [{"text": "turn on the kitchen lights please now", "label": 1}, {"text": "lock", "label": 0}]
    out = augment_examples(rows, 3, seed=4, mask_token="[MASK]", p_drop=0.2, p_mask=0.2, p_swap=0.2)
    assert out[:2] == rows and len(out) == 2 + 3 * 2
    assert out == augment_examples(rows, 3, seed=4, mask_token="[MASK]", p_drop=0.2, p_mask=0.2, p_swap=0.2)
    copies = out[2:]
    assert all(c["text"].strip() for c in copies)
    assert [c["label"] for c in copies] == [1, 0] * 3
    assert any(c["text"] != rows[i % 2]["text"] for i, c in enumerate(copies))
    assert any("[MASK]" in c["text"] for c in copies)
    assert augment_examples(rows, 0) == rows


# the encoder families of the architecture matrix that have no layer list make_student can cut
UNSUPPORTED = {"albert": "shares one layer's weights across depth", "modernbert": "base_model.layers"}
# families whose layers hold several feed-forward blocks: FFN pruning refused, layer dropping works
SEVERAL_FFNS = {"mobilebert"}


@pytest.mark.parametrize("arch", ENCODERS)
def test_every_encoder_family_gives_a_student_or_a_clear_refusal(arch, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification

    folder = make_tiny(arch, tmp_path)
    teacher = get_task("classification").load_model(folder, LABELS)
    if arch in UNSUPPORTED:
        with pytest.raises(ValueError, match="unsupported layout"):
            make_student(teacher, every=2)
        return
    if arch in SEVERAL_FFNS:
        with pytest.raises(ValueError, match="feed-forward blocks"):
            make_student(teacher, every=2, prune_ffn=0.5)
    student = make_student(teacher, every=2, prune_ffn=0.0 if arch in SEVERAL_FFNS else 0.5)
    assert num_layers(student) == 1 and student.config.num_hidden_layers == 1 and student.kept_layers == [1]
    student.save_pretrained(tmp_path / "student")
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "student").eval()
    ids = torch.tensor([[3, 7, 9, 11, 4]])
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, student(input_ids=ids).logits, atol=1e-6)
    try:  # head pruning: done, or refused with ValueError (DeBERTa-v2 has no prune_heads)
        pruned = make_student(teacher, every=2, prune_heads=0.5)
    except ValueError as e:
        assert "prune_heads" in str(e)
    else:
        assert pruned.config.pruned_heads


def test_int8_aware_epochs_distil_the_int8_model():
    """With int8-aware epochs the student learns to match the teacher as its int8 file computes (edgetune/engines/int8.py),
    so its int8 rounding ends closer to the teacher than a student distilled in float alone; the float model is
    itself again after training (no rounding left in its modules)."""
    import torch

    from edgetune.engines.int8 import int8_forward

    teacher, _, _, _, batches = distill_setup()
    with torch.no_grad():  # an outlier channel, as trained encoders have: int8's per-text scale then costs accuracy
        for layer in teacher.bert.encoder.layer:
            layer.output.LayerNorm.weight[0] = 20.0
    results, lines = {}, []
    for aware in (0, 3):
        student = make_student(teacher, keep_layers=[0, 2])
        distill(
            student, teacher, batches, epochs=4, lr=3e-3, alpha=1.0, seed=0, int8_aware_epochs=aware, log=lines.append
        )
        assert not any("forward" in m.__dict__ for m in student.modules())
        with int8_forward(student, reduced=True):
            results[aware] = probe_kd(student, teacher, batches, 2.0)
    assert sum("(int8-aware)" in ln for ln in lines) == 3, lines
    # measured: 0.0077 against 0.0240 on the transformers 4.57 line, 0.0082 against 0.0129 on transformers 5 (the
    # same teacher; the float-distilled student rounds better there): int8-aware training wins on both
    assert results[3] < 0.7 * results[0], results
    with pytest.raises(ValueError, match="int8_aware_epochs"):
        distill(make_student(teacher, keep_layers=[0]), teacher, batches, epochs=1, int8_aware_epochs=2)
