"""Chat templates for tokenizers that have none: the ones a recipe names (dataset.chat_template), a Jinja file it
points to, and the raw template of prompt/completion rows. The causal-lm task writes the chosen one into the
tokenizer, so every folder a build saves (adapter, merged model, onnxruntime-genai folders) carries it, and
`edgetune chat`, onnxruntime-genai's apply_chat_template and the packaged prompt format all render it."""

from __future__ import annotations

import difflib
from pathlib import Path

from edgetune.core.errors import RecipeError

FIELD = "dataset.chat_template"

# ChatML as OpenAI wrote it up and Qwen, SmolLM and Hermes ship it (no default system message).
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Gemma 3's template (google/gemma-3-*-it), text only: the system message goes into the first user turn, the
# assistant's role is "model", turns alternate user/model, contents are trimmed.
GEMMA = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{% set first_user_prefix = messages[0]['content'] + '\n\n' %}"
    "{% set loop_messages = messages[1:] %}"
    "{% else %}"
    "{% set first_user_prefix = '' %}"
    "{% set loop_messages = messages %}"
    "{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

# Llama 3's template (meta-llama/Meta-Llama-3-8B-Instruct): a header per turn, contents trimmed, <|eot_id|>
# after each, bos_token before the first.
LLAMA3 = (
    "{% set loop_messages = messages %}"
    "{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim"
    " + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

TEMPLATES = {"chatml": CHATML, "gemma": GEMMA, "llama3": LLAMA3}
# The special tokens each named template writes: the tokenizer must have each as one token (else the template's
# markers are split into pieces, and generation has no end-of-turn token to stop at).
TOKENS = {
    "chatml": ("<|im_start|>", "<|im_end|>"),
    "gemma": ("<start_of_turn>", "<end_of_turn>"),
    "llama3": ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
}
NAMES = ", ".join(TEMPLATES)


def completion_template(bos: bool) -> str:
    """The template of a model trained on prompt/completion rows: the last user message as it is (after
    bos_token when the tokenizer starts every text with it), then, in a finished row, the completion and
    eos_token. A conversation's earlier turns and system message are dropped: each prompt stands alone."""
    start = "{{ bos_token }}" if bos else ""
    return (
        "{% for message in messages %}"
        "{% if message['role'] == 'user' and loop.index0 >= messages | length - 2 %}"
        f"{start}{{{{ message['content'] }}}}"
        "{% elif message['role'] == 'assistant' and loop.last %}"
        "{{ message['content'] + eos_token }}"
        "{% endif %}"
        "{% endfor %}"
    )


def is_template_file(value: str) -> bool:
    """Whether a dataset.chat_template value is a file path (it has a folder or a file extension) not a name."""
    return "/" in value or "\\" in value or "." in value


def check_template_name(value: str) -> str:
    """A dataset.chat_template value that is not a path must be a known name (ValueError otherwise)."""
    if is_template_file(value) or value in TEMPLATES:
        return value
    close = difflib.get_close_matches(value, list(TEMPLATES), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise ValueError(f"unknown template '{value}' (expected {NAMES}, or a path to a .jinja file){hint}")


def template_path(value: str, base_dir: Path) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else Path(base_dir) / p


def read_template(value: str, base_dir: Path) -> tuple[str, Path | None]:
    """The Jinja text dataset.chat_template names, and the file it was read from (None for a named one); a
    one-line RecipeError for a file that is missing, unreadable, empty or not valid Jinja."""
    if not is_template_file(value):
        check = TEMPLATES.get(value)
        if check is None:
            raise RecipeError(f"{FIELD}: unknown template '{value}' (expected {NAMES}, or a path to a .jinja file)")
        return check, None
    path = template_path(value, base_dir)
    where = f"{value} (resolved to {path.resolve()})"
    if not path.is_file():
        what = "is a folder, not a Jinja file" if path.is_dir() else "Jinja file not found"
        raise RecipeError(f"{FIELD}: {what}: {where}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError(f"{FIELD}: cannot read {where}: {e}") from None
    if not text.strip():
        raise RecipeError(f"{FIELD}: {where} is empty")
    import jinja2

    try:
        jinja2.Environment(extensions=["jinja2.ext.loopcontrols"]).parse(text)
    except jinja2.TemplateSyntaxError as e:
        raise RecipeError(f"{FIELD}: {value}:{e.lineno}: not valid Jinja: {e.message}") from None
    return text, path
