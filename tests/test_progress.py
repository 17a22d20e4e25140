"""Training that is not watched on a terminal still reports: a line with step, rate and ETA every
training.progress_seconds; and a Ctrl-C within an epoch loses at most training.checkpoint_minutes: the build
resumes at the checkpointed step and ends with the weights of a run never interrupted."""

from __future__ import annotations

import re

import pytest
from conftest import edit_recipe

from edgetune.core.recipe import TrainingConfig, load_recipe
from edgetune.engines import finetune as finetune_loop
from edgetune.pipeline import build
from edgetune.stages import finetune as finetune_stage
from edgetune.tasks.classification import ClassificationTask

# tiny recipe: 48 training rows, batch size 8
STEPS = 6
LINE = re.compile(
    r"^(finetune|distill): epoch (\d+)/(\d+) step (\d+)/(\d+) \((\d+)%\) [\d.]+ (steps/s|s/step), "
    r"ETA (\d+s|\d+m\d\ds|\d+h\d\dm) for the epoch, (\d+s|\d+m\d\ds|\d+h\d\dm) for the stage$"
)


def _build(recipe, out, logs: list[str], progress: bool = True):
    return build(load_recipe(recipe), out, until="finetune", log=logs.append, progress=progress)


@pytest.mark.parametrize("progress", [True, False])  # stderr not a terminal; or --no-progress
def test_without_a_progress_bar_training_logs_step_rate_and_eta(tiny_recipe, tmp_path, monkeypatch, progress):
    monkeypatch.setattr(finetune_loop, "on_terminal", lambda: False)
    edit_recipe(tiny_recipe, training={"progress_seconds": 0})  # a line after every step
    logs: list[str] = []
    _build(tiny_recipe, tmp_path / "run", logs, progress)
    lines = [m.groups() for m in map(LINE.match, logs) if m]
    want = [(e, s) for e in range(1, 3) for s in range(1, STEPS + 1)]
    assert [(int(g[1]), int(g[3])) for g in lines] == want, logs
    assert all(g[0] == "finetune" and g[2] == "2" and g[4] == str(STEPS) for g in lines)
    assert lines[-1][5] == "100" and lines[-1][7] == "0s"  # the last step: nothing left of the epoch


def test_on_a_terminal_the_bar_shows_progress_and_no_lines(tiny_recipe, tmp_path, monkeypatch):
    monkeypatch.setattr(finetune_loop, "on_terminal", lambda: True)
    edit_recipe(tiny_recipe, training={"progress_seconds": 0})
    logs: list[str] = []
    _build(tiny_recipe, tmp_path / "run", logs)
    assert not [s for s in logs if LINE.match(s)], logs


def test_lines_come_at_most_every_progress_seconds(tiny_recipe, tmp_path, monkeypatch):
    monkeypatch.setattr(finetune_loop, "on_terminal", lambda: False)
    logs: list[str] = []
    _build(tiny_recipe, tmp_path / "run", logs)  # default 60 s: 12 steps of a tiny model take far less
    assert not [s for s in logs if LINE.match(s)], logs


def test_distillation_logs_progress():
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from edgetune.engines.compress.distillation import distill
    from edgetune.engines.compress.student import make_student

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, num_labels=3
    )
    teacher = BertForSequenceClassification(cfg).eval()
    g = torch.Generator().manual_seed(1)
    data = [(torch.randint(5, 40, (4, 7), generator=g), torch.randint(0, 3, (4,), generator=g)) for _ in range(3)]

    def batches(epoch: int):
        return [{"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": y} for ids, y in data]

    logs: list[str] = []
    distill(make_student(teacher, keep_layers=[1]), teacher, batches, epochs=2, log=logs.append, progress_seconds=0)
    lines = [m.groups() for m in map(LINE.match, logs) if m]
    assert [(g[0], int(g[1]), int(g[3])) for g in lines] == [("distill", e, s) for e in (1, 2) for s in (1, 2, 3)]


def _adapter(run):
    from safetensors.torch import load_file

    return load_file(str(run / "finetune" / "adapter" / "adapter_model.safetensors"))


def test_ctrl_c_within_an_epoch_resumes_at_the_step_with_the_same_weights(tiny_recipe, tmp_path, monkeypatch):
    import torch

    edit_recipe(tiny_recipe, training={"epochs": 3, "checkpoint_minutes": 1e-9})  # a checkpoint after every step
    stop_at = STEPS + 3  # steps done before Ctrl-C: all of epoch 1 and 3 of epoch 2
    calls = []
    loss = ClassificationTask.loss

    def interrupted(self, model, batch):
        calls.append(1)
        if len(calls) > stop_at:
            raise KeyboardInterrupt
        return loss(self, model, batch)

    run = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(ClassificationTask, "loss", interrupted)
        with pytest.raises(KeyboardInterrupt):
            _build(tiny_recipe, run, [])
    (ckpt,) = run.glob("finetune.ckpt/*/state.pt")
    state = torch.load(ckpt, weights_only=True)
    assert (state["epoch"], state["step"], len(state["losses"])) == (1, 3, 3)

    # the checkpoint interval is not part of the checkpoint's key: changed now, the checkpoint is still found
    edit_recipe(tiny_recipe, training={"checkpoint_minutes": 0})
    logs: list[str] = []
    _build(tiny_recipe, run, logs)
    assert f"finetune: resuming at epoch 2/3 step 3/{STEPS} from {ckpt}" in logs, logs
    assert not (run / "finetune.ckpt").exists()

    clean = tmp_path / "clean"
    edit_recipe(tiny_recipe, training={"checkpoint_minutes": 10})
    _build(tiny_recipe, clean, [])
    got, want = _adapter(run), _adapter(clean)
    assert got.keys() == want.keys() and got
    for k in want:
        assert torch.equal(got[k], want[k]), k
    assert [e["loss"] for e in _epochs(run)] == [e["loss"] for e in _epochs(clean)]


def _epochs(run) -> list[dict]:
    import json

    return json.loads((run / "manifest.json").read_text())["stages"]["finetune"]["record"]["epochs"]


def _finetune_key(recipe) -> str:
    from edgetune.build import BuildContext
    from edgetune.core.rundir import config_key
    from edgetune.pipeline import prepare

    p = prepare(load_recipe(recipe))
    ctx = BuildContext(p.recipe, p.task, p.data, p.source, p.info, p.adapter, run=None, base=lambda: p.source)
    k = finetune_stage.Finetune().key(ctx)
    return config_key(k.config, k.reads)


def test_progress_and_checkpoint_settings_do_not_change_the_finetune_key(tiny_recipe):
    # how training reports and checkpoints is not what it computes: the key holds exactly the fields that do
    computing = {
        "epochs",
        "learning_rate",
        "batch_size",
        "max_length",
        "weight_decay",
        "warmup_fraction",
        "seed",
        "precision",
        "int4_aware_epochs",
    }
    assert set(finetune_loop.training_key(TrainingConfig(progress_seconds=5, checkpoint_minutes=0))) == computing
    before = _finetune_key(tiny_recipe)
    edit_recipe(tiny_recipe, training={"progress_seconds": 1, "checkpoint_minutes": 0.5})
    assert _finetune_key(tiny_recipe) == before
    edit_recipe(tiny_recipe, training={"seed": 1})  # a setting that changes the result does change it
    assert _finetune_key(tiny_recipe) != before
