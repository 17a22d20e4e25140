"""The Android package contract: what `edgetune package` writes, checked the way the app uses it, and the
`edgetune bench --adb` driver against a stand-in adb."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import tiny_classifier_recipe

from edgetune.cli import cli
from edgetune.packaging.app import assets_dir
from edgetune.packaging.check import check_package, golden_failures, run_classifier


def _android(root: Path) -> Path:
    (root / "app").mkdir(parents=True)
    (root / "app" / "build.gradle.kts").write_text("// stand-in for the demo app\n")
    return root


@pytest.fixture(scope="module")
def packaged(tmp_path_factory, tiny_bert):
    """A tiny BERT run built with package.android set: (recipe, run dir, android dir)."""
    tmp = tmp_path_factory.mktemp("pkg")
    android = _android(tmp / "android")
    recipe = tiny_classifier_recipe(
        tmp,
        tiny_bert,
        name="tiny-pkg",
        package={"android": "android", "golden": 8},
        benchmark={"threads": 1, "sequence_lengths": [8], "warmup": 1, "runs": 3},
    )
    run = tmp / "run"
    res = CliRunner().invoke(cli, ["build", str(recipe), "--out", str(run), "--no-progress"])
    assert res.exit_code == 0, res.output
    return recipe, run, android


def test_build_installs_a_complete_package(packaged):
    _, run, android = packaged
    where = assets_dir(android, "classification")
    manifest = json.loads((where / "manifest.json").read_text())
    assert manifest["task"] == "classification" and manifest["schema_version"] == 1
    assert manifest["inputs"] == [{"name": "text", "dtype": "string", "shape": [1]}]
    assert manifest["outputs"][0]["name"] == "logits" and manifest["outputs"][0]["shape"] == [1, 3]
    assert manifest["labels"] == ["door", "lights", "music"]
    assert manifest["tokenizer"]["library"] == "onnxruntime-extensions" and manifest["tokenizer"]["max_length"] == 16
    assert set(manifest["versions"]) >= {"edgetune", "onnxruntime", "onnxruntime_extensions"}
    quantize = json.loads((run / "manifest.json").read_text())["stages"]["quantize"]["record"]["models"][-1]
    assert manifest["source"]["quantized_sha256"] == quantize["sha256"]
    assert (where / "model.onnx").is_file() and (where / manifest["ort_model"]["file"]).is_file()
    assert check_package(where, quantize["sha256"]) == []


def test_packaged_graph_reproduces_golden_from_strings(packaged):
    """The graph takes the raw string (tokenizer inside) and gives PyTorch's logits within the tolerances."""
    _, _, android = packaged
    where = assets_dir(android, "classification")
    manifest = json.loads((where / "manifest.json").read_text())
    golden = json.loads((where / "golden.json").read_text())
    assert len(golden["cases"]) == manifest["golden"]["count"] == 8
    assert any(len(c["text"]) > 500 for c in golden["cases"])  # over max_length: truncated inside the graph
    for f in ("model.onnx", manifest["ort_model"]["file"]):
        assert golden_failures(where / f, golden, manifest["labels"]) == []
        got = run_classifier(where / f, [c["text"] for c in golden["cases"]])
        ref = np.array([c["pytorch_logits"] for c in golden["cases"]])
        assert np.abs(got - ref).max() <= golden["max_abs_diff"]


def test_golden_check_catches_wrong_outputs(packaged, tmp_path):
    _, _, android = packaged
    copy = tmp_path / "pkg"
    shutil.copytree(assets_dir(android, "classification"), copy)
    golden = json.loads((copy / "golden.json").read_text())
    golden["cases"][0]["pytorch_logits"] = [x + 1.0 for x in golden["cases"][0]["pytorch_logits"]]
    (copy / "golden.json").write_text(json.dumps(golden))
    problems = check_package(copy)
    assert len(problems) == 2 and all("golden" in p for p in problems)  # model.onnx and model.ort


def test_stale_and_corrupt_packages_are_detected(packaged, tmp_path):
    recipe, run, android = packaged
    r = CliRunner().invoke(cli, ["package", str(run), "--android", str(android), "--check"])
    assert r.exit_code == 0, r.output
    copy = _android(tmp_path / "android")
    shutil.copytree(assets_dir(android, "classification"), assets_dir(copy, "classification"))
    manifest_path = assets_dir(copy, "classification") / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["source"]["quantized_sha256"] = "0" * 64  # packaged from some other model
    manifest_path.write_text(json.dumps(manifest))
    r = CliRunner().invoke(cli, ["package", str(run), "--android", str(copy), "--check"])
    assert r.exit_code == 1 and "stale package" in r.output and "Traceback" not in r.output
    with open(assets_dir(copy, "classification") / "model.onnx", "r+b") as f:
        f.seek(1000)
        f.write(b"\0" * 16)
    r = CliRunner().invoke(cli, ["package", str(run), "--android", str(copy), "--check"])
    assert r.exit_code == 1 and "sha256 differs" in r.output


def test_package_command_reinstalls_from_the_run_dir(packaged, tmp_path):
    """`edgetune package RUN_DIR --android DIR` works from the run dir alone and fills an empty app."""
    _, run, _ = packaged
    other = _android(tmp_path / "other")
    r = CliRunner().invoke(cli, ["package", str(run), "--android", str(other)])
    assert r.exit_code == 0, r.output
    assert "package: up to date, skipped" in r.output or "package: running" in r.output
    assert check_package(assets_dir(other, "classification")) == []


def test_package_into_a_folder_that_is_not_the_app(packaged, tmp_path):
    _, run, _ = packaged
    r = CliRunner().invoke(cli, ["package", str(run), "--android", str(tmp_path)])
    assert r.exit_code == 2 and "not the edgetune Android demo" in r.output


# -- edgetune bench --adb, against a stand-in adb ------------------------------------------------------------
FAKE_ADB = r'''#!{python}
"""A stand-in for adb: a device whose state lives in files under $FAKE_ADB_HOME."""
import json, os, re, sys
from pathlib import Path
home = Path(os.environ["FAKE_ADB_HOME"])
args = sys.argv[1:]
if args[:1] == ["-s"]:
    args = args[2:]
log = home / "log.txt"
log.write_text(log.read_text() + " ".join(args) + "\n" if log.exists() else " ".join(args) + "\n")
devices = (home / "devices").read_text() if (home / "devices").exists() else ""
if args == ["devices"]:
    print("List of devices attached\n" + devices)
elif args[0] == "install":
    (home / "installed").write_text("yes")
elif args[0] == "push":
    pass
elif args[0] == "shell":
    cmd = args[1]
    if cmd.startswith("pm path"):
        print("package:/data/app/base.apk" if (home / "installed").exists() else "")
    elif cmd.startswith("am force-stop"):
        pass
    elif cmd.startswith("am start"):
        run_id = re.search(r"--es run_id (\S+)", cmd).group(1)
        result = json.loads((home / "result.json").read_text())
        starts = home / "starts"
        n = int(starts.read_text()) if starts.exists() else 0
        starts.write_text(str(n + 1))
        if (home / "round_p50s").exists():  # this round's p50; the other figures move with it
            p50s = json.loads((home / "round_p50s").read_text())
            shift = p50s[n % len(p50s)] - result["latency_ms"]["p50"]
            result["latency_ms"] = {k: v + shift for k, v in result["latency_ms"].items()}
        result["run_id"] = run_id
        result["runs"] = int(re.search(r"--ei runs (\d+)", cmd).group(1))
        (home / "device_result.json").write_text(json.dumps(result))
    elif cmd in ("cat /proc/loadavg", "cat /proc/stat"):
        # the file as it is before the benchmark, and its *_after version once an activity has started
        name = cmd.split("/")[-1]
        p = home / (name + "_after") if (home / "starts").exists() else home / name
        p = p if p.exists() else home / name
        print(p.read_text() if p.exists() else "", end="")
    elif "cat files/benchmark/result.json" in cmd:
        p = home / "device_result.json"
        print(p.read_text() if p.exists() else "")
    elif "pwd" in cmd:
        print("/data/user/0/ai.edgetune.demo")
'''

RESULT = {
    "schema_version": 1,
    "status": "ok",
    "error": None,
    "model": "model.onnx",
    "model_sha256": "ab",
    "model_size_bytes": 23000000,
    "threads": 2,
    "xnnpack": False,
    "warmup": 10,
    "runs": 100,
    "text": "hi",
    "load_ms": 310.0,
    "first_inference_ms": 25.0,
    "latency_ms": {"p50": 7.5, "p90": 8.1, "p99": 9.9, "mean": 7.7, "trimmed_mean": 7.6, "min": 7.0, "max": 12.0},
    "samples_ms": [7.5],
    "peak_rss_mb": 88.0,
    "device": {
        "manufacturer": "Google",
        "model": "Pixel 8",
        "android_version": "15",
        "sdk_int": 35,
        "abi": "arm64-v8a",
    },
    "onnxruntime_version": "1.22.0",
}


@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    bin_dir, home = tmp_path / "bin", tmp_path / "device"
    bin_dir.mkdir()
    home.mkdir()
    exe = bin_dir / "adb"
    exe.write_text(FAKE_ADB.replace("{python}", sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_HOME", str(home))
    (home / "result.json").write_text(json.dumps(RESULT))
    _device_load(home, 0.42, 0.61)
    return home


def _proc_stat(user: int, idle: int, cores: int = 8, steal: int | None = 0) -> str:
    """A /proc/stat of `cores` online cores with these total ticks; no steal column where steal is None."""
    tail = "" if steal is None else f" {steal} 0 0"
    lines = [f"cpu  {user} 0 {user // 2} {idle} 40 0 10{tail}"]
    lines += [f"cpu{i} {user // cores} 0 {user // cores // 2} {idle // cores} 5 0 1{tail}" for i in range(cores)]
    return "\n".join(lines + ["intr 123 0 0", "ctxt 456", "procs_running 2"]) + "\n"


def _device_load(home: Path, load_before: float, load_after: float, steal_after: int = 0) -> None:
    """The stand-in device's /proc/loadavg and /proc/stat before the benchmark and after it: 8 cores, 25% busy
    over the run (the app included)."""
    (home / "loadavg").write_text(f"{load_before:.2f} 0.40 0.38 1/931 12345\n")
    (home / "loadavg_after").write_text(f"{load_after:.2f} 0.45 0.39 3/935 12399\n")
    (home / "stat").write_text(_proc_stat(10000, 80000))
    (home / "stat_after").write_text(_proc_stat(10000 + 200, 80000 + 900 - steal_after, steal=steal_after))


def _bench_adb(run: Path, *extra: str):
    return CliRunner().invoke(cli, ["bench", str(run), "--adb", "--runs", "100", *extra])


def test_bench_adb_without_adb_on_path(packaged, monkeypatch, tmp_path):
    _, run, _ = packaged
    monkeypatch.setenv("PATH", str(tmp_path))
    r = _bench_adb(run)
    assert r.exit_code == 2 and "adb not found on PATH" in r.output and "Traceback" not in r.output


def test_bench_adb_without_a_device(packaged, fake_adb):
    _, run, _ = packaged
    r = _bench_adb(run)
    assert r.exit_code == 2 and "no Android device attached" in r.output
    (fake_adb / "devices").write_text("emulator-5554\tdevice\n")
    r = _bench_adb(run, "--serial", "R5CT")
    assert r.exit_code == 2 and "--serial R5CT: no such device" in r.output


def test_bench_adb_without_the_app(packaged, fake_adb, tmp_path):
    _, run, _ = packaged
    (fake_adb / "devices").write_text("emulator-5554\tdevice\n")
    r = _bench_adb(run, "--apk", str(tmp_path / "missing.apk"))
    assert r.exit_code == 2 and "demo app (ai.edgetune.demo) is not installed" in r.output


def test_bench_adb_runs_the_app_and_prints_its_result(packaged, fake_adb, tmp_path):
    _, run, _ = packaged
    (fake_adb / "devices").write_text("emulator-5554\tdevice\n")
    apk = tmp_path / "app-debug.apk"
    apk.write_bytes(b"PK")
    r = _bench_adb(run, "--apk", str(apk), "--threads", "4", "--warmup", "5")
    assert r.exit_code == 0, r.output
    log = (fake_adb / "log.txt").read_text()
    assert f"install -r {apk}" in log and "push" in log and "model.onnx" in log
    assert "--ei threads 4" in log and "--ei warmup 5" in log and "--ei runs 34" in log  # 100 runs in 3 rounds
    assert "Google Pixel 8, Android 15" in r.output and "android_int8" in r.output and "7.50" in r.output
    (fake_adb / "result.json").write_text(json.dumps({**RESULT, "status": "error", "error": "bad model"}))
    r = _bench_adb(run)
    assert r.exit_code == 1 and "on-device benchmark failed: bad model" in r.output


def _shell(log: str) -> list[str]:
    """The device commands of the benchmark itself, in order: force-stops, activity starts, load and CPU reads."""
    keep = ("shell am ", "shell cat /proc/")
    return [" ".join(ln.split()[:3]) for ln in log.splitlines() if ln.startswith(keep)]


def test_bench_adb_runs_rounds_in_fresh_processes(packaged, fake_adb):
    """Three rounds, each a fresh app process (force-stop, then start); the p50 is the median of the round p50s,
    with their spread; the device's load and CPU read before and after."""
    _, run, _ = packaged
    (fake_adb / "devices").write_text("emulator-5554\tdevice\n")
    (fake_adb / "installed").write_text("yes")
    (fake_adb / "round_p50s").write_text(json.dumps([7.0, 7.8, 7.2]))
    r = _bench_adb(run, "--rounds", "3")
    assert r.exit_code == 0, r.output
    reads = ["shell cat /proc/loadavg", "shell cat /proc/stat"]
    rounds = ["shell am force-stop", "shell am start"] * 3
    assert _shell((fake_adb / "log.txt").read_text()) == reads + rounds + reads
    assert (fake_adb / "log.txt").read_text().count("--ei runs 34") == 3
    row = next(ln for ln in r.output.splitlines() if ln.startswith("android_int8"))
    assert row.split()[2:4] == ["7.20", "11%"]  # median p50; spread (7.8 - 7.0) / 7.2
    assert "median of 3 rounds' p50s" in r.output
    assert "device quiet: round spread <= 11%, load 0.42 -> 0.61 on 8 cores, CPU 25% busy" in r.output
    assert "WARNING" not in r.output

    from edgetune.device.android import bench_on_device

    (fake_adb / "starts").unlink()  # the device as it was before the benchmark
    b = bench_on_device(run / "package", None, 2, 10, 100, 3, None)
    assert b.results[0]["round_p50_ms"] == [7.0, 7.8, 7.2] and b.results[0]["p50_ms"] == 7.2
    assert b.results[0]["spread"] == pytest.approx(0.8 / 7.2)
    assert b.settings["runs"] == 100 and b.settings["rounds"] == 3
    noise = b.noise
    assert noise["other_cores"] is None and noise["load_before"] == 0.42 and noise["load_after"] == 0.61
    assert noise["cores"] == 8 and noise["cpu_busy"] == 0.25 and noise["steal"] == 0.0 and not noise["busy"]


@pytest.mark.parametrize(
    "busy",
    [
        ("load", "load average 9.50 on 8 cores"),
        ("spread", "round-to-round spread 27% (android_int8 seq 16)"),
        ("steal", "the hypervisor stole 10% of the CPU"),
    ],
)
def test_bench_adb_on_a_busy_device_warns_and_strict_exits_1(packaged, fake_adb, busy):
    _, run, _ = packaged
    (fake_adb / "devices").write_text("emulator-5554\tdevice\n")
    (fake_adb / "installed").write_text("yes")
    what, reason = busy
    if what == "load":
        _device_load(fake_adb, 9.5, 10.1)
    elif what == "spread":
        (fake_adb / "round_p50s").write_text(json.dumps([7.0, 9.0, 7.5]))
    else:
        _device_load(fake_adb, 0.42, 0.61, steal_after=120)
    r = _bench_adb(run)
    assert r.exit_code == 0, r.output
    warnings = [ln for ln in r.output.splitlines() if "WARNING" in ln]
    assert len(warnings) == 1 and warnings[0].startswith("WARNING: the machine was busy during this benchmark (")
    assert reason in warnings[0] and "device quiet" not in r.output
    (fake_adb / "starts").unlink()  # the device as it was before the benchmark
    r = _bench_adb(run, "--strict")
    assert r.exit_code == 1 and f"bench --strict: the machine was busy ({reason})" in r.output, r.output


def test_bench_adb_on_a_quiet_device_passes_strict(packaged, fake_adb):
    """The app's own threads in the load average after the run do not make the device busy; no steal column
    (a kernel without one) is no steal figure."""
    _, run, _ = packaged
    (fake_adb / "devices").write_text("emulator-5554\tdevice\n")
    (fake_adb / "installed").write_text("yes")
    (fake_adb / "loadavg_after").write_text("5.80 1.1 0.5 3/935 12399\n")  # 2 app threads: 3.8 from others < 4
    (fake_adb / "stat").write_text(_proc_stat(10000, 80000, steal=None))
    (fake_adb / "stat_after").write_text(_proc_stat(10200, 80900, steal=None))
    (fake_adb / "round_p50s").write_text(json.dumps([7.4, 7.5, 7.6]))
    r = _bench_adb(run, "--strict", "--threads", "2")
    assert r.exit_code == 0, r.output
    assert "device quiet: round spread <= 3%, load 0.42 -> 5.8 on 8 cores, CPU 25% busy" in r.output
    assert "WARNING" not in r.output


def test_causal_lm_package_holds_the_genai_folder_and_chat_format(tiny_chat_recipe, tmp_path):
    from conftest import edit_recipe

    android = _android(tmp_path / "android")
    edit_recipe(tiny_chat_recipe, package={"android": str(android), "golden": 3})
    r = CliRunner().invoke(cli, ["build", str(tiny_chat_recipe), "--out", str(tmp_path / "run"), "--no-progress"])
    assert r.exit_code == 0, r.output
    where = assets_dir(android, "causal-lm")
    manifest = json.loads((where / "manifest.json").read_text())
    assert manifest["task"] == "causal-lm" and manifest["model"]["precision"] == "int4"
    assert {"genai_config.json", "model.onnx", "tokenizer.json"} <= set(manifest["model"]["files"])
    fmt = manifest["chat"]["prompt_format"]
    assert fmt.index("{system}") < fmt.index("{user}") and fmt.endswith("<|im_start|>assistant\n")
    assert manifest["chat"]["system_prompt"] == "Reply with JSON."
    golden = json.loads((where / "golden.json").read_text())
    assert len(golden["cases"]) == 3 and all(isinstance(c["pytorch_text"], str) for c in golden["cases"])
    assert check_package(where) == []
