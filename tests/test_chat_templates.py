"""Base models and their chat format: dataset.chat_template (a name or a Jinja file) for a tokenizer without one,
written into every folder a build saves; and prompt/completion rows, which go to the model raw."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from conftest import CHATML, edit_recipe, make_chats, write_recipe
from test_recipe import assert_one_line_error

from edgetune.cli import cli
from edgetune.core.recipe import load_recipe
from edgetune.core.templates import TEMPLATES, completion_template
from edgetune.pipeline import build, prepare


@pytest.fixture(scope="module")
def tiny_base(tiny_llama, tmp_path_factory) -> Path:
    """The tiny LLaMA with a tokenizer that has no chat template (a base model's)."""
    root = tmp_path_factory.mktemp("base") / "llama-base"
    shutil.copytree(tiny_llama, root)
    (root / "chat_template.jinja").unlink(missing_ok=True)
    cfg = json.loads((root / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (root / "tokenizer_config.json").write_text(json.dumps(cfg))
    return root


def _recipe(tmp_path: Path, source: Path, train: list[dict], evals: list[dict], **dataset) -> Path:
    return write_recipe(
        tmp_path,
        train,
        evals,
        {
            "name": "tiny-base",
            "task": "causal-lm",
            "model": {"source": str(source)},
            "dataset": dataset,
            "lora": {"r": 4, "alpha": 8},
            "training": {"epochs": 1, "learning_rate": 0.01, "batch_size": 8, "max_length": 128},
            "quantize": {"precisions": ["int4"], "int4_block_size": 16},
            "verify": {"greedy_tokens": 4},
        },
    )


def _validate(recipe: Path):
    return CliRunner().invoke(cli, ["recipe", "validate", str(recipe)])


def _completions(n: int, seed: int) -> list[dict]:
    return [
        {"prompt": m["messages"][0]["content"] + " ->", "completion": " " + m["messages"][1]["content"]}
        for m in make_chats(n, seed)
    ]


def test_base_model_builds_with_a_named_template_and_every_folder_carries_it(tiny_base, tmp_path):
    import onnxruntime_genai as og
    from transformers import AutoTokenizer

    from edgetune.chat import Chat
    from edgetune.runtime.decoding import chat_ids

    recipe = _recipe(tmp_path, tiny_base, make_chats(16, 1), make_chats(4, 2), chat_template="chatml")
    android = tmp_path / "android"
    (android / "app").mkdir(parents=True)
    (android / "app" / "build.gradle.kts").write_text("// stand-in for the demo app\n")
    edit_recipe(recipe, package={"android": str(android), "golden": 2, "ort_format": False})
    run = tmp_path / "run"
    result = build(load_recipe(recipe), run, until="package", progress=False)
    assert result.verification.passed
    int4 = run / "quantize" / "int4"
    for folder in (run / "finetune" / "adapter", run / "merge" / "model", run / "export", int4):
        assert AutoTokenizer.from_pretrained(folder).chat_template == TEMPLATES["chatml"], folder
    # onnxruntime-genai reads the template from the folder (apply_chat_template without a template_str)
    model = og.Model(str(int4))
    opened = og.Tokenizer(model).apply_chat_template(json.dumps([{"role": "user", "content": "hi"}]))
    assert opened == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    # edgetune chat formats the prompt with it, and the packaged app's prompt format is the same
    chat = Chat(int4)
    want = chat.tokenizer("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)
    assert chat_ids(chat.tokenizer, [{"role": "user", "content": "hi"}]) == want["input_ids"]
    manifest = json.loads(next((android / "app").rglob("manifest.json")).read_text())
    assert manifest["chat"]["prompt_format"] == "<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


def test_no_template_is_refused_naming_the_key(tiny_base, tmp_path):
    recipe = _recipe(tmp_path, tiny_base, make_chats(8, 1), make_chats(2, 2))
    assert_one_line_error(_validate(recipe), 2, "the tokenizer has no chat template", "set dataset.chat_template")


@pytest.mark.parametrize(
    "value, fragments",
    [
        ("chatlm", ["dataset.chat_template", "unknown template 'chatlm'", "did you mean 'chatml'"]),
        ("templates/missing.jinja", ["dataset.chat_template", "Jinja file not found", "missing.jinja"]),
        ("bad.jinja", ["dataset.chat_template", "bad.jinja:1", "not valid Jinja"]),
        ("gemma", ["dataset.chat_template", "<start_of_turn>", "does not have as tokens"]),
    ],
)
def test_bad_chat_template_is_one_line(tiny_base, tmp_path, value, fragments):
    (tmp_path / "bad.jinja").write_text("{% for m in messages %}{{ m['content'] }")
    recipe = _recipe(tmp_path, tiny_base, make_chats(8, 1), make_chats(2, 2), chat_template=value)
    assert_one_line_error(_validate(recipe), 2, *fragments)


def test_jinja_file_is_used_and_its_edit_changes_the_finetune_key(tiny_llama, tmp_path):
    from edgetune.core.rundir import config_key
    from edgetune.stages.finetune import Finetune

    template = tmp_path / "templates" / "mine.jinja"
    template.parent.mkdir()
    template.write_text(CHATML.replace("<|im_start|>", "<|im_start|> "))
    recipe = _recipe(tmp_path, tiny_llama, make_chats(8, 1), make_chats(2, 2), chat_template="templates/mine.jinja")

    def finetune_key() -> tuple[str, object]:
        p = prepare(load_recipe(recipe))
        k = Finetune().key(SimpleNamespace(recipe=p.recipe, data=p.data, source=p.source))  # type: ignore[arg-type]
        return config_key("finetune", k.version, k.config, list(k.reads)), p

    key, p = finetune_key()
    assert p.data.chat_template == template.read_text()
    # tiny_llama's tokenizer has a template of its own: the recipe's wins, with one line saying so
    assert p.data.warnings == ["dataset.chat_template: templates/mine.jinja replaces the tokenizer's own template"]
    tok = p.task.load_tokenizer(p.source.path, chat_template=p.data.chat_template)
    assert tok.decode(p.data.train[0]["ids"]).startswith("<|im_start|> user\n")
    assert p.task.load_tokenizer(p.source.path).chat_template == CHATML  # the source's tokenizer is left as it is
    assert finetune_key()[0] == key
    template.write_text(CHATML)
    assert finetune_key()[0] != key


def test_prompt_completion_rows_train_on_the_completion_and_end_token_only(tiny_base, tmp_path):
    recipe = _recipe(tmp_path, tiny_base, _completions(8, 1), _completions(2, 2), response_format="json")
    p = prepare(load_recipe(recipe))
    assert p.data.chat_template == completion_template(bos=False)  # this tokenizer adds no bos_token
    tok = p.task.load_tokenizer(p.source.path, chat_template=p.data.chat_template)
    for ex in p.data.train + p.data.eval:
        prompt, completion = ex["messages"][0]["content"], ex["messages"][1]["content"]
        start = next(i for i, lab in enumerate(ex["labels"]) if lab != -100)
        assert ex["ids"][:start] == tok(prompt, add_special_tokens=False)["input_ids"]
        assert ex["labels"][start:] == ex["ids"][start:]  # every token after the prompt is trained
        assert tok.decode(ex["ids"][start:]) == completion + tok.eos_token
    # generation (verify, edgetune chat, the app's prompt format) passes the prompt as it is, alone
    history = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "one"},
        {"role": "user", "content": "dim the light ->"},
    ]
    assert tok.apply_chat_template(history, tokenize=False, add_generation_prompt=True) == "dim the light ->"
    fmt = tok.apply_chat_template([{"role": "user", "content": "{user}"}], tokenize=False, add_generation_prompt=True)
    assert fmt == "{user}"


def test_prompt_completion_raw_template_starts_with_bos_where_the_tokenizer_does(tmp_path):
    from archs import make_tiny

    from edgetune.tasks.causal_lm import CausalLMTask, _starts_with_bos

    folder = make_tiny("gemma3", tmp_path)
    tok = CausalLMTask().load_tokenizer(folder)
    assert _starts_with_bos(tok)
    tok.chat_template = completion_template(bos=True)
    text = tok.apply_chat_template([{"role": "user", "content": "turn on"}], tokenize=False, add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False)["input_ids"]  # what prompt_ids does (a list on either line)
    assert ids[0] == tok.bos_token_id and tok.decode(ids[1:]) == "turn on"


@pytest.mark.parametrize(
    "rows, dataset, fragments",
    [
        (_completions(4, 1) + make_chats(4, 2), {}, ["train.jsonl:5", "a chat row", "all prompt/completion rows"]),
        (_completions(8, 1), {"system_prompt": "Be brief."}, ["dataset.system_prompt", "as they are"]),
        (_completions(8, 1), {"chat_template": "chatml"}, ["dataset.chat_template", "as they are"]),
        (_completions(7, 1) + [{"prompt": "x", "completion": " "}], {}, ["train.jsonl:8", "empty completion"]),
    ],
)
def test_bad_prompt_completion_data_is_one_line(tiny_base, tmp_path, rows, dataset, fragments):
    recipe = _recipe(tmp_path, tiny_base, rows, _completions(2, 3), **dataset)
    assert_one_line_error(_validate(recipe), 2, *fragments)


def test_the_templates_end_of_turn_token_stops_generation(tmp_path):
    """A base Gemma given the gemma template: decoding stops at <end_of_turn> as well as at <eos>, and the genai
    folder's genai_config.json says so (the builder writes the model's end-of-text token alone)."""
    from archs import make_tiny
    from transformers import AutoTokenizer

    from edgetune.engines.builder import stop_at_turn_end
    from edgetune.runtime.decoding import end_ids

    folder = make_tiny("gemma3", tmp_path)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = TEMPLATES["gemma"]
    turn, eos = tok.convert_tokens_to_ids("<end_of_turn>"), tok.eos_token_id
    assert end_ids(tok) == {eos, turn}
    genai = tmp_path / "genai"
    tok.save_pretrained(genai)
    (genai / "genai_config.json").write_text(json.dumps({"model": {"eos_token_id": eos}}))
    stop_at_turn_end(genai)
    assert json.loads((genai / "genai_config.json").read_text())["model"]["eos_token_id"] == [eos, turn]


def test_named_templates_render_as_upstream():
    """Each named template's generation prompt and end of turn (Gemma: the system text in the first user turn)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment()
    chat = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"},
    ]

    def render(name: str, messages: list[dict], generation: bool = False) -> str:
        t = env.from_string(TEMPLATES[name])
        return t.render(messages=messages, add_generation_prompt=generation, bos_token="<BOS>", eos_token="<EOS>")

    assert render("chatml", chat) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n"
    )
    assert render("chatml", chat[:2], True).endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert (
        render("gemma", chat)
        == "<BOS><start_of_turn>user\nS\n\nhi<end_of_turn>\n<start_of_turn>model\nyo<end_of_turn>\n"
    )
    assert render("gemma", chat[1:2], True) == "<BOS><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n"
    assert render("llama3", chat) == (
        "<BOS><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
        "hi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nyo<|eot_id|>"
    )
    assert render("llama3", chat[1:2], True) == (
        "<BOS><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )
