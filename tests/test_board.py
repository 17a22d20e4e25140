"""The emulated arm64 board (tests/board): over ssh, on a cortex-a53 and on qemu's `max` CPU, python3 is an aarch64
Python whose /proc/cpuinfo is the emulated CPU's, and onnxruntime runs an int8 model there with the host's
integer results. Provisioning is cached (tests/board/arm64_board.py); it fails these tests unless
EDGETUNE_SKIP_BOARD=1."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from board import arm64_boards  # noqa: F401  (session fixture)

# one worker under pytest-xdist (-n N) boots the emulated boards and runs every test that uses them
pytestmark = pytest.mark.xdist_group("arm64-board")

CPUS = ["cortex-a53", "max"]


@pytest.fixture(scope="module", params=CPUS)
def arm64(request, arm64_boards):  # noqa: F811
    return arm64_boards(request.param)


def test_machine_is_aarch64(arm64):
    out = arm64.run("python3 -c 'import platform; print(platform.machine())'").stdout
    assert out.strip() == "aarch64"


def _features(board, env: str = "") -> set[str]:
    out = board.run(env + "python3 -c 'print(open(\"/proc/cpuinfo\").read())'").stdout
    lines = [line for line in out.splitlines() if line.startswith("Features")]
    assert lines, out
    return set(lines[0].split(":", 1)[1].split())


def test_cpuinfo_is_the_emulated_cpu(arm64):
    features = _features(arm64)
    assert {"fp", "asimd"} <= features
    if arm64.cpu == "max":
        # dot product, int8 matrix multiply, SVE: what onnxruntime's int8 kernels dispatch on
        assert {"asimddp", "i8mm", "sve"} <= features
    else:  # Cortex-A53: ARMv8.0, no dot product
        assert not {"asimddp", "i8mm", "sve"} & features


K, M, N = 64, 16, 4
W_SCALE = 0.01


def _int8_model(path):
    """y = dequant(MatMulInteger(DynamicQuantizeLinear(x), Wq)) + b, with the integer intermediates as outputs.

    Wq is int8 in [-63, 63] (7 bits): x86 AVX2 kernels multiply u8 x s8 pairs into int16 (vpmaddubsw), which
    saturates past 32767; 2 * 255 * 63 = 32130 cannot, so the host's integers are exact as the board's are.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    wq = rng.integers(-63, 64, size=(K, M), dtype=np.int8)
    bias = rng.normal(0, 0.1, size=M).astype(np.float32)
    inits = [
        numpy_helper.from_array(wq, "Wq"),
        numpy_helper.from_array(np.array(0, np.int8), "Wzp"),
        numpy_helper.from_array(np.array(W_SCALE, np.float32), "Ws"),
        numpy_helper.from_array(bias, "B"),
    ]
    nodes = [
        helper.make_node("DynamicQuantizeLinear", ["X"], ["Xq", "Xs", "Xzp"]),
        helper.make_node("MatMulInteger", ["Xq", "Wq", "Xzp", "Wzp"], ["Acc"]),
        helper.make_node("Cast", ["Acc"], ["AccF"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["Xs", "Ws"], ["S"]),
        helper.make_node("Mul", ["AccF", "S"], ["YS"]),
        helper.make_node("Add", ["YS", "B"], ["Y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_int8",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [N, K])],
        [
            helper.make_tensor_value_info("Y", TensorProto.FLOAT, [N, M]),
            helper.make_tensor_value_info("Acc", TensorProto.INT32, [N, M]),
            helper.make_tensor_value_info("Xq", TensorProto.UINT8, [N, K]),
            helper.make_tensor_value_info("Xs", TensorProto.FLOAT, []),
            helper.make_tensor_value_info("Xzp", TensorProto.UINT8, []),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return wq


RUN = """
import json, numpy as np, onnxruntime as ort, onnxruntime_genai, onnxruntime_extensions
versions = [ort.__version__, onnxruntime_genai.__version__, onnxruntime_extensions.__version__]
sess = ort.InferenceSession("tiny_int8.onnx", providers=["CPUExecutionProvider"])
y, acc, xq, xs, xzp = sess.run(None, {"X": np.load("x.npy")})
print(json.dumps({"y": y.tolist(), "acc": acc.tolist(), "xq": xq.tolist(), "xs": float(xs), "xzp": int(xzp),
                  "versions": versions, "providers": ort.get_available_providers()}))
"""


@pytest.fixture(scope="module")
def int8_case(tmp_path_factory):
    import onnxruntime as ort

    folder = tmp_path_factory.mktemp("int8")
    wq = _int8_model(folder / "tiny_int8.onnx")
    x = np.random.default_rng(1).uniform(-1, 1, size=(N, K)).astype(np.float32)
    np.save(folder / "x.npy", x)
    sess = ort.InferenceSession(str(folder / "tiny_int8.onnx"), providers=["CPUExecutionProvider"])
    y, acc, xq, xs, xzp = sess.run(None, {"X": x})
    # the host's accumulators are exact (no saturation): the integer product of its own quantized input
    assert np.array_equal(acc, (xq.astype(np.int32) - int(xzp)) @ wq.astype(np.int32))
    return folder, {"y": y, "acc": acc, "xq": xq, "xs": float(xs), "xzp": int(xzp)}


@pytest.fixture(scope="module")
def board_run(arm64, int8_case):
    """The int8 model run on the board by one emulated python3 (an onnxruntime import costs seconds there)."""
    folder, _ = int8_case
    arm64.put(folder / "tiny_int8.onnx", "tiny_int8.onnx")
    arm64.put(folder / "x.npy", "x.npy")
    out = arm64.python(RUN).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_runtime_packages_import(board_run):
    import onnxruntime
    import onnxruntime_extensions
    import onnxruntime_genai

    assert board_run["versions"] == [
        onnxruntime.__version__,
        onnxruntime_genai.__version__,
        onnxruntime_extensions.__version__,
    ]
    assert "CPUExecutionProvider" in board_run["providers"]


def test_onnxruntime_int8_matches_host(board_run, int8_case):
    _, host = int8_case
    board = board_run
    # Same float32 input and the same DynamicQuantizeLinear formula: the same uint8 input and scale; then integer
    # arithmetic, exact on both (NEON widening multiplies on the A53, sdot/i8mm kernels under max).
    assert (board["xs"], board["xzp"]) == (host["xs"], host["xzp"])
    assert np.array_equal(np.array(board["xq"], np.uint8), host["xq"])
    assert np.array_equal(np.array(board["acc"], np.int32), host["acc"])
    # y is acc * (xs * Ws) + b in float32 (|y| < 5 here): a kernel that fuses these may round in another order, a
    # few ulp (< 2e-6). A quarter of one accumulator step (xs * Ws ~ 8e-5) is far above that and below any integer
    # disagreement. (Measured: bitwise equal on both CPUs.)
    step = host["xs"] * W_SCALE
    np.testing.assert_allclose(np.array(board["y"], np.float32), host["y"], rtol=0, atol=step / 4)


def test_cpu_can_be_chosen_per_session(arm64_boards):  # noqa: F811
    board = arm64_boards("max")
    # in the command, or sent by the client (sshd_config: AcceptEnv QEMU_CPU)
    assert "asimddp" not in _features(board, env="QEMU_CPU=cortex-a53 ")
    out = subprocess.run(
        [
            "ssh",
            "-F",
            board.ssh_config,
            "-o",
            "SetEnv=QEMU_CPU=cortex-a53",
            board.alias,
            "python3 -c 'print(open(\"/proc/cpuinfo\").read())'",
        ],
        text=True,
        capture_output=True,
        check=True,
        timeout=120,
    ).stdout
    assert "asimd" in out and "asimddp" not in out


def test_board_python_starts_board_python(arm64_boards):  # noqa: F811
    """sys.executable is the launcher, so a subprocess of the board's python runs on the board too."""
    code = (
        "import subprocess, sys\n"
        "print(subprocess.check_output([sys.executable, '-c', 'import platform; print(platform.machine())'],"
        " text=True))\n"
    )
    assert arm64_boards("max").python(code).stdout.strip() == "aarch64"
