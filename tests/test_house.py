"""The house rules of the build: stages are objects that tasks choose, keys come from what a stage reads,
records serialize from their types, and the stages do not ask which task they serve."""

from __future__ import annotations

import ast
import dataclasses
import types
import typing
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from conftest import edit_recipe, make_chats, write_jsonl
from test_recipe import assert_one_line_error

from edgetune.build import BaseStage, Key
from edgetune.cli import cli
from edgetune.core import artifacts
from edgetune.core.recipe import load_recipe
from edgetune.pipeline import STAGES
from edgetune.tasks import TASKS, get_task

STAGES_DIR = Path(__file__).resolve().parents[1] / "edgetune" / "stages"


def test_the_registry_and_the_recipe_name_the_same_tasks():
    from edgetune.core.recipe import Recipe

    assert set(TASKS) == set(typing.get_args(Recipe.model_fields["task"].annotation))
    with pytest.raises(ValueError, match="unknown task 'regression'"):
        get_task("regression")


@pytest.mark.parametrize("task", TASKS)
def test_each_task_lists_every_stage_in_order(task):
    stages = get_task(task).stages()
    names = [s.name for s in stages]
    only = {
        "compress": "classification",
        "train-adapters": "causal-lm",
        "adapters": "causal-lm",
    }  # the stages of one task alone
    assert names == [s for s in STAGES if s in names]
    assert set(STAGES) - set(names) == {s for s, t in only.items() if t != task}
    for s in stages:
        assert isinstance(s, BaseStage) and set(s.needs) <= set(STAGES[: STAGES.index(s.name)])
        assert dataclasses.is_dataclass(s.record)


def test_no_stage_imports_another_or_asks_for_its_task():
    names = {p.stem for p in STAGES_DIR.glob("*.py")} - {"__init__"}
    for path in STAGES_DIR.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                parts = (node.module or "").split(".")
                assert node.level == 0, f"{path.name}:{node.lineno}: a relative import"
                if parts[:2] == ["edgetune", "stages"]:
                    other = parts[2] if len(parts) > 2 else None
                    assert other is None or other not in names or other == path.stem, f"{path.name} imports {other}"
                    assert other is not None or not {a.name for a in node.names} & names, f"{path.name} imports a stage"
            if isinstance(node, ast.Compare):  # task == "causal-lm" and the like
                consts = [c.value for c in ast.walk(node) if isinstance(c, ast.Constant)]
                assert not set(consts) & set(TASKS), f"{path.name}:{node.lineno} branches on the task"


def _ctx(recipe, **dataset):
    r = recipe.model_copy(update={"dataset": recipe.dataset.model_copy(update=dataset)})
    return SimpleNamespace(recipe=r, data=SimpleNamespace(fingerprint="data"), source=None)


def test_package_keys_hold_exactly_what_the_package_reads(tiny_recipe, tiny_chat_recipe):
    from edgetune.stages.package import ChatPackage, ClassifierPackage

    chat = load_recipe(tiny_chat_recipe)
    a, b = (ChatPackage().key(_ctx(chat, system_prompt=s)) for s in ("Reply with JSON.", "Be brief."))
    assert isinstance(a, Key) and a != b  # the system prompt is packaged in the prompt format
    clf = load_recipe(tiny_recipe)
    a, b = (ClassifierPackage().key(_ctx(clf, system_prompt=s)) for s in ("x", "y"))
    assert a == b  # a classifier's package does not read it


def _example(cls: type, root: Path, depth: int = 0):
    """An instance of a record type with a value of the right type in every field (a record type nested in
    itself, once)."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        t = next(a for a in typing.get_args(hint) if a is not type(None)) if union else hint
        origin = typing.get_origin(t)
        if t is Path:
            values[f.name] = root / cls.__name__ / f"{f.name}.bin"
        elif origin is list and dataclasses.is_dataclass(typing.get_args(t)[0]):
            inner = typing.get_args(t)[0]
            values[f.name] = [] if inner is cls and depth else [_example(inner, root, depth + 1)]
        elif dataclasses.is_dataclass(t):
            values[f.name] = _example(t, root, depth + 1)
        elif origin is list:
            values[f.name] = [{"k": 1}]
        elif origin is dict or t is dict:
            values[f.name] = {"m": {"x": 1.5}}
        else:
            values[f.name] = {str: "s", int: 3, float: 0.25, bool: True}[t]
    return cls(**values)


@pytest.mark.parametrize("cls", typing.get_args(artifacts.Record))
def test_every_record_round_trips_through_json(cls, tmp_path):
    record = _example(cls, tmp_path)
    data = artifacts.to_json(record, tmp_path)
    assert all("/tmp" not in str(v) for v in data.values() if isinstance(v, str))  # paths are relative
    assert artifacts.from_json(cls, data, tmp_path) == record
    moved = artifacts.rebase(record, tmp_path, tmp_path / "elsewhere")
    assert artifacts.to_json(moved, tmp_path / "elsewhere") == data


def test_a_record_of_another_layout_is_not_read(tmp_path):
    with pytest.raises(TypeError):
        artifacts.from_json(artifacts.Package, {"path": "p", "unknown": 1}, tmp_path)


def test_response_format_json_needs_json_answers(tiny_chat_recipe, tmp_path):
    rows = make_chats(3, seed=4) + [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "sure thing"}]}
    ]
    write_jsonl(tmp_path / "data" / "train.jsonl", rows)
    r = CliRunner().invoke(cli, ["recipe", "validate", str(tiny_chat_recipe)])
    assert_one_line_error(r, 2, "train.jsonl:4", "not JSON", "dataset.response_format is json")
    edit_recipe(tiny_chat_recipe, dataset={"response_format": "text"})
    r = CliRunner().invoke(cli, ["recipe", "validate", str(tiny_chat_recipe)])
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_response_format_decides_json_scoring(tiny_chat_recipe, fmt):
    import numpy as np

    from edgetune.pipeline import prepare

    edit_recipe(tiny_chat_recipe, dataset={"response_format": fmt})
    p = prepare(load_recipe(tiny_chat_recipe))
    tok = p.task.load_tokenizer(p.source.path)
    examples = p.data.eval[:2]

    class Echo:  # answers each prompt with its expected response, so JSON exact match is 1 when scored
        def __init__(self):
            self.i = 0

        def logits(self, ids, first=0):
            return np.zeros((len(ids) - first, len(tok)), dtype=np.float32)

        def greedy(self, prompt, budget, eos):
            ex = examples[self.i]
            self.i += 1
            return tok(ex["messages"][-1]["content"], add_special_tokens=False)["input_ids"]

    _, metrics = p.task.evaluate(Echo(), tok, examples, 2, 128, generate=4)
    assert ("json_exact_match" in metrics) == (fmt == "json")
    if fmt == "json":
        assert metrics["json_exact_match"] == 1.0


def test_an_older_records_retired_field_is_read_past_and_its_flags_read_where_they_can(tmp_path):
    old = {"path": "a", "tasks": [], "name": ""}  # the finetune record before the train-adapters stage
    assert artifacts.from_json(artifacts.Adapter, old, tmp_path).path == tmp_path / "a"
    # int4_base was a flag; now the block size the adapter trained against: off reads as None, on is unknown
    assert artifacts.from_json(artifacts.Adapter, {"path": "a", "int4_base": False}, tmp_path).int4_base is None
    with pytest.raises(TypeError):
        artifacts.from_json(artifacts.Adapter, {"path": "a", "int4_base": True}, tmp_path)
    assert artifacts.from_json(artifacts.Adapter, {"path": "a", "int4_base": 64}, tmp_path).int4_base == 64
