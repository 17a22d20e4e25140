"""Training with several processes, proven on CPU: two gloo processes on 127.0.0.1 under torchrun, as
`edgetune build --processes 2`, `torchrun -m edgetune` and `accelerate launch -m edgetune` start them.
Each test would fail if data parallelism were faked (two independent trainings, or one rank doing the work)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
import yaml
from conftest import edit_recipe, make_chats, make_rows, tiny_classifier_recipe, write_recipe

HERE = Path(__file__).parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc-per-node", "2"]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}


def _classifier(folder: Path, model: Path, method: str) -> Path:
    """24 training rows, batch 8: 3 optimizer steps; no dropout anywhere, so 2 x 4 rows must equal 1 x 8."""
    folder.mkdir()
    path = tiny_classifier_recipe(folder, model, epochs=1, lora={"method": method, "r": 4, "alpha": 8, "dropout": 0.0})
    write_recipe(folder, make_rows(8, seed=1), make_rows(2, seed=2), yaml.safe_load(path.read_text()))
    return path


def _chat(folder: Path, model: Path) -> Path:
    """A causal LM, int4-aware: micro-batches weigh by their target tokens, which differ between ranks."""
    folder.mkdir()
    return write_recipe(
        folder,
        make_chats(24, seed=1),
        make_chats(4, seed=2),
        {
            "name": "tiny-chat",
            "task": "causal-lm",
            "model": {"source": str(model)},
            "dataset": {"response_format": "json"},
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
            "training": {"epochs": 1, "learning_rate": 0.01, "batch_size": 8, "max_length": 96, "int4_aware_epochs": 1},
            "quantize": {"precisions": ["int4"], "int4_block_size": 16},
        },
    )


@pytest.fixture(scope="module")
def equivalence(tmp_path_factory, tiny_bert, tiny_llama):
    """3 steps of each case, once with 2 ranks x batch 4, once with 1 process x batch 8."""
    root = tmp_path_factory.mktemp("ddp")
    dropout0 = tiny_bert.parent / "bert-no-dropout"
    if not dropout0.exists():
        cfg = json.loads((tiny_bert / "config.json").read_text())
        dropout0.mkdir()
        for f in tiny_bert.iterdir():
            (dropout0 / f.name).write_bytes(f.read_bytes())
        cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        (dropout0 / "config.json").write_text(json.dumps(cfg))
    recipes = [_classifier(root / m, dropout0, m) for m in ("lora", "dora", "adalora", "ia3")]
    recipes.append(_chat(root / "int4-aware", tiny_llama))
    out = root / "out"
    out.mkdir()
    args = [str(HERE / "dist_worker.py"), str(out), *map(str, recipes)]
    for cmd in (TORCHRUN + args, [sys.executable, *args]):
        done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    return out


CASES = ["lora", "dora", "adalora", "ia3", "int4-aware"]


@pytest.mark.parametrize("case", CASES)
def test_two_ranks_train_as_one_process_with_their_batches(equivalence, case):
    r0 = torch.load(equivalence / f"{case}-world2-rank0.pt")
    r1 = torch.load(equivalence / f"{case}-world2-rank1.pt")
    one = torch.load(equivalence / f"{case}-world1-rank0.pt")
    assert len(r0) == len(r1) == len(one) == 3
    assert {s["world"] for s in r0 + r1} == {2} and {s["rank"] for s in r1} == {1}
    for a, b in zip(r0, r1):
        assert a["shard"] != b["shard"]  # the ranks see different rows
        assert a["loss"] == b["loss"]  # the global batch's loss, reduced over ranks
        for name, w in a["weights"].items():  # after every step, the same weights on both ranks
            assert torch.equal(w, b["weights"][name]), name
    # 2 ranks x 4 rows per step = 1 process x 8 rows
    for name, w in one[-1]["weights"].items():
        diff = (r0[-1]["weights"][name] - w).abs().max().item()
        assert diff <= 1e-5, (name, diff)
    moved = max((one[-1]["weights"][n] - one[0]["weights"][n]).abs().max().item() for n in one[0]["weights"])
    assert moved > 1e-3  # training changed the weights: equal because equal, not because frozen
    assert [round(s["loss"], 5) for s in r0] == [round(s["loss"], 5) for s in one]


def test_micro_batches_and_checkpointing_compute_the_same_steps(tiny_llama, tmp_path):
    """One process, the global batch in 3 micro-batches of unequal target-token counts, activations recomputed
    in the backward pass: the same weights as one batch at once."""
    import dist_worker

    plain = _chat(tmp_path / "plain", tiny_llama)
    split = _chat(tmp_path / "split", tiny_llama)
    edit_recipe(split, training={"gradient_accumulation": 3, "gradient_checkpointing": True})
    dist_worker.main(tmp_path, [str(plain), str(split)])
    a, b = (torch.load(tmp_path / f"{n}-world1-rank0.pt") for n in ("plain", "split"))
    for name, w in a[-1]["weights"].items():
        assert (b[-1]["weights"][name] - w).abs().max().item() <= 1e-5, name
    assert [round(s["loss"], 5) for s in a] == [round(s["loss"], 5) for s in b]


def test_fsdp_is_refused_where_accelerate_cannot_shard(tiny_bert, tmp_path):
    """On CPU accelerate runs DDP even when given an FSDP plugin: a recipe asking for fsdp there stops before stage
    one, in one line naming the field, rather than training a whole model per process under FSDP's name."""
    recipe = tiny_classifier_recipe(tmp_path, tiny_bert, training={"strategy": "fsdp", "device": "cpu"})
    done = subprocess.run(
        [sys.executable, "-m", "edgetune", "build", str(recipe), "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "training.strategy: fsdp needs CUDA GPUs" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run" / "finetune").exists()


def test_only_rank_0_writes_and_the_build_passes_its_gates(tiny_bert, tmp_path):
    recipe = tiny_classifier_recipe(tmp_path, tiny_bert, epochs=2)
    run = tmp_path / "run"
    env = {**_env(), "WATCH": str(tmp_path), "WRITES_LOG": str(tmp_path.parent / f"{tmp_path.name}-writes")}
    cmd = TORCHRUN + [str(HERE / "dist_build.py"), "build", str(recipe), "--out", str(run), "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    writes = {r: json.loads(Path(f"{env['WRITES_LOG']}.{r}").read_text()) for r in (0, 1)}
    assert writes[1] == [], writes[1][:5]
    assert any("finetune.ckpt" in w for w in writes[0]) and any("adapter" in w for w in writes[0])
    manifest = json.loads((run / "manifest.json").read_text())["stages"]
    assert {"finetune", "merge", "export", "quantize", "verify", "report"} <= manifest.keys()
    assert manifest["verify"]["record"]["passed"] is True
    assert done.stderr.count("finetune: running") == 1  # one log: rank 0's
    assert "2 processes (DDP)" in done.stderr


def _rank_pid(launcher: subprocess.Popen, rank: int) -> int | None:
    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank) and "edgetune" in " ".join(child.cmdline()):
                return child.pid
        except psutil.Error:
            continue
    return None


def test_kill_9_of_one_rank_then_rerun_matches_an_uninterrupted_run(tiny_bert, tmp_path):
    recipe = tiny_classifier_recipe(tmp_path, tiny_bert, epochs=4)  # dropout on: every rank's RNG matters
    write_recipe(tmp_path, make_rows(40, seed=1), make_rows(4, seed=2), yaml.safe_load(recipe.read_text()))
    edit_recipe(recipe, training={"batch_size": 4, "checkpoint_minutes": 0})
    edgetune = [sys.executable, "-m", "edgetune", "finetune", str(recipe), "--processes", "2", "--out"]
    run = tmp_path / "run"
    proc = subprocess.Popen(
        edgetune + [str(run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()
    )
    deadline = time.time() + 300
    while not any(run.glob("finetune.ckpt/*/state.pt")):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() < deadline
        time.sleep(0.02)
    victim = _rank_pid(proc, 1)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0, err[-2000:]
    assert not (run / "finetune").exists()

    again = subprocess.run(edgetune + [str(run)], capture_output=True, text=True, env=_env(), timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "finetune: resuming after epoch" in again.stderr
    clean = subprocess.run(
        edgetune + [str(tmp_path / "clean")], capture_output=True, text=True, env=_env(), timeout=600
    )
    assert clean.returncode == 0, clean.stderr[-3000:]
    got = json.loads((run / "manifest.json").read_text())["stages"]["finetune"]["record"]["epochs"]
    want = json.loads((tmp_path / "clean" / "manifest.json").read_text())["stages"]["finetune"]["record"]["epochs"]
    assert [round(e["loss"], 5) for e in got] == [round(e["loss"], 5) for e in want]
    assert [e["eval_accuracy"] for e in got] == [e["eval_accuracy"] for e in want]
