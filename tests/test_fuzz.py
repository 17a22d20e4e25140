"""Hostile input, generated: mutated recipes and dataset rows must give a one-line error naming the field or
the file and line (exit 2), or be accepted; never a traceback."""

from __future__ import annotations

import copy
import json
import math

import pytest
import yaml
from click.testing import CliRunner
from conftest import make_rows, write_jsonl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgetune.cli import cli
from edgetune.core.errors import RecipeError
from edgetune.core.recipe import field_path, parse_recipe

VALID = {
    "name": "fuzz",
    "task": "classification",
    "model": {"source": "./model"},
    "dataset": {"train": "data/train.jsonl", "eval": "data/eval.jsonl"},
    "lora": {"r": 4, "alpha": 8, "target_modules": ["query", "value"]},
    "training": {"epochs": 1, "learning_rate": 0.01, "batch_size": 8, "max_length": 16},
    "quantize": {"precisions": ["int8"]},
    "benchmark": {"threads": 1, "sequence_lengths": [8], "runs": 2},
    "package": {"android": None, "golden": 4},
}

junk = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(["../../etc/passwd", "/abs/path", "\x00nul", "😀" * 10, "1e309", "-1", "int4", ""]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _paths(d: dict, prefix: tuple = ()) -> list[tuple]:
    out = []
    for k, v in d.items():
        out.append(prefix + (k,))
        if isinstance(v, dict):
            out += _paths(v, prefix + (k,))
    return out


@st.composite
def mutated_recipes(draw) -> tuple[dict, set[str]]:
    """A valid recipe with 1-3 random mutations; also returns the top-level keys touched."""
    data, touched = copy.deepcopy(VALID), set()
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(data)
        kind = draw(st.sampled_from(["set", "delete", "add"]))
        path = draw(st.sampled_from(paths)) if paths else ("name",)
        parent = data
        for k in path[:-1]:
            parent = parent.get(k) if isinstance(parent, dict) else None
            if not isinstance(parent, dict):
                break
        if not isinstance(parent, dict):
            continue
        if kind == "set":
            parent[path[-1]] = draw(junk)
        elif kind == "delete":
            parent.pop(path[-1], None)
        else:
            key = draw(st.text(min_size=1, max_size=12))
            parent[key] = draw(junk)
            path = path[:-1] + (key,)
        touched.add(str(path[0]))
    return data, touched


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_recipes())
def test_mutated_recipes_are_accepted_or_name_the_field(case):
    data, touched = case
    try:
        parse_recipe(data, "fuzz.yaml")
    except RecipeError as e:
        msg = e.message
        assert msg.startswith("fuzz.yaml: ") and "\n" not in msg, msg
        # the error names a field: its path starts with a section that was mutated (or is the top level)
        where = msg[len("fuzz.yaml: ") :]
        assert any(where.startswith(field_path((t,))) for t in touched | {"(top level)"}), (msg, touched)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(mutated_recipes())
def test_mutated_recipes_through_the_cli(tmp_path, tiny_bert, case):
    """The whole `recipe validate` path (YAML, schema, model source, data): exit 0 or 2, one line."""
    data, _ = case
    if isinstance(data.get("model"), dict) and data["model"].get("source") == "./model":
        data["model"]["source"] = str(tiny_bert)
    write_jsonl(tmp_path / "data" / "train.jsonl", make_rows(4, seed=1))
    write_jsonl(tmp_path / "data" / "eval.jsonl", make_rows(2, seed=2))
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(_yaml_safe(data), allow_unicode=True))
    r = CliRunner().invoke(cli, ["recipe", "validate", str(path)])
    assert r.exit_code in (0, 2), (r.output, r.exception)
    if r.exit_code == 2:
        lines = [ln for ln in r.output.splitlines() if not ln.startswith("warning:")]
        assert len(lines) == 1 and lines[0].startswith("Error: "), r.output
        assert "Traceback" not in r.output


def _yaml_safe(v):
    """YAML cannot hold NaN keys or surrogates the same way: map them to strings it can."""
    if isinstance(v, dict):
        return {str(k).encode("utf-8", "replace").decode(): _yaml_safe(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_yaml_safe(x) for x in v]
    if isinstance(v, str):
        return v.encode("utf-8", "replace").decode()
    if isinstance(v, float) and math.isnan(v):
        return ".nan"
    return v


# -- dataset rows -----------------------------------------------------------------------------------------
row_text = st.one_of(
    st.text(max_size=60),
    st.just(""),
    st.just("   "),
    st.just("x" * 100_000),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=30),
    st.integers(),
    st.none(),
    st.lists(st.integers(), max_size=3),
)
row_label = st.one_of(
    st.sampled_from(["lights", "music", "door", "ドア", "💡", "música"]),
    st.none(),
    st.integers(),
    st.just(""),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(st.tuples(row_text, row_label), min_size=1, max_size=8),
    raw=st.binary(max_size=40),
    as_csv=st.booleans(),
)
def test_hostile_dataset_rows(tiny_recipe, tmp_path, rows, raw, as_csv):
    """Empty texts, wrong types, unicode labels, 100k-character texts, random bytes (non-UTF-8, broken
    quoting): exit 0 (long texts truncated with a warning) or 2 naming file:line, never a traceback."""
    recipe = yaml.safe_load(tiny_recipe.read_text())
    data_dir = tmp_path / "data"
    good = make_rows(4, seed=1)
    if as_csv:
        lines = ["text,label"] + [f'"{r["text"]}",{r["label"]}' for r in good]
        lines += [f"{t},{lab}" for t, lab in rows]
        train = data_dir / "train.csv"
        train.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass") + b"\n" + raw)
    else:
        train = write_jsonl(data_dir / "train.jsonl", good + [{"text": t, "label": lab} for t, lab in rows])
        with open(train, "ab") as f:
            f.write(raw)
    recipe["dataset"]["train"] = str(train)
    recipe["dataset"].pop("eval", None)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    r = CliRunner().invoke(cli, ["recipe", "validate", str(path)])
    assert r.exit_code in (0, 2), (r.output, r.exception)
    out = [ln for ln in r.output.splitlines() if ln.strip()]
    if r.exit_code == 2:
        errors = [ln for ln in out if ln.startswith("Error: ")]
        assert len(errors) == 1 and "Traceback" not in r.output, r.output
        assert train.name in errors[0] or "dataset." in errors[0], r.output
    if any(isinstance(t, str) and len(t.strip()) > 20_000 for t, _ in rows) and r.exit_code == 0:
        assert "characters truncated to 20000" in r.output


def test_long_text_is_truncated_with_a_warning(tiny_recipe, tmp_path):
    rows = make_rows(4, seed=1) + [{"text": "lights " * 20_000, "label": "lights"}]
    write_jsonl(tmp_path / "data" / "train.jsonl", rows)
    r = CliRunner().invoke(cli, ["recipe", "validate", str(tiny_recipe)])
    assert r.exit_code == 0, r.output
    assert "train.jsonl:13: text of 139999 characters truncated to 20000" in r.output


@pytest.mark.parametrize("label", ["ドア", "💡 lights", "música"])
def test_unicode_labels_round_trip(tiny_recipe, tmp_path, label):
    rows = [dict(r, label=label if r["label"] == "door" else r["label"]) for r in make_rows(4, seed=1)]
    write_jsonl(tmp_path / "data" / "train.jsonl", rows)
    write_jsonl(
        tmp_path / "data" / "eval.jsonl",
        [dict(r, label=label if r["label"] == "door" else r["label"]) for r in make_rows(2, seed=2)],
    )
    r = CliRunner().invoke(cli, ["recipe", "validate", str(tiny_recipe)])
    assert r.exit_code == 0, r.output
    assert json.dumps(label, ensure_ascii=False)  # the label itself is fine as UTF-8


@pytest.mark.parametrize("name", ["../evil", "/etc/x", "a/b", "..", ".hidden"])
def test_run_name_cannot_leave_the_runs_folder(tiny_recipe, name):
    from conftest import edit_recipe

    edit_recipe(tiny_recipe, name=name)
    r = CliRunner().invoke(cli, ["recipe", "validate", str(tiny_recipe)])
    assert r.exit_code == 2 and "name:" in r.output and "Traceback" not in r.output


def test_install_refuses_a_symlink_in_the_package(tmp_path):
    from edgetune.core.errors import EdgetuneError
    from edgetune.packaging.app import install

    pkg, android = tmp_path / "pkg", tmp_path / "android"
    pkg.mkdir()
    (android / "app").mkdir(parents=True)
    (android / "app" / "build.gradle.kts").write_text("")
    (pkg / "manifest.json").write_text("{}")
    (pkg / "model.onnx").symlink_to("/etc/passwd")
    with pytest.raises(EdgetuneError, match="not a regular file"):
        install(pkg, android, "classification")
    assert not (android / "app" / "src" / "main" / "assets" / "edgetune").exists()
    assert not list((android / "app" / "src" / "main" / "assets").glob(".edgetune-*"))  # temp copy removed
