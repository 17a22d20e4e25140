"""quantize.auto: every candidate measured and timed, the fastest within verify's budgets kept, the same choice
on a second run with the same seed, all of it in report.json and report.md."""

from __future__ import annotations

import json

import pytest
from conftest import edit_recipe

from edgetune.core.recipe import load_recipe
from edgetune.engines.autoquant import CANDIDATES, choose
from edgetune.pipeline import build


def _row(name, p50, passed=True, spread=0.0):
    return {"name": name, "p50_ms": p50, "passed": passed, "spread": spread}


def test_choose_keeps_the_fastest_passing_and_breaks_ties_by_order():
    names = [c.name for c in CANDIDATES]
    assert choose([_row(names[0], 2.0), _row(names[1], 1.0)])["name"] == names[1]
    # a difference under the timer's jitter (0.05 ms) is a tie, however large in proportion
    assert choose([_row(names[0], 0.14), _row(names[1], 0.1)])["name"] == names[0]
    assert choose([_row(names[0], 2.0), _row(names[1], 1.0, passed=False)])["name"] == names[0]
    # 3% apart is inside the 5% noise floor: the first listed wins
    assert choose([_row(names[0], 1.03), _row(names[1], 1.0)])["name"] == names[0]
    # a measured spread of 30% widens the tie
    assert choose([_row(names[0], 1.25, spread=0.3), _row(names[1], 1.0)])["name"] == names[0]
    assert choose([_row(names[0], 1.0, passed=False)]) is None


def test_auto_picks_the_same_build_twice_and_reports_every_candidate(tiny_recipe, tmp_path):
    edit_recipe(tiny_recipe, quantize={"auto": True}, benchmark={"runs": 3, "rounds": 1})
    picks = []
    for i in range(2):
        run = tmp_path / f"run{i}"
        build(load_recipe(tiny_recipe), run, progress=False)
        doc = json.loads((run / "report" / "report.json").read_text())
        auto = doc["stages"]["quantize"]["models"][0]["notes"]["auto"]
        assert [c["name"] for c in auto["candidates"]] == [c.name for c in CANDIDATES]
        for c in auto["candidates"]:
            assert {"accuracy", "top1_agreement", "mean_cosine", "p50_ms", "spread", "size_bytes", "passed"} <= set(c)
        picks.append(auto["chosen"])
        md = (run / "report" / "report.md").read_text()
        assert f"quantize.auto kept **{auto['chosen']}**" in md and "tradeoff.png" in md
        assert (run / "report" / "tradeoff.png").stat().st_size > 0
    assert picks[0] == picks[1]
    assert picks[0] in [c["name"] for c in auto["candidates"] if c["passed"]]


def test_no_candidate_within_the_budgets_fails_in_one_line(tiny_recipe, tmp_path):
    from click.testing import CliRunner

    from edgetune.cli import cli

    edit_recipe(tiny_recipe, quantize={"auto": True}, verify={"int8_min_cosine": 1.0, "int8_min_top1_agreement": 1.0})
    r = CliRunner().invoke(cli, ["quantize", str(tiny_recipe), "--out", str(tmp_path / "run")])
    assert r.exit_code == 1, r.output
    errors = [ln for ln in r.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and "quantize.auto: no int8 candidate keeps verify's budgets" in errors[0], r.output
    assert "Traceback" not in r.output


@pytest.mark.parametrize("auto", [False, True])
def test_the_search_is_in_the_quantize_key(tiny_recipe, auto):
    from types import SimpleNamespace

    from edgetune.stages.quantize import OrtInt8

    edit_recipe(tiny_recipe, quantize={"auto": auto})
    r = load_recipe(tiny_recipe)
    ctx = SimpleNamespace(recipe=r, data=SimpleNamespace(fingerprint="d"))
    tight = r.model_copy(update={"verify": r.verify.model_copy(update={"int8_max_accuracy_drop": 0.0})})
    changed = OrtInt8().key(ctx) != OrtInt8().key(SimpleNamespace(recipe=tight, data=ctx.data))
    assert changed == auto  # the budgets choose the build only when searching
