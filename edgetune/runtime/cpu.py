"""What the CPU can do: its feature flags, its instruction set's name, and whether its int8 kernels clamp."""

from __future__ import annotations

import functools
from pathlib import Path

# CPU features with native bf16 matrix units; without them bf16 is emulated and slower than float32.
NATIVE_BF16 = frozenset({"amx_bf16", "avx512_bf16"})


def cpu_flags() -> set[str]:
    """The CPU feature flags Linux reports (/proc/cpuinfo: x86 `flags`, ARM `Features`); empty where that cannot
    be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


# The int8 matrix instructions ONNX Runtime's kernels dispatch on, best first, as Linux names them.
_X86_INT8 = (("amx_int8", "AMX-INT8"), ("avx512_vnni", "AVX512-VNNI"), ("avx_vnni", "AVX-VNNI"))


def cpu_isa(flags: set[str] | None = None, machine: str | None = None) -> str:
    """The instruction set int8 and float kernels run on here, in a few words: 'x86_64 AVX512-VNNI',
    'x86_64 AVX2 (no VNNI)', 'aarch64 (dot product)'. From the flags Linux reports."""
    import platform

    flags = cpu_flags() if flags is None else flags
    machine = machine or platform.machine()
    if machine in ("x86_64", "AMD64"):
        best = next((name for flag, name in _X86_INT8 if flag in flags), None)
        if best:
            return f"x86_64 {best}"
        simd = "AVX512" if "avx512bw" in flags else "AVX2" if "avx2" in flags else "SSE"
        return f"x86_64 {simd} (no VNNI)"
    if machine in ("aarch64", "arm64"):
        extra = [name for flag, name in (("i8mm", "i8mm"), ("asimddp", "dot product"), ("sve", "SVE")) if flag in flags]
        return f"aarch64 ({', '.join(extra)})" if extra else "aarch64"
    return machine


def machine_line(m: dict) -> str:
    """'AMD EPYC (x86_64 AVX512-VNNI)': a benchmark's machine record as one line, the CPU and the instruction
    set its figures were measured on."""
    isa = m.get("isa")
    return f"{m.get('cpu')} ({isa})" if isa else str(m.get("cpu"))


@functools.lru_cache(maxsize=1)
def int8_saturates() -> bool:
    """Whether ONNX Runtime's u8 x s8 int8 matrix kernels saturate on this CPU. On x86 without VNNI (AVX2, and
    AVX512 before VNNI) they multiply with VPMADDUBSW, which adds each pair of products into a 16-bit integer
    and clamps it at 32767: 255 x 127 + 255 x 127 comes out as 32767. VNNI, AMX and ARM's kernels accumulate in
    32 bits. Measured, not looked up: a MatMulInteger whose exact result overflows 16 bits in every pair, run
    by this process's onnxruntime at the two shapes its kernels treat apart (one row, several rows)."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    k, n = 64, 16
    weights = numpy_helper.from_array(np.full((k, n), 127, np.int8), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["x", "w"], ["y"])],
        "int8_saturation_probe",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, ["m", k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, ["m", n])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    so = ort.SessionOptions()
    so.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    exact = 255 * 127 * k
    for rows in (1, 8):
        y = session.run(None, {"x": np.full((rows, k), 255, np.uint8)})[0]
        if not (y == exact).all():
            return True
    return False
