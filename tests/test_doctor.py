"""edgetune doctor: each finding from a controlled environment, and the exit codes."""

from collections import namedtuple

import pytest
from click.testing import CliRunner

import edgetune.doctor as doctor
from edgetune.cli import cli

pytestmark = pytest.mark.both_lines


def test_healthy_environment_exits_0(tiny_recipe):
    r = CliRunner().invoke(cli, ["doctor", str(tiny_recipe)])
    assert r.exit_code == 0, r.output
    assert "[  ok] onnxruntime:" in r.output and "needs about" in r.output


def test_two_onnxruntime_packages_must_be_fixed(monkeypatch):
    real = doctor._version
    monkeypatch.setattr(doctor, "_version", lambda d: "1.32.0" if d == "onnxruntime-gpu" else real(d))
    r = CliRunner().invoke(cli, ["doctor"])
    assert r.exit_code == 1
    assert "2 onnxruntime packages installed (onnxruntime, onnxruntime-gpu)" in r.output
    assert r.output.strip().splitlines()[-1].startswith("Error: 1 problem to fix: onnxruntime:")


def test_untested_and_incompatible_versions(monkeypatch):
    versions = {
        "transformers": "4.60.0",
        "torch": "2.13.0+cu128",
        "optimum-onnx": "0.1.0",
        "onnxruntime-genai": "0.18.0",
    }
    real = doctor._version
    monkeypatch.setattr(doctor, "_version", lambda d: versions.get(d, real(d)))
    found = {(f.level, f.topic): f.message for f in doctor.check_packages()}
    assert "optimum-onnx 0.1 needs transformers < 4.58" in found["fail", "transformers"]
    assert "tested with 4.57.x" in found["warn", "transformers"]
    assert "CUDA build" in found["warn", "torch"]
    assert "needs transformers 5" in found["fail", "onnxruntime-genai"]  # the 0.18 builder on the 4.x line


@pytest.mark.parametrize(
    "versions, line, tested",
    [
        ({"transformers": "5.25.0", "onnxruntime-genai": "0.18.0", "optimum-onnx": None}, "transformers 5", "5.25"),
        ({"transformers": "4.57.6", "onnxruntime-genai": "0.15.2", "optimum-onnx": "0.1.0"}, "transformers 4", "4.57"),
    ],
)
def test_doctor_names_the_line_and_its_exporters(monkeypatch, versions, line, tested):
    real = doctor._version
    monkeypatch.setattr(doctor, "_version", lambda d: versions.get(d, real(d)))
    found = {f.topic: f for f in doctor.check_packages()}
    assert found["line"].message.startswith(f"{line} ({versions['transformers']}): encoders export with ")
    assert f"onnxruntime-genai {versions['onnxruntime-genai']}'s builder" in found["line"].message
    assert found["transformers"].level == "ok" and found["transformers"].message == versions["transformers"]
    assert ("optimum-onnx" in found) == (line == "transformers 4")  # asked for on the 4.57 line only
    assert tested in found["transformers"].message


def test_cpu_features():
    old = {(f.topic, f.level) for f in doctor.check_cpu({"sse4_2"}, saturates=True)}
    assert ("cpu int8", "warn") in old and ("cpu", "warn") in old
    new = {f.topic: f.message for f in doctor.check_cpu({"avx2", "avx512_vnni", "amx_bf16"}, saturates=False)}
    assert "fast int8" in new["cpu int8"] and "uses bf16" in new["cpu bf16"]
    assert "32 bits" in new["int8 kernels"]
    avx2 = {f.topic: f.message for f in doctor.check_cpu({"avx2"}, saturates=True)}
    assert "clamp" in avx2["int8 kernels"] and "7 bits" in avx2["int8 kernels"]


def test_not_enough_disk_for_the_recipe(tiny_recipe, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda p: usage(10**9, 10**9, 1000))
    r = CliRunner().invoke(cli, ["doctor", str(tiny_recipe)])
    assert r.exit_code == 1 and "disk:" in r.output and "free some space" in r.output
