"""ONNX Runtime's MatMulNBits CPU kernel at decode shape (one token), by zero-point kind and accuracy level.

Usage: python benchmarks/matmulnbits_kernels.py [--threads 2] [--warmup 20] [--runs 300] [--smoke]

For SmolLM2-135M's MatMul shapes it times int4 weights with no zero points (symmetric, what edgetune and the
builder export), uint8 zero points (asymmetric) and float zero points (which could hold a LoRA delta that is
constant along a block exactly, as QA-LoRA does), at accuracy_level 4 (int8 compute) and 0, and prints each
time as a ratio to the symmetric level-4 kernel timed in the same run, with the relative error against numpy.

--smoke: the same path in seconds (CI, tests/test_benchmarks.py): small shapes (SMOKE_SHAPES), 1 thread, 1 warmup
and 3 timed runs. Its timings mean nothing.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

# (K, N, layers): square shapes are chained (several layers per session, so per-run overhead is amortized);
# lm_head alone
SHAPES = [(576, 576, 16), (1536, 1536, 8), (576, 49152, 1)]  # SmolLM2-135M
SMOKE_SHAPES = [(64, 64, 2), (64, 512, 1)]


def _model(k: int, n: int, zero_points: str, level: int, layers: int, rng: np.random.Generator):
    nb = k // 32
    inits, nodes, weights, prev = [], [], [], "x"
    for i in range(layers):
        q = rng.integers(0, 16, size=(n, nb, 32), dtype=np.uint8)
        scales = rng.uniform(0.001, 0.01, size=(n, nb)).astype(np.float32)
        inits += [
            numpy_helper.from_array((q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8), f"B{i}"),
            numpy_helper.from_array(scales.reshape(-1), f"S{i}"),
        ]
        inputs = [prev, f"B{i}", f"S{i}"]
        if zero_points == "none":
            z = np.full((n, nb), 8, np.float32)
        elif zero_points == "uint8":
            zi = rng.integers(0, 16, size=(n, nb), dtype=np.uint8)
            padded = np.zeros((n, (nb + 1) // 2 * 2), np.uint8)
            padded[:, :nb] = zi
            inits.append(numpy_helper.from_array((padded[:, 0::2] | (padded[:, 1::2] << 4)).reshape(-1), f"Z{i}"))
            inputs.append(f"Z{i}")
            z = zi.astype(np.float32)
        else:
            z = rng.uniform(0, 15, size=(n, nb)).astype(np.float32)
            inits.append(numpy_helper.from_array(z.reshape(-1), f"Z{i}"))
            inputs.append(f"Z{i}")
        weights.append((scales[..., None] * (q.astype(np.float32) - z[..., None])).reshape(n, k))
        out = "y" if i == layers - 1 else f"y{i}"
        nodes.append(
            helper.make_node(
                "MatMulNBits",
                inputs,
                [out],
                domain="com.microsoft",
                K=k,
                N=n,
                bits=4,
                block_size=32,
                accuracy_level=level,
            )
        )
        prev = out
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
        inits,
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets), weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--smoke", action="store_true", help="small shapes, 1 thread, 1 warmup + 3 runs, for CI")
    args = ap.parse_args()
    if args.smoke:
        args.threads, args.warmup, args.runs = 1, 1, 3
    for k, n, layers in SMOKE_SHAPES if args.smoke else SHAPES:
        base = None
        for level in (4, 0):
            for zp in ("none", "uint8", "float"):
                model, weights = _model(k, n, zp, level, layers, np.random.default_rng(0))
                so = ort.SessionOptions()
                so.intra_op_num_threads = args.threads
                sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
                x = np.random.default_rng(1).standard_normal((1, k)).astype(np.float32)
                ref = x
                for w in weights:
                    ref = ref @ w.T
                err = float(np.abs(sess.run(None, {"x": x})[0] - ref).max() / np.abs(ref).max())
                for _ in range(args.warmup):
                    sess.run(None, {"x": x})
                t0 = time.perf_counter()
                for _ in range(args.runs):
                    sess.run(None, {"x": x})
                ms = 1e3 * (time.perf_counter() - t0) / args.runs / layers
                base = base or ms
                print(
                    f"K={k:5d} N={n:5d} level {level} zero points {zp:5s}: {ms:7.3f} ms per MatMul "
                    f"({ms / base:5.2f}x symmetric level 4), relative error {err:.1e}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
