"""The causal-lm task on a tiny random LLaMA: chat-data errors, and every stage through onnxruntime-genai."""

import json

import pytest
from click.testing import CliRunner
from conftest import edit_recipe, make_chats, write_jsonl
from test_pipeline import UNPACKAGED
from test_recipe import assert_one_line_error

from edgetune.cli import cli
from edgetune.core.recipe import load_recipe
from edgetune.pipeline import build


@pytest.mark.parametrize(
    "record, fragments",
    [
        ({"messages": "hello"}, ["non-empty list"]),
        ({"text": "no chat here"}, ["needs 'messages'"]),
        (
            {"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}]},
            ["unknown role 'robot'"],
        ),
        (
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}]},
            ["empty assistant response"],
        ),
        ({"messages": [{"role": "user", "content": "hi"}]}, ["last message must be the assistant"]),
        (
            {"messages": [{"role": "user", "content": "x" * 400}, {"role": "assistant", "content": "ok"}]},
            ["longer than the model's context of 256"],
        ),
    ],
)
def test_bad_chat_records_name_file_and_line(tiny_chat_recipe, tmp_path, record, fragments):
    rows = make_chats(3, seed=4) + [record]
    write_jsonl(tmp_path / "data" / "train.jsonl", rows)
    r = CliRunner().invoke(cli, ["build", str(tiny_chat_recipe), "--out", str(tmp_path / "run")])
    assert_one_line_error(r, 2, "train.jsonl:4", *fragments)
    assert not (tmp_path / "run").exists()


def test_instruction_response_records_are_accepted(tiny_chat_recipe, tmp_path):
    rows = [{"instruction": "turn on the fan", "response": '{"device": "fan"}'}] * 4
    write_jsonl(tmp_path / "data" / "train.jsonl", rows)
    r = CliRunner().invoke(cli, ["recipe", "validate", str(tiny_chat_recipe)])
    assert r.exit_code == 0, r.output
    assert "4 train / 6 eval rows" in r.output


def test_int4_is_refused_for_classification(tiny_recipe):
    edit_recipe(tiny_recipe, quantize={"precisions": ["int8", "int4"]})
    r = CliRunner().invoke(cli, ["recipe", "validate", str(tiny_recipe)])
    assert_one_line_error(r, 2, "quantize.precisions")


def test_labels_cover_only_assistant_tokens(tiny_chat_recipe):
    from edgetune.pipeline import prepare

    p = prepare(load_recipe(tiny_chat_recipe))
    tok = p.task.load_tokenizer(p.source.path)
    ex = p.data.train[0]
    trained = tok.decode([t for t in ex["labels"] if t != -100])
    assert trained == ex["messages"][-1]["content"] + "<|im_end|>\n"
    assert "Reply with JSON." in tok.decode(ex["ids"])  # the recipe's system prompt is in the context


def test_training_loss_equals_transformers_loss(tiny_chat_recipe):
    """The loss that skips the output projection at prompt positions is the usual causal-LM loss, in fp32
    exactly and within bf16 rounding under autocast."""
    import torch
    from peft import LoraConfig, get_peft_model

    from edgetune.pipeline import prepare

    p = prepare(load_recipe(tiny_chat_recipe))
    tok = p.task.load_tokenizer(p.source.path)
    model = get_peft_model(p.task.load_model(p.source.path), LoraConfig(task_type="CAUSAL_LM", r=4))
    batch = next(iter(p.task.batches(p.data.train, tok, 8, 128)))
    with torch.no_grad():
        want = model(**batch).loss
        got = p.task.loss(model, batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got_bf16 = p.task.loss(model, batch)
    assert abs(got.item() - want.item()) < 1e-5
    assert abs(got_bf16.item() - want.item()) < 0.05 * want.item()


def test_build_exports_genai_folders_and_verifies(tiny_chat_recipe, tmp_path):
    run = tmp_path / "run"
    result = build(load_recipe(tiny_chat_recipe), run, progress=False)
    assert result.ran == UNPACKAGED
    for folder in (run / "export", run / "quantize" / "int4", run / "quantize" / "int8"):
        assert (folder / "genai_config.json").is_file() and (folder / "model.onnx").is_file(), folder
        assert (folder / "tokenizer.json").is_file()
    report = json.loads((run / "report" / "report.json").read_text())
    assert report["passed"], report["checks"]
    # embeddings: auto -- the int4 model shares its int4 lm_head with the embedding lookup; the int8 model
    # (whose int8 lm_head the builder cannot share) keeps its own table, in fp16.
    assert _embedding_lookup(run / "quantize" / "int4") == ("GatherBlockQuantized", None)
    assert _embedding_lookup(run / "quantize" / "int8") == ("Gather", "FLOAT16")
    fp32 = report["summary"]["models"]["onnx_fp32"]["eval"]
    assert fp32["greedy_agreement"] == 1.0 and fp32["max_abs_diff"] <= 1e-4
    names = {c["stage"] + ":" + c["name"] for c in report["checks"]}
    assert "verify[onnx_int4]:json_exact_match_drop" in names and "verify[onnx_int8]:perplexity_ratio" in names
    rows = report["stages"]["bench"]["results"]
    assert {r["model"] for r in rows} == {"pytorch_fp32", "onnx_fp32", "onnx_int8", "onnx_int4"}
    assert all(r["decode_tokens_per_s"] > 0 and r["ttft_ms"] > 0 for r in rows)
    assert report["stages"]["bench"]["kind"] == "decode"
    md = (run / "report" / "report.md").read_text()
    assert "merged perplexity" in md and "None" not in md  # the merge's own figure (it does not generate)

    r = CliRunner().invoke(cli, ["generate", str(run), "--prompt", "turn on the kitchen light", "--max-tokens", "8"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["report", str(tiny_chat_recipe), "--out", str(run)])
    assert r.exit_code == 0, r.output
    assert "onnx_int4      json_exact_match" in r.output and "decode t/s" in r.output


def _embedding_lookup(folder):
    """The op that reads input_ids, and the element type of its table when that is a plain initializer."""
    import onnx

    graph = onnx.load(folder / "model.onnx", load_external_data=False).graph
    node = next(n for n in graph.node if "input_ids" in n.input and n.op_type.startswith("Gather"))
    table = next((t for t in graph.initializer if t.name == node.input[0]), None)
    return node.op_type, onnx.TensorProto.DataType.Name(table.data_type) if table is not None else None


@pytest.mark.parametrize("case", ["ok", "shared-table", "too-large"])
def test_half_embeddings(tmp_path, case):
    """The fp16 table pass converts only a table that feeds the input_ids lookup alone and fits in fp16; the
    converted graph gives the same rows to fp16 precision."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from edgetune.engines.builder import half_embeddings

    table = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32) * (1e6 if case == "too-large" else 1)
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["emb"])]
    outputs = [helper.make_tensor_value_info("emb", TensorProto.FLOAT, None)]
    if case == "shared-table":
        nodes.append(helper.make_node("Transpose", ["table"], ["t"], perm=[1, 0]))
        outputs.append(helper.make_tensor_value_info("t", TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [None])],
        outputs,
        initializer=[numpy_helper.from_array(table, "table")],
    )
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    before = path.read_bytes()
    assert half_embeddings(path) == (case == "ok")
    if case != "ok":
        assert path.read_bytes() == before
        return
    ids = np.array([3, 0, 49])
    got = ort.InferenceSession(str(path)).run(["emb"], {"input_ids": ids})[0]
    assert got.dtype == np.float32 and np.abs(got - table[ids]).max() < 1e-3


def test_a_failed_rewrite_leaves_the_builders_files_whole(tmp_path, monkeypatch):
    """half_embeddings / drop_default_zero_points rewrite the builder's model.onnx + model.onnx.data: a save that
    fails part way (disk full, killed) leaves both files as they were, and no scratch folder behind."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgetune.engines.builder import half_embeddings

    table = np.random.default_rng(0).normal(size=(500, 8)).astype(np.float32)  # over onnx's 1 KB threshold
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["emb"])],
        "g",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [None])],
        [helper.make_tensor_value_info("emb", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(table, "table")],
    )
    path = tmp_path / "model.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location="model.onnx.data")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert set(before) == {"model.onnx", "model.onnx.data"}

    real_save = onnx.save

    def failing_save(m, p, **kw):
        real_save(m, p, **kw)  # the data is written, then the disk fills
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(onnx, "save", failing_save)
    with pytest.raises(OSError, match="No space"):
        half_embeddings(path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    monkeypatch.setattr(onnx, "save", real_save)
    assert half_embeddings(path) and sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.data"]
