"""Every path in a recipe is checked when it is loaded, so `recipe validate`, `doctor` and `build` refuse a bad one
before stage one, in one line naming the field and the path it resolves to; unknown keys get a "did you mean";
hub errors say when the hub cannot be reached and are never cut mid-word."""

from __future__ import annotations

import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import edit_recipe
from test_recipe import assert_one_line_error, missing_model_package

from edgetune.cli import cli
from edgetune.core.errors import RecipeError
from edgetune.core.recipe import load_recipe, parse_recipe

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "recipes").glob("*.yaml"))
PATH_FIELDS = ("model.source", "dataset.train", "dataset.eval", "package.android")
COMMANDS = {"validate": ["recipe", "validate"], "doctor": ["doctor"], "build": ["build"]}


def run(command: str, recipe: Path, tmp_path: Path):
    """`edgetune COMMAND RECIPE` (build into tmp_path/run, which must never be created by a refused recipe)."""
    extra = ["--out", str(tmp_path / "run")] if command == "build" else []
    return CliRunner().invoke(cli, [*COMMANDS[command], str(recipe), *extra])


def android_app(folder: Path) -> Path:
    """A stand-in for the Android demo: just the file that marks it."""
    (folder / "app").mkdir(parents=True)
    (folder / "app" / "build.gradle.kts").write_text("// stand-in\n")
    return folder


# -- shipped recipes copied elsewhere ---------------------------------------------------------------------------
@pytest.mark.parametrize("with_data", [False, True], ids=["recipe-alone", "recipe-and-data"])
@pytest.mark.parametrize("shipped", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_a_copied_shipped_recipe_validates_only_if_it_can_build(tmp_path, shipped, with_data):
    """A shipped recipe copied to another folder (with or without its data) either passes `recipe validate` with
    every path leading where the build needs it, or is refused in one line naming the path field."""
    copy = tmp_path / "elsewhere" / shipped.name
    copy.parent.mkdir()
    shutil.copy(shipped, copy)
    if with_data:
        shutil.copytree(REPO / "recipes" / "data", copy.parent / "data")
    r = CliRunner().invoke(cli, ["recipe", "validate", str(copy)])
    if r.exit_code == 0:
        recipe = load_recipe(copy)
        for f in filter(None, [recipe.dataset.train, recipe.dataset.eval]):
            assert recipe.path(f).is_file(), f
        android = recipe.package.android
        assert android is None or (recipe.path(android) / "app" / "build.gradle.kts").is_file(), android
        return
    missing = missing_model_package(shipped)
    if missing is not None:  # the model's pip package is not installed here: that is what the line says
        assert_one_line_error(r, 2, f"{copy}: model.source: pip package '{missing}' is not installed", "pip install")
        return
    assert_one_line_error(r, 2, str(copy), "(resolved to ")
    line = r.output.strip()
    assert any(f"{copy}: {field}: " in line for field in PATH_FIELDS), line


def test_the_copied_default_recipe_is_refused_at_package_android(tmp_path):
    """The case of the report: the default recipe and its data copied elsewhere used to validate, train for an
    hour and stop at the package stage."""
    shipped = REPO / "recipes" / "intent-minilm.yaml"
    copy = tmp_path / "elsewhere" / shipped.name
    copy.parent.mkdir()
    shutil.copy(shipped, copy)
    shutil.copytree(REPO / "recipes" / "data", copy.parent / "data")
    r = CliRunner().invoke(cli, ["recipe", "validate", str(copy)])
    assert_one_line_error(
        r,
        2,
        f"{copy}: package.android: ../android_demo (resolved to "
        f"{(tmp_path / 'android_demo').resolve()}) is not the edgetune Android demo "
        f"(no app/build.gradle.kts)",
    )


# -- each path field, through validate, doctor and build ---------------------------------------------------------
@pytest.mark.parametrize("command", COMMANDS)
def test_android_folder_that_does_not_exist(tiny_recipe, tmp_path, command):
    edit_recipe(tiny_recipe, package={"android": "../android_demo"})
    where = (tmp_path.parent / "android_demo").resolve()
    assert_one_line_error(
        run(command, tiny_recipe, tmp_path),
        2,
        f"{tiny_recipe}: package.android: ../android_demo (resolved to {where}) is not the "
        f"edgetune Android demo (no app/build.gradle.kts)",
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", COMMANDS)
def test_android_folder_that_is_not_the_demo(tiny_recipe, tmp_path, command):
    """An app folder without the demo's app/build.gradle.kts is refused; with it, the recipe passes."""
    (tmp_path / "some-app" / "app").mkdir(parents=True)
    edit_recipe(tiny_recipe, package={"android": "some-app"})
    assert_one_line_error(
        run(command, tiny_recipe, tmp_path),
        2,
        f"{tiny_recipe}: package.android: some-app "
        f"(resolved to {(tmp_path / 'some-app').resolve()}) is not the edgetune Android demo",
    )
    assert not (tmp_path / "run").exists()
    android_app(tmp_path / "app-copy")
    edit_recipe(tiny_recipe, package={"android": "app-copy"})
    r = run("validate", tiny_recipe, tmp_path)
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("field", ["train", "eval"])
def test_missing_dataset_file(tiny_recipe, tmp_path, command, field):
    edit_recipe(tiny_recipe, dataset={field: "../data/nope.jsonl"})
    where = (tmp_path.parent / "data" / "nope.jsonl").resolve()
    assert_one_line_error(
        run(command, tiny_recipe, tmp_path),
        2,
        f"{tiny_recipe}: dataset.{field}: dataset file not found: ../data/nope.jsonl (resolved to {where})",
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", COMMANDS)
def test_dataset_file_that_is_a_folder(tiny_recipe, tmp_path, command):
    edit_recipe(tiny_recipe, dataset={"train": "data"})
    assert_one_line_error(
        run(command, tiny_recipe, tmp_path),
        2,
        f"{tiny_recipe}: dataset.train: is a folder, "
        f"not a dataset file: data (resolved to {(tmp_path / 'data').resolve()})",
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_missing_local_model_folder(tiny_recipe, tmp_path, command):
    edit_recipe(tiny_recipe, model={"source": "../models/mine"})
    where = (tmp_path.parent / "models" / "mine").resolve()
    assert_one_line_error(
        run(command, tiny_recipe, tmp_path),
        2,
        f"{tiny_recipe}: model.source: path '../models/mine' does not exist (resolved to {where})",
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", COMMANDS)
def test_model_package_not_installed(tiny_recipe, tmp_path, command):
    edit_recipe(tiny_recipe, model={"source": "package:no_such_pkg_xyz/model"})
    assert_one_line_error(
        run(command, tiny_recipe, tmp_path),
        2,
        f"{tiny_recipe}: model.source: pip package 'no_such_pkg_xyz' is not installed",
    )


def test_doctor_checks_the_paths_of_a_recipe_however_it_was_read(tiny_recipe, tmp_path):
    """doctor() itself refuses a recipe with a bad path (one from a run directory is not read by load_recipe)."""
    from edgetune.doctor import doctor

    data = yaml.safe_load(tiny_recipe.read_text())
    data["package"] = {"android": "no-app-here"}
    recipe = parse_recipe(data, "recipe.json", tmp_path)
    with pytest.raises(RecipeError, match=r"^package\.android: no-app-here \(resolved to .*no-app-here\) is not"):
        doctor(recipe, tmp_path / "run")


# -- unknown keys ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "edit, expected",
    [
        ({"training": {"learning_rat": 0.1}}, "training.learning_rat: unknown key; did you mean 'learning_rate'?"),
        ({"quantise": {"mode": "dynamic"}}, "quantise: unknown key; did you mean 'quantize'?"),
        ({"package": {"andriod": None}}, "package.andriod: unknown key; did you mean 'android'?"),
        ({"dataset": {"text_colum": "text"}}, "dataset.text_colum: unknown key; did you mean 'text_column'?"),
    ],
)
def test_unknown_key_suggests_the_closest_key_of_its_section(tiny_recipe, tmp_path, edit, expected):
    edit_recipe(tiny_recipe, **edit)
    r = run("validate", tiny_recipe, tmp_path)
    assert_one_line_error(r, 2)
    assert r.output.strip() == f"Error: {tiny_recipe}: {expected}"


def test_unknown_key_far_from_every_key_gets_no_suggestion(tiny_recipe, tmp_path):
    """Only a close key is suggested: a key like no other gets the plain message, a near one the suggestion."""
    original = tiny_recipe.read_text()
    edit_recipe(tiny_recipe, training={"zzqx": 1})
    r = run("validate", tiny_recipe, tmp_path)
    assert_one_line_error(r, 2)
    assert r.output.strip() == f"Error: {tiny_recipe}: training.zzqx: unknown key"
    tiny_recipe.write_text(original)
    edit_recipe(tiny_recipe, training={"epoch": 1})
    r = run("validate", tiny_recipe, tmp_path)
    assert r.output.strip() == f"Error: {tiny_recipe}: training.epoch: unknown key; did you mean 'epochs'?"


# -- the hub: unreachable, or no such model ----------------------------------------------------------------------
@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """Start a loopback HTTP server answering every request with a given status, and point huggingface_hub at
    it with an empty cache: fake_hub(502) returns its URL (no traffic leaves the machine)."""
    from huggingface_hub import constants

    servers = []

    def start(status: int, headers: dict[str, str] | None = None) -> str:
        class Handler(BaseHTTPRequestHandler):
            def answer(self) -> None:
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_HEAD = do_GET = answer

            def log_message(self, *args) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        url = f"http://127.0.0.1:{server.server_address[1]}"
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        monkeypatch.setattr(constants, "ENDPOINT", url)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
        return url

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def test_hub_that_answers_the_probe_but_not_the_download_cannot_be_reached(tiny_recipe, tmp_path, fake_hub):
    """A proxy or hub that answers 502: the hub cannot be reached; the model is not called unknown."""
    url = fake_hub(502)
    edit_recipe(tiny_recipe, model={"source": "someone/not-cached-model"})
    r = run("validate", tiny_recipe, tmp_path)
    assert_one_line_error(
        r,
        2,
        "model.source: 'someone/not-cached-model' is not in the local Hugging Face cache "
        f"and the hub ({url}) cannot be reached (HTTP 502 Bad Gateway); download it",
        "package:",
    )
    assert "unknown model" not in r.output


def test_hub_without_that_model(tiny_recipe, tmp_path, fake_hub):
    """The hub answers that there is no such model (401 RepoNotFound, as huggingface.co does): one clear line."""
    fake_hub(401, {"X-Error-Code": "RepoNotFound"})
    edit_recipe(tiny_recipe, model={"source": "someone/no-such-model"})
    r = run("validate", tiny_recipe, tmp_path)
    assert_one_line_error(
        r,
        2,
        "model.source: unknown model 'someone/no-such-model'",
        "the hub has no such model, or it is private or gated",
    )
    assert "cannot be reached" not in r.output


def test_a_long_hub_error_is_shortened_at_a_word_boundary(tiny_recipe, tmp_path, monkeypatch):
    """The hub's own text is shortened to about 300 characters, at a word boundary with '...', never mid-word."""
    import huggingface_hub

    from edgetune.core import sources

    words = " ".join(["abcdefghij"] * 60)  # 659 characters: a cut at any fixed length falls inside some word

    def fake_download(spec, local_files_only=False, **kwargs):
        raise FileNotFoundError("not cached") if local_files_only else RuntimeError(f"the hub said {words}")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    monkeypatch.setattr(sources, "_unreachable", lambda endpoint: None)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    edit_recipe(tiny_recipe, model={"source": "someone/model"})
    r = run("validate", tiny_recipe, tmp_path)
    assert_one_line_error(r, 2, "model.source: unknown model 'someone/model'", "(RuntimeError: the hub said abcdefghij")
    reason = r.output.strip().split("(RuntimeError: ", 1)[1]
    assert reason.endswith("abcdefghij...)"), reason
    assert 250 <= len("RuntimeError: " + reason) - 1 <= 300
