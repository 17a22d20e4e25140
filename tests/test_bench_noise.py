"""The benchmark notices a busy machine: interleaved rounds in fresh processes, other processes' CPU time and the
round spread measured around it; a CPU hog gets the result flagged (and --strict exits 1), a quiet machine not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from edgetune.cli import cli
from edgetune.runner import Probe, spread


@pytest.fixture(scope="module")
def matmuls(tmp_path_factory):
    """A float model of a few milliseconds' steady work: eight 256x256 MatMuls on [batch, seq, 256]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i in range(8):
        w = numpy_helper.from_array((rng.standard_normal((256, 256)) / 16).astype(np.float32), f"w{i}")
        inits.append(w)
        nodes.append(helper.make_node("MatMul", [prev, w.name], [f"h{i}"]))
        prev = f"h{i}"
    graph = helper.make_graph(
        nodes,
        "matmuls",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 256])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, ["batch", "seq", 256])],
        inits,
    )
    path = tmp_path_factory.mktemp("noise") / "matmuls.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _bench(model, *extra):
    args = ["bench", str(model), "--seq", "128", "--runs", "240", "--warmup", "10", "--rounds", "3", "--threads", "1"]
    return CliRunner().invoke(cli, [*args, *extra])


def _hogs(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def test_a_cpu_hog_is_noticed_and_strict_exits_1(matmuls):
    hogs = _hogs(os.cpu_count() or 2)
    try:
        time.sleep(0.5)
        r = _bench(matmuls)
        strict = _bench(matmuls, "--strict")
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    assert r.exit_code == 0, r.output
    assert "WARNING: the machine was busy" in r.output and "other processes used" in r.output, r.output
    assert strict.exit_code == 1 and "bench --strict: the machine was busy" in strict.output, strict.output


def test_a_quiet_machine_is_not_flagged(matmuls):
    """Needs the machine to itself (as CI has it). What it guards against: edgetune's own work (its workers, this
    test process) counted as other processes, or timer jitter taken for load."""
    before = Probe.start()
    time.sleep(3)
    other = before.finish({})["other_cores"]
    if other is not None and other > 0.3:
        pytest.skip(f"other processes use {other:.2f} cores right now: a quiet-machine check cannot run here")
    r = _bench(matmuls, "--strict")
    assert r.exit_code == 0, r.output
    assert "machine quiet" in r.output and "WARNING" not in r.output, r.output
    row = next(ln for ln in r.output.splitlines() if ln.startswith("matmuls.onnx"))
    assert row.split()[3].endswith("%")  # the spread column


def test_probe_measures_other_processes():
    probe = Probe.start()
    hogs = _hogs(1)
    try:
        time.sleep(1.5)
    finally:
        for h in hogs:
            h.kill()
            h.wait()  # a waited-for child counts as this process tree's own CPU time
    noise = probe.finish({"m seq 8": 0.5})
    assert noise["busy"] and any("spread 50%" in x for x in noise["reasons"])
    assert spread([1.0, 1.0, 1.0]) == 0.0 and spread([1.0, 1.5, 2.0]) == pytest.approx(0.666, abs=1e-3)


def test_rounds_go_into_the_record(tiny_recipe, tmp_path):
    from conftest import edit_recipe

    edit_recipe(tiny_recipe, benchmark={"rounds": 2, "runs": 6, "warmup": 1, "sequence_lengths": [8]})
    r = CliRunner().invoke(cli, ["bench", str(tiny_recipe), "--out", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "run" / "bench" / "bench.json").read_text())
    assert doc["settings"]["rounds"] == 2 and set(doc["noise"]) >= {"other_cores", "steal", "busy", "reasons"}
    for row in doc["results"]:
        assert len(row["round_p50_ms"]) == 2 and row["p50_ms"] == pytest.approx(float(np.median(row["round_p50_ms"])))
    order = [ln.split(": ")[-1] for ln in r.output.splitlines() if "bench: round" in ln]
    assert order[0] != order[len(order) // 2]  # the second round starts with another model
