"""Benchmark a packaged model on an Android phone over adb, through the demo app's BenchmarkActivity.

Flow: find adb and one device, check the app is installed (or install the debug APK), push the package into
the app's private storage (`adb push` to /data/local/tmp, then `run-as` copies it, since the app is
debuggable); then, in each round, stop the app (so that the round runs in a fresh process), start the headless
activity and poll for its JSON result. The rounds make one Benchmark record with the host's statistics (the median
of the round p50s, their spread) and a noise record from the device's load average and /proc/stat.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import statistics
import subprocess
import time
import uuid
from pathlib import Path

from edgetune.core.artifacts import Benchmark
from edgetune.core.errors import EdgetuneError, RecipeError
from edgetune.packaging.manifest import PackageManifest, read_manifest
from edgetune.runner import assess, merge_rounds, row_spreads

APP_ID = "ai.edgetune.demo"
ACTIVITY = f"{APP_ID}/.BenchmarkActivity"
REMOTE_TMP = "/data/local/tmp/edgetune"
BENCH_DIR = "files/bench"  # inside the app's data dir; the app's own copy of its assets lives in files/edgetune
RESULT = "files/benchmark/result.json"


class Adb:
    """One device, addressed by serial, through the adb on PATH."""

    def __init__(self, serial: str | None = None, timeout: float = 120) -> None:
        exe = shutil.which("adb")
        if exe is None:
            raise RecipeError("adb not found on PATH: install Android SDK platform-tools and add them to PATH")
        self.exe, self.timeout = exe, timeout
        self.serial = self._pick(serial)

    def _run(self, args: list[str], check: bool = True, timeout: float | None = None) -> str:
        cmd = [self.exe] + (["-s", self.serial] if getattr(self, "serial", None) else []) + args
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout or self.timeout)
        except subprocess.TimeoutExpired:
            raise EdgetuneError(f"adb {' '.join(args[:2])}: no answer within {timeout or self.timeout:.0f} s") from None
        if check and proc.returncode != 0:
            msg = (proc.stderr or proc.stdout).strip().splitlines()
            raise EdgetuneError(f"adb {' '.join(args[:2])} failed: {msg[-1] if msg else f'exit {proc.returncode}'}")
        return proc.stdout

    def shell(self, command: str, check: bool = True) -> str:
        return self._run(["shell", command], check)

    def _pick(self, serial: str | None) -> str:
        lines = self._run(["devices"]).splitlines()
        states = dict(ln.split("\t", 1) for ln in lines[1:] if "\t" in ln)
        ready = sorted(s for s, st in states.items() if st.strip() == "device")
        if serial is not None:
            if serial not in states:
                raise RecipeError(
                    f"--serial {serial}: no such device attached (adb devices lists: {', '.join(states) or 'none'})"
                )
            if states[serial].strip() != "device":
                raise RecipeError(f"device {serial} is {states[serial].strip()}: unlock it and accept USB debugging")
            return serial
        if not ready:
            if states:
                s, st = next(iter(states.items()))
                raise RecipeError(f"device {s} is {st.strip()}: unlock it and accept the USB debugging prompt")
            raise RecipeError(
                "no Android device attached: connect a phone with USB debugging on (adb devices lists none)"
            )
        if len(ready) > 1:
            raise RecipeError(f"{len(ready)} devices attached ({', '.join(ready)}): choose one with --serial")
        return ready[0]

    def run_as(self, command: str, check: bool = True) -> str:
        return self.shell(f"run-as {APP_ID} sh -c {shlex.quote(command)}", check)


def ensure_app(adb: Adb, apk: Path | None) -> str:
    """'installed' when the demo app is on the device; else install `apk`; else a one-line error."""
    if adb.shell(f"pm path {APP_ID}", check=False).strip().startswith("package:"):
        return "installed"
    if apk is not None and apk.is_file():
        adb._run(["install", "-r", str(apk)], timeout=600)
        return f"installed {apk}"
    raise RecipeError(
        f"the edgetune demo app ({APP_ID}) is not installed on {adb.serial} and no APK was found"
        f"{' at ' + str(apk) if apk else ''}: build it with `cd android_demo && ./gradlew "
        f"assembleDebug`, or install it with adb install"
    )


def push_package(adb: Adb, package_dir: Path) -> str:
    """Copy the package's files into the app's storage; return the model's path on the device."""
    manifest = read_manifest(package_dir)
    files = sorted(set(manifest.model.files) | {"manifest.json", manifest.golden.file})
    adb.shell(f"rm -rf {REMOTE_TMP} && mkdir -p {REMOTE_TMP}")
    adb.run_as(f"rm -rf {BENCH_DIR} && mkdir -p {BENCH_DIR}")
    for name in files:
        adb._run(["push", str(package_dir / name), f"{REMOTE_TMP}/{name}"], timeout=600)
        # run-as cannot read /data/local/tmp on every Android version; the shell can, so pipe it through.
        adb.shell(f"cat {REMOTE_TMP}/{name} | run-as {APP_ID} sh -c {shlex.quote(f'cat > {BENCH_DIR}/{name}')}")
    adb.shell(f"rm -rf {REMOTE_TMP}", check=False)
    home = adb.run_as("pwd").strip()
    return f"{home}/{BENCH_DIR}/{manifest.model.file}"


def run_benchmark(
    adb: Adb, model_path: str, threads: int, warmup: int, runs: int, timeout: float = 900, poll: float = 1.0
) -> dict:
    """Start BenchmarkActivity and wait for its result.json; raise EdgetuneError when it reports an error."""
    run_id = uuid.uuid4().hex[:12]
    adb.run_as(f"rm -f {RESULT}", check=False)
    adb.shell(
        f"am start -W -n {ACTIVITY} --es model {shlex.quote(model_path)} --ei warmup {warmup} "
        f"--ei runs {runs} --ei threads {threads} --es run_id {run_id}"
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = adb.run_as(f"cat {RESULT} 2>/dev/null", check=False)
        try:
            result = json.loads(text)
        except ValueError:
            result = None
        if isinstance(result, dict) and result.get("run_id") == run_id:
            if result.get("status") != "ok":
                raise EdgetuneError(f"on-device benchmark failed: {result.get('error') or 'no error message'}")
            return result
        time.sleep(poll)
    raise EdgetuneError(f"no benchmark result from {adb.serial} within {timeout:.0f} s (see `adb logcat -s edgetune`)")


def device_load(adb: Adb) -> float | None:
    """The device's 1-minute load average (/proc/loadavg), or None when the shell cannot read it."""
    try:
        return float(adb.shell("cat /proc/loadavg", check=False).split()[0])
    except (IndexError, ValueError):
        return None


def device_stat(adb: Adb) -> tuple[int, int | None, int, int] | None:
    """(busy, steal, total) CPU ticks of the whole device since boot, from /proc/stat, and its online cores; steal
    None where the kernel gives no steal column. None when the shell cannot read /proc/stat."""
    lines = adb.shell("cat /proc/stat", check=False).splitlines()
    try:
        ticks = [int(x) for x in lines[0].split()[1:]] if lines[0].startswith("cpu ") else []
    except (IndexError, ValueError):
        return None
    if len(ticks) < 4:
        return None
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    steal = ticks[7] if len(ticks) > 7 else None
    total = sum(ticks[:8])
    cores = sum(1 for ln in lines if re.match(r"cpu\d+\s", ln))
    return total - idle - (steal or 0), steal, total, cores


Figures = tuple[float | None, tuple[int, int | None, int, int] | None]  # (load average, /proc/stat) at a moment


def device_noise(before: Figures, after: Figures, rows: list[dict], threads: int) -> dict:
    """The noise record of a phone run, judged as on the host (edgetune/runner.py). The app's own CPU time is not
    told from other processes' (other_cores None): the load average stands in, before the run and after it less
    the benchmark's own threads; cpu_busy is the device's busy share over the run, the app included."""
    (load0, stat0), (load1, stat1) = before, after
    cpu_busy = steal = cores = None
    if stat0 and stat1:
        busy, total = stat1[0] - stat0[0], stat1[2] - stat0[2]
        cpu_busy = round(busy / total, 4) if total > 0 else 0.0
        if stat0[1] is not None and stat1[1] is not None:
            steal = (stat1[1] - stat0[1]) / total if total > 0 else 0.0
        cores = max(stat0[3], stat1[3]) or None
    others = [x for x in (load0, None if load1 is None else max(0.0, load1 - threads)) if x is not None]
    spreads = row_spreads(rows)
    record = assess(load0, load1, None, steal, spreads, cores, max(others) if others else None)
    return record | {
        "cores": cores,
        "cpu_busy": cpu_busy,
        "measured": "on the device: load average, /proc/stat busy share (the app included) and steal; other "
        "processes' CPU not separable from the app's, so the load average is judged instead",
    }


def _row(result: dict, name: str, seq_len: int) -> dict:
    lat = result["latency_ms"]
    return {
        "model": name,
        "seq_len": seq_len,
        "p50_ms": float(lat["p50"]),
        "p90_ms": float(lat["p90"]),
        "p99_ms": float(lat["p99"]),
        "mean_ms": float(lat["mean"]),
        "trimmed_mean_ms": float(lat["trimmed_mean"]),
        "throughput_per_s": 1000.0 / lat["mean"] if lat["mean"] else 0.0,
        "first_inference_ms": float(result["first_inference_ms"]),
    }


def to_benchmark(
    results: list[dict], package: PackageManifest, runs: int, before: Figures, after: Figures
) -> Benchmark:
    """The device's results, one per round, as a Benchmark record, so it prints like the host benchmark."""
    name = f"android_{package.model.precision}"
    first = results[0]
    dev = first.get("device", {})
    rows = [_row(r, name, package.tokenizer.get("max_length", 0)) for r in results]
    row = merge_rounds(rows[0], rows)
    models = {
        name: {
            "load_seconds": statistics.median(r["load_ms"] for r in results) / 1000,
            "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
            "size_bytes": first.get("model_size_bytes", 0),
            "sha256": first.get("model_sha256"),
        }
    }
    machine = {
        "cpu": f"{dev.get('manufacturer', '')} {dev.get('model', '')}, Android {dev.get('android_version', '')} "
        f"(SDK {dev.get('sdk_int', '')}), {dev.get('abi', '')}, onnxruntime {first.get('onnxruntime_version', '')}",
        "device": dev,
    }
    settings = {k: first.get(k) for k in ("threads", "warmup", "xnnpack", "text")}
    settings |= {"runs": runs, "rounds": len(results), "batch_size": 1}
    noise = device_noise(before, after, [row], first.get("threads") or 1)
    return Benchmark(
        kind="latency", results=[row], models=models, settings=settings, machine=machine, baseline="", noise=noise
    )


def bench_on_device(
    package_dir: Path,
    serial: str | None,
    threads: int,
    warmup: int,
    runs: int,
    rounds: int,
    apk: Path | None,
    log=lambda s: None,
) -> Benchmark:
    """The whole --adb flow for one package folder: `runs` timed runs split over `rounds` rounds, each in a fresh
    app process, with the device's load and CPU use read before and after."""
    if not (package_dir / "manifest.json").is_file():
        raise RecipeError(f"{package_dir}: no packaged model (run `edgetune package` first)")
    try:
        manifest = read_manifest(package_dir)
    except ValueError as e:
        raise RecipeError(str(e)) from None
    adb = Adb(serial)
    log(f"adb: device {adb.serial}; app {ensure_app(adb, apk)}")
    model_path = push_package(adb, package_dir)
    per_round = max(1, -(-runs // rounds))  # as on the host: benchmark.runs in all, split over the rounds
    log(f"adb: pushed the package; benchmarking {model_path} ({threads} threads, {rounds} rounds of {per_round} runs)")
    before = device_load(adb), device_stat(adb)
    results = []
    for r in range(rounds):
        log(f"adb: round {r + 1}/{rounds} ...")
        adb.shell(f"am force-stop {APP_ID}")  # each round in a fresh app process
        results.append(run_benchmark(adb, model_path, threads, warmup, per_round))
    after = device_load(adb), device_stat(adb)
    return to_benchmark(results, manifest, runs, before, after)
