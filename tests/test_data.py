import pytest
from click.testing import CliRunner
from conftest import edit_recipe, make_rows, write_jsonl
from test_recipe import assert_one_line_error

from edgetune.cli import cli


def build(recipe, tmp_path):
    return CliRunner().invoke(cli, ["build", str(recipe), "--out", str(tmp_path / "run")])


def assert_nothing_written(tmp_path):
    assert not (tmp_path / "run").exists()


def test_missing_dataset_file(tiny_recipe, tmp_path):
    edit_recipe(tiny_recipe, dataset={"train": "data/nope.jsonl"})
    assert_one_line_error(build(tiny_recipe, tmp_path), 2, "dataset.train", "not found", "nope.jsonl")
    assert_nothing_written(tmp_path)


def test_empty_dataset(tiny_recipe, tmp_path):
    (tmp_path / "data" / "train.jsonl").write_text("\n\n")
    assert_one_line_error(build(tiny_recipe, tmp_path), 2, "empty", "train.jsonl")
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("column", ["text_column", "label_column"])
def test_missing_column(tiny_recipe, tmp_path, column):
    edit_recipe(tiny_recipe, dataset={column: "utterance"})
    assert_one_line_error(build(tiny_recipe, tmp_path), 2, f"dataset.{column}", "'utterance' not found")
    assert_nothing_written(tmp_path)


def test_eval_label_never_seen(tiny_recipe, tmp_path):
    rows = make_rows(2, seed=3) + [{"text": "open the window", "label": "window_open"}]
    write_jsonl(tmp_path / "data" / "eval.jsonl", rows)
    assert_one_line_error(
        build(tiny_recipe, tmp_path), 2, "eval.jsonl:7", "window_open", "never occurs in the training"
    )
    assert_nothing_written(tmp_path)


def test_bad_json_line_names_file_and_line(tiny_recipe, tmp_path):
    with open(tmp_path / "data" / "train.jsonl", "a") as f:
        f.write("{not json}\n")
    assert_one_line_error(build(tiny_recipe, tmp_path), 2, "train.jsonl:49", "invalid JSON")


def test_csv_with_other_columns_needs_only_a_recipe_change(tiny_recipe, tmp_path):
    import csv

    rows = make_rows(10, seed=5)
    with open(tmp_path / "data" / "intents.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "category"])
        for r in rows:
            w.writerow([r["text"] + ', "quoted", ok', r["label"]])
    edit_recipe(
        tiny_recipe,
        dataset={"train": "data/intents.csv", "eval": None, "eval_fraction": 0.25, "label_column": "category"},
    )
    r = CliRunner().invoke(cli, ["recipe", "validate", str(tiny_recipe)])
    assert r.exit_code == 0, r.output
    assert "22 train / 8 eval rows, 3 labels" in r.output


def test_split_is_deterministic_and_disjoint(tiny_recipe):
    from edgetune.core.recipe import load_recipe
    from edgetune.pipeline import prepare

    edit_recipe(tiny_recipe, dataset={"eval": None, "eval_fraction": 0.3, "seed": 7})
    a, b = prepare(load_recipe(tiny_recipe)).data, prepare(load_recipe(tiny_recipe)).data
    assert [e["where"] for e in a.eval] == [e["where"] for e in b.eval]
    assert not {e["where"] for e in a.eval} & {e["where"] for e in a.train}
    assert len(a.eval) == round(48 * 0.3)


def test_a_dataset_key_added_later_keeps_earlier_runs_fingerprints_while_unset():
    """A run directory built before dataset.chat_template existed keeps its identity (and finished stages)."""
    import hashlib
    import json

    from edgetune.core.data import data_fingerprint
    from edgetune.core.recipe import DatasetConfig

    cfg = DatasetConfig(train="train.jsonl", system_prompt="Reply with JSON.")
    before = cfg.model_dump(exclude={"train", "eval", "chat_template"})  # the section as it was
    want = hashlib.sha256(json.dumps(["causal-lm", ["abc"], False, before], sort_keys=True).encode()).hexdigest()
    assert data_fingerprint("causal-lm", {"f": "abc"}, cfg) == want
    assert data_fingerprint("causal-lm", {"f": "abc"}, cfg.model_copy(update={"chat_template": "chatml"})) != want
