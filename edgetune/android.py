"""Benchmark a packaged model on an Android phone over adb, through the demo app's BenchmarkActivity.

Flow: find adb and one device, check the app is installed (or install the debug APK), push the package into
the app's private storage (`adb push` to /data/local/tmp, then `run-as` copies it, since the app is
debuggable), start the headless activity, poll for its JSON result and turn it into a Benchmark record.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from .artifacts import Benchmark
from .errors import EdgetuneError, RecipeError
from .packaging.manifest import PackageManifest, read_manifest

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


def to_benchmark(result: dict, package: PackageManifest) -> Benchmark:
    """The device's result as a Benchmark record, so it prints like the host benchmark."""
    lat = result["latency_ms"]
    name = f"android_{package.model.precision}"
    dev = result.get("device", {})
    row = {
        "model": name,
        "seq_len": package.tokenizer.get("max_length", 0),
        "p50_ms": lat["p50"],
        "p90_ms": lat["p90"],
        "p99_ms": lat["p99"],
        "mean_ms": lat["mean"],
        "trimmed_mean_ms": lat["trimmed_mean"],
        "throughput_per_s": 1000.0 / lat["mean"] if lat["mean"] else 0.0,
        "first_inference_ms": result["first_inference_ms"],
    }
    models = {
        name: {
            "load_seconds": result["load_ms"] / 1000,
            "peak_rss_mb": result["peak_rss_mb"],
            "size_bytes": result.get("model_size_bytes", 0),
            "sha256": result.get("model_sha256"),
        }
    }
    machine = {
        "cpu": f"{dev.get('manufacturer', '')} {dev.get('model', '')}, Android {dev.get('android_version', '')} "
        f"(SDK {dev.get('sdk_int', '')}), {dev.get('abi', '')}, onnxruntime {result.get('onnxruntime_version', '')}",
        "device": dev,
    }
    settings = {k: result.get(k) for k in ("threads", "warmup", "runs", "xnnpack", "text")} | {"batch_size": 1}
    return Benchmark(kind="latency", results=[row], models=models, settings=settings, machine=machine, baseline="")


def bench_on_device(
    package_dir: Path, serial: str | None, threads: int, warmup: int, runs: int, apk: Path | None, log=lambda s: None
) -> Benchmark:
    """The whole --adb flow for one package folder."""
    if not (package_dir / "manifest.json").is_file():
        raise RecipeError(f"{package_dir}: no packaged model (run `edgetune package` first)")
    try:
        manifest = read_manifest(package_dir)
    except ValueError as e:
        raise RecipeError(str(e)) from None
    adb = Adb(serial)
    log(f"adb: device {adb.serial}; app {ensure_app(adb, apk)}")
    model_path = push_package(adb, package_dir)
    log(f"adb: pushed the package; benchmarking {model_path} ({threads} threads, {runs} runs)")
    return to_benchmark(run_benchmark(adb, model_path, threads, warmup, runs), manifest)
