"""quantize.auto for causal-lm: the int4 layout search (edgetune/engines/int4_auto.py)."""

import json

import pytest
from click.testing import CliRunner
from conftest import edit_recipe
from test_recipe import assert_one_line_error

from edgetune.cli import cli
from edgetune.core.errors import CheckFailed
from edgetune.core.recipe import BenchmarkConfig, load_recipe
from edgetune.engines import gptq
from edgetune.engines.int4_auto import (
    SELECT_ROWS,
    Layout,
    LMSelection,
    builder_options,
    builder_takes_node_overrides,
    choose,
    drop_se,
    layer_nodes,
    layer_sensitivity,
    layouts,
    search_int4,
)
from edgetune.pipeline import build, prepare


def test_a_layout_doing_more_work_is_pruned_behind_one_that_passed():
    fast = Layout(64)
    assert Layout(32).at_least_as_slow_as(fast)
    assert Layout(32, head="int8", int8_layers=2).at_least_as_slow_as(fast)
    assert Layout(64, level=0).at_least_as_slow_as(fast)
    assert Layout(64, rounding="asymmetric", head="int4").at_least_as_slow_as(fast)
    assert not Layout(128).at_least_as_slow_as(fast)  # larger blocks: may be faster
    assert not fast.at_least_as_slow_as(Layout(64, level=0))  # int8 compute is not float compute's work
    assert not Layout(32, head="int8", mixed=True).at_least_as_slow_as(Layout(32, head="int8", int8_layers=2))
    assert not Layout(64).at_least_as_slow_as(Layout(64, rounding="asymmetric"))
    # GPTQ runs the kernels round-to-nearest runs: zero points (asymmetric, k_quant) are the extra work
    gptq8 = Layout(32, rounding="gptq", head="int8", int8_layers=8)
    assert Layout(32, head="int8", int8_layers=8).at_least_as_slow_as(gptq8)
    assert Layout(32, rounding="asymmetric", head="int8", int8_layers=8).at_least_as_slow_as(gptq8)
    assert gptq8.at_least_as_slow_as(Layout(32, head="int8", int8_layers=4))
    assert not gptq8.at_least_as_slow_as(Layout(32, rounding="k_quant", head="int8"))


def test_the_layouts_of_a_model_trained_against_the_rounding_keep_its_block_and_rounding():
    trained = layouts(30, 64, per_node=True)
    assert {x.block for x in trained} == {64} and {x.rounding for x in trained} == {"rtn"}
    assert [x.int8_layers for x in trained if x.int8_layers] == [4, 8, 15]
    assert not any(x.level == 0 and (x.int8_layers or x.head == "int8") for x in layouts(30, None, True))
    free = layouts(30, None, per_node=True)
    assert {x.block for x in free} == {128, 64, 32, 16} and {x.rounding for x in free} == {
        "rtn",
        "asymmetric",
        "k_quant",
    }
    assert {x.level for x in free} == {0, 4} and {x.head for x in free} == {"shared", "int4", "int8"}
    assert not any(x.int8_layers for x in layouts(30, None, per_node=False))  # a builder without overrides
    assert len({x.name for x in free}) == len(free)
    assert len(layouts(2, None, per_node=True)) == len(free) - 3  # 1 layer is an eighth, a quarter and half


def test_builder_options_name_the_most_sensitive_layers_nodes():
    nodes = {
        i: [f"/model/layers.{i}/attn/qkv_proj/MatMul", f"/model/layers.{i}/mlp/down_proj/MatMul"] for i in range(4)
    }
    extra, target = builder_options(Layout(32, head="int8", int8_layers=2), nodes, [3, 1, 0, 2])
    assert extra == {"block_size": 32, "accuracy_level": 4, "shared_embeddings": "false"}
    matches = [o["match"] for o in target["quant_config"]["weights"]["overrides"]]
    assert matches == [{"name": n} for n in nodes[1] + nodes[3]] + [{"preset": "last_matmul"}]
    assert builder_options(Layout(32, head="int8"), nodes, [])[0]["matmul_mixed_precision"] == "last_matmul:int8"
    assert builder_options(Layout(128), nodes, [])[1] is None
    extra = builder_options(Layout(32, rounding="asymmetric", head="int4", mixed=True), nodes, [])[0]
    assert extra["is_symmetric"] == "false" and extra["matmul_mixed_precision"] == "mixed_layers:int8"


def test_choose_takes_the_fastest_passing_layout_and_ties_go_to_the_first():
    rows = [
        {"name": "a", "status": "failed", "decode_tokens_per_s": 300.0, "spread": 0.0},
        {"name": "b", "status": "passed", "decode_tokens_per_s": 196.0, "spread": 0.01},
        {"name": "c", "status": "passed", "decode_tokens_per_s": 200.0, "spread": 0.01},
        {"name": "d", "status": "passed", "decode_tokens_per_s": 150.0, "spread": 0.01},
    ]
    assert choose(rows)["name"] == "b"  # within 5% of c: a tie, won by the earlier
    rows[1]["decode_tokens_per_s"] = 180.0
    assert choose(rows)["name"] == "c"
    assert choose([rows[0]]) is None


def test_sensitivity_finds_the_layer_whose_rounding_hurts(tiny_chat_recipe):
    """A layer whose weights have one outlier per block (the rest then round to zero) ranks first."""
    import torch

    from edgetune.pipeline import prepare

    p = prepare(load_recipe(tiny_chat_recipe))
    model = p.task.load_model(p.source.path)
    with torch.no_grad():
        for m in model.model.layers[1].modules():
            if isinstance(m, torch.nn.Linear):
                m.weight[:, ::16] = 50 * m.weight.abs().max()
    scores = layer_sensitivity(model, p.data.train[:4], 16)
    assert len(scores) == 2 and scores[1] > 10 * scores[0] > 0


def _bits(folder):
    """(block size, int8 MatMul nodes, accuracy level of the first MatMulNBits) of a genai int4 folder."""
    import onnx

    nodes = [
        n for n in onnx.load(folder / "model.onnx", load_external_data=False).graph.node if n.op_type == "MatMulNBits"
    ]
    attr = {a.name: a.i for a in nodes[0].attribute}
    eights = [n.name for n in nodes if next(a.i for a in n.attribute if a.name == "bits") == 8]
    return attr["block_size"], eights, attr.get("accuracy_level", 0)


def test_the_search_builds_what_each_layout_names_prunes_and_explains_a_failure(tiny_chat_recipe, tmp_path):
    """search_int4 on the tiny model with a stand-in measurement read from each built file (so that the test
    controls which layouts pass): each file holds its layout's blocks and int8 nodes; a layout that does more
    work than one that passed is never built; with nothing passing, one line names the best layout found."""
    from edgetune.pipeline import prepare

    run = tmp_path / "run"
    build(load_recipe(tiny_chat_recipe), run, progress=False, until="export")
    p = prepare(load_recipe(tiny_chat_recipe))
    seen, cap = {}, [1.0]

    def evaluate(folder, rows, generate):
        # a stand-in figure: exact match rises with int8 nodes and falls with block size; the reference has 1.0
        if folder.name == "export":
            return {"perplexity": 2.0, "tokens": 10, "json_exact_match": 1.0, "json_exact_match_rows": [1] * len(rows)}
        block, eights, level = _bits(folder)
        seen[folder.name] = (block, eights, level)
        score = min(cap[0], 0.5 + 0.1 * len(eights) - block / 1000)
        hits = [1] * round(score * len(rows)) + [0] * (len(rows) - round(score * len(rows)))
        return {"perplexity": 2.0, "tokens": 10, "json_exact_match": score, "json_exact_match_rows": hits}

    def selection(max_drop):
        return LMSelection(
            examples=p.data.train[:8],
            evaluate=evaluate,
            gates=lambda ref, m: p.task.checks(
                "int4",
                load_recipe(tiny_chat_recipe).verify.model_copy(update={"int4_max_accuracy_drop": max_drop}),
                ref,
                m,
            ),
            load_torch=lambda: p.task.load_model(run / "merge" / "model"),
            timing=BenchmarkConfig(threads=1, sequence_lengths=[8], new_tokens=4, warmup=0, runs=1, rounds=1),
            vocab=json.loads((run / "merge" / "model" / "config.json").read_text())["vocab_size"],
            what="test rows",
            num_layers=2,
            metric="json_exact_match",
            budget={"max_drop": max_drop, "max_perplexity_ratio": 1.25},
            calibration=[tok.decode(ex["ids"]) for ex in p.data.train],
            calibration_len=32,
        )

    tok = p.task.load_tokenizer(run / "merge" / "model")
    out = tmp_path / "q"
    out.mkdir()
    model = search_int4(run / "merge" / "model", run / "export", out, selection(0.3), "auto", None)
    auto = model.notes["auto"]
    rows = {r["name"]: r for r in auto["candidates"]}
    per_node = builder_takes_node_overrides()
    # b128..b32 fail (0.37..0.47 < 0.7); lm_head int8 (1 int8 node) at b64 scores 0.536; 1 sensitive layer (its
    # 5 MatMuls) + lm_head at b32: 1.0 -> passes
    for name, r in rows.items():
        if r["status"] == "pruned":
            assert "which passed" in r["why"]
            continue
        folder = name.replace(", ", "_").replace(" ", "-").replace("'", "")
        block, eights, level = seen[folder]
        layout = Layout(**r["layout"])
        assert block == layout.block and level == layout.level, name
        assert ("/lm_head/MatMul_Q8" in eights) == (layout.head == "int8"), name
        assert sum("/model/layers." in n for n in eights) == 5 * layout.int8_layers or layout.mixed, name
        assert r["decode_tokens_per_s"] > 0 and r["prefill_ms"] > 0
    if per_node:
        assert [r["status"] for r in auto["candidates"][:8]] == ["failed"] * 8
        assert rows[auto["chosen"]]["status"] == "passed"
        assert len(auto["sensitivity"]) == 2
        assert rows["b32, asymmetric, lm_head int8, 1 sensitive layer int8"]["status"] == "pruned"
        if gptq.available():
            # GPTQ, lm_head int4 (GPTQ's): with the builder's mixed q/k/v + down_proj int8 (layer 0 of 2: 2 int8
            # nodes, 0.668) it fails; with 1 sensitive layer (5 nodes, 0.968) it is the first to pass, and the
            # round-to-nearest layouts as slow as it are not built
            assert rows["b32, gptq, own table, builder's mixed layers int8"]["status"] == "failed"
            first, score = "b32, gptq, own table, 1 sensitive layer int8", 0.968
            for slower in (
                "b32, gptq, lm_head int8, 1 sensitive layer int8",
                "b32, lm_head int8, 1 sensitive layer int8",
            ):
                assert rows[slower]["status"] == "pruned"
            assert rows["b32, lm_head int8, builder's mixed layers int8"]["status"] != "pruned"  # not as slow
        else:
            first, score = "b32, lm_head int8, 1 sensitive layer int8", 1.0
        assert rows[first]["status"] == "passed"
        # the exact-match drop is held by more than its noise: a gate of its own, on every decoded layout
        hits = round(score * 8)
        gate = next(g for g in rows[first]["gates"] if g[0] == "json_exact_match_drop_plus_se")
        assert gate[1] == pytest.approx(1 - score + (8 - hits) ** 0.5 / 8) and gate[2:] == [0.3, "<="]
    assert (out / "int4" / "genai_config.json").is_file() and not (out / "candidates").exists()

    cap[0] = 0.9  # no layout reaches the reference's 1.0
    with pytest.raises(CheckFailed) as e:
        # a model trained against blocks of 16: those only (fewer layouts)
        search_int4(
            run / "merge" / "model",
            run / "export",
            tmp_path / "q2",
            selection(0.0),
            "auto",
            16,
            figures=tmp_path / "f.json",
        )
    msg = str(e.value)
    assert "no int4 layout keeps" in msg and "training.int4_aware_epochs" in msg and "\n" not in msg
    # what the search measured is kept for the user (not only in the log); the layouts' files are not
    kept = json.loads((tmp_path / "f.json").read_text())
    assert kept["chosen"] is None and kept["candidates"] and f"figures: {tmp_path / 'f.json'}" in msg
    assert all(r["status"] == "failed" and r["exact_match"] <= 0.9 for r in kept["candidates"])
    assert not (tmp_path / "q2" / "candidates").exists()
    assert "json_exact_match_drop" in msg


def test_auto_on_a_chat_recipe_keeps_a_layout_and_reports_every_candidate(tiny_chat_recipe, tmp_path):
    # trained against blocks of 16 (one int4-aware epoch): the search keeps to them (fewer layouts)
    edit_recipe(
        tiny_chat_recipe,
        quantize={"precisions": ["int4"], "auto": True, "int4_block_size": 16},
        training={"epochs": 2, "int4_aware_epochs": 1},
    )
    run = tmp_path / "run"
    build(load_recipe(tiny_chat_recipe), run, progress=False)
    report = json.loads((run / "report" / "report.json").read_text())
    assert report["passed"], report["checks"]
    q = report["stages"]["quantize"]["models"][0]
    auto = q["notes"]["auto"]
    assert auto["kind"] == "int4" and auto["candidates"][0]["name"] == "b16"
    chosen = next(r for r in auto["candidates"] if r["name"] == auto["chosen"])
    assert chosen["status"] == "passed" and auto["search_seconds"] > 0
    md = (run / "report" / "report.md").read_text()
    assert "quantize.auto kept" in md and "| b16 |" in md and "decode tok/s" in md
    assert (run / "report" / "tradeoff.png").is_file()


def test_auto_carves_its_rows_out_of_training(tiny_chat_recipe):
    plain = prepare(load_recipe(tiny_chat_recipe))
    edit_recipe(tiny_chat_recipe, quantize={"precisions": ["int4"], "auto": True})
    auto = prepare(load_recipe(tiny_chat_recipe))
    n = len(plain.data.train)
    assert plain.data.selection == [] and len(auto.data.selection) == min(SELECT_ROWS, n // 5) > 0
    assert len(auto.data.train) + len(auto.data.selection) == n
    where = {ex["where"] for ex in auto.data.train}
    assert not where & {ex["where"] for ex in auto.data.selection}  # finetune never sees the search's rows
    assert auto.data.fingerprint != plain.data.fingerprint  # so finetune and what follows rebuild
    assert prepare(load_recipe(tiny_chat_recipe)).data.selection == auto.data.selection  # seeded


def test_auto_for_causal_lm_needs_int4(tiny_chat_recipe):
    edit_recipe(tiny_chat_recipe, quantize={"precisions": ["int8"], "auto": True})
    r = CliRunner().invoke(cli, ["build", str(tiny_chat_recipe), "--out", str(tiny_chat_recipe.parent / "run")])
    assert_one_line_error(r, 2, "quantize.auto", "int4")


@pytest.mark.skipif(not gptq.available(), reason="needs Olive: pip install 'edgetune[gptq]' (the test extra has it)")
def test_gptq_layout_is_built_as_named_and_rounds_closer_than_round_to_nearest(tiny_chat_recipe, tmp_path):
    """A GPTQ layout (Olive's pass, calibrated on the training rows) goes through the model builder as named:
    blocks of 32, lm_head and the named layer's MatMuls in int8, the rest int4, symmetric (no MatMulNBits keeps a
    zero-point input); an int4 lm_head is GPTQ's too; and on its calibration rows its logits are closer to the
    fp32 export's than the same layout rounded to nearest (what GPTQ minimizes)."""
    import numpy as np
    import onnx

    from edgetune.engines.builder import build_genai, drop_default_zero_points
    from edgetune.runtime.genai import GenaiLM

    run = tmp_path / "run"
    build(load_recipe(tiny_chat_recipe), run, progress=False, until="export")
    p = prepare(load_recipe(tiny_chat_recipe))
    merged = run / "merge" / "model"
    tok = p.task.load_tokenizer(merged)
    texts = [tok.decode(ex["ids"]) for ex in p.data.train]
    int8 = gptq.layer_linears(merged, [1])
    assert int8 and all(".layers.1." in n for n in int8) and not any(n.endswith("norm") for n in int8)
    # the builder's mixed preset on 2 layers: both are its first/last eighth; q/k/v and down_proj
    assert {m.rsplit(".", 1)[-1] for m in gptq.mixed_linears(merged)} == {"q_proj", "k_proj", "v_proj", "down_proj"}
    layout = Layout(32, rounding="gptq", head="int8", int8_layers=1)
    extra, target = builder_options(layout, {}, [1, 0])
    assert target is None and extra["matmul_mixed_precision"] == "last_matmul:int8"
    source = gptq.gptq(merged, tmp_path / "g", 32, texts, 32, int8)
    folders = {n: tmp_path / n for n in ("gptq", "plain", "rtn", "head4")}
    for f in folders.values():
        f.mkdir()
    build_genai(source, folders["gptq"], "int4", extra)
    assert drop_default_zero_points(folders["gptq"] / "model.onnx") > 0
    # lm_head int4 rounded by GPTQ too (the layers as above)
    head4 = gptq.gptq(merged, tmp_path / "g4", 32, texts, 32, int8, lm_head=True)
    build_genai(head4, folders["head4"], "int4", builder_options(Layout(32, rounding="gptq", head="int4"), {}, [])[0])
    drop_default_zero_points(folders["head4"] / "model.onnx")
    # the same layout rounded to nearest: lm_head and layer 1 int8 (the builder's per-node overrides)
    rtn = Layout(32, head="int8", int8_layers=1)
    build_genai(merged, folders["plain"], "int4", builder_options(Layout(32), {}, [])[0])
    opts, target = builder_options(rtn, layer_nodes(folders["plain"] / "model.onnx"), [1])
    build_genai(merged, folders["rtn"], "int4", opts, target=target)

    def int8_ops(folder):  # the int8 MatMuls, by their place in the graph (pre-quantized ones are named apart)
        return {n.rsplit("/", 1)[0] for n in _bits(folder)[1]}

    assert int8_ops(folders["rtn"]) == int8_ops(folders["gptq"]) or not builder_takes_node_overrides()
    block, eights, _ = _bits(folders["gptq"])
    assert block == 32 and "/lm_head/MatMul_Q8" in eights
    assert sum("/model/layers.1/" in n for n in eights) >= 3 and not any("/model/layers.0/" in n for n in eights)
    assert int8_ops(folders["head4"]) == int8_ops(folders["gptq"]) - {"/lm_head"}
    for name in ("gptq", "head4"):
        nodes = [n for n in onnx.load(folders[name] / "model.onnx").graph.node if n.op_type == "MatMulNBits"]
        assert not any(len(n.input) > 3 and n.input[3] for n in nodes), name  # symmetric: no zero points

    def logits(folder):
        return np.concatenate([p.task.evaluate(GenaiLM(folder, 1), tok, p.data.train, 4, 128)[0]], axis=0)

    ref = logits(run / "export")
    err = {name: float(np.mean((logits(folders[name]) - ref) ** 2)) for name in ("gptq", "rtn")}
    assert err["gptq"] < err["rtn"], err


def test_the_drop_is_held_by_more_than_its_noise():
    """The exact-match drop's standard error on paired rows counts the rows where one model hits and the other
    misses: a layout that changes no answer has none; one that trades answers has more than its net drop says."""
    assert drop_se([1, 1, 0, 0], [1, 1, 0, 0]) == 0.0
    assert drop_se([1, 1, 0, 0], [1, 0, 1, 0]) == pytest.approx(2**0.5 / 4)  # drop 0, noise of 2 changed rows
    assert drop_se([1, 1, 1, 1], [1, 1, 1, 0]) == pytest.approx(1 / 4)
    assert drop_se([], []) == 0.0


def test_default_zero_points_are_dropped_and_the_product_is_unchanged(tmp_path):
    """MatMulNBits whose zero points all equal the operator's default (8 for int4, 128 for int8) lose that input
    (the symmetric kernels then run) and compute the same product; any other zero point keeps it."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from edgetune.engines.builder import drop_default_zero_points

    rng = np.random.default_rng(0)
    k, n, block = 64, 8, 32
    blocks = k // block
    nodes, inits = [], []
    for name, bits, zp in (("sym4", 4, 0x88), ("sym8", 8, 128), ("asym4", 4, 0x87)):
        per_byte = 8 // bits
        inits += [
            numpy_helper.from_array(rng.integers(0, 256, (n, blocks, block // per_byte), dtype=np.uint8), f"{name}.w"),
            numpy_helper.from_array(rng.uniform(0.01, 0.1, n * blocks).astype(np.float32), f"{name}.s"),
            numpy_helper.from_array(np.full(n * -(-blocks // per_byte), zp, dtype=np.uint8), f"{name}.z"),
        ]
        nodes.append(
            helper.make_node(
                "MatMulNBits",
                ["a", f"{name}.w", f"{name}.s", f"{name}.z"],
                [name],
                name=name,
                domain="com.microsoft",
                K=k,
                N=n,
                bits=bits,
                block_size=block,
                accuracy_level=4,
            )
        )
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, k])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [2, n]) for x in ("sym4", "sym8", "asym4")],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    )
    path = tmp_path / "model.onnx"
    onnx.save(model, path, save_as_external_data=True, location="model.onnx.data")
    a = rng.standard_normal((2, k)).astype(np.float32)

    def run():
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"a": a})

    before = run()
    assert drop_default_zero_points(path) == 2
    kept = {nd.name: list(nd.input) for nd in onnx.load(path).graph.node}
    assert len(kept["sym4"]) == 3 and len(kept["sym8"]) == 3 and len(kept["asym4"]) == 4
    for x, y in zip(before, run()):
        np.testing.assert_array_equal(x, y)
    assert drop_default_zero_points(path) == 0
