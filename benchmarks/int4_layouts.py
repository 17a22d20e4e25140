"""One SmolLM2-135M decoder layer's int4 MatMuls (ONNX Runtime's MatMulNBits CPU kernel) by layout, at prefill and
decode shapes, timed in interleaved rounds in one process: the kernel-level answer to "which block size, and
should gate/up be one MatMul, on this CPU", without the noise of whole-model runs in fresh processes.

Usage: python benchmarks/int4_layouts.py [--threads 2] [--tokens 1 64] [--blocks 32 64 128] [--rounds 9]
                                         [--runs 30] [--levels 4 [1 ...]] [--no-fused] [--smoke]

A layer's projections as the model builder exports them (symmetric int4, no zero points, each accuracy level
of --levels: 4 = int8 compute, 1 = fp32): q/k/v fused (576 -> 960), o (576 -> 576), gate and up (576 -> 1536
each, or fused: 576 -> 3072) and down (1536 -> 576), chained in one session per layout (--no-fused: gate and up
apart only). Each round runs every layout --runs times at each token count, the order rotated per round; a round's figure is its median, and each layout's ratio to the first layout is
taken within the round (the machine's load then cancels). The table: median ms per layer over rounds, the
min-max spread, and the within-round ratio's median and min-max.

--smoke: the same path in seconds (CI, tests/test_benchmarks.py): 1 thread, 2 rounds of 2 runs. Its figures mean
nothing.
"""

from __future__ import annotations

import argparse
import platform
import time
from statistics import median

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HIDDEN, KV, INTER = 576, 192, 1536  # SmolLM2-135M: 9 query heads and 3 key/value heads of 64; MLP 1536


def _projections(fused_mlp: bool) -> list[tuple[str, int, int]]:
    mlp = [("gate_up", HIDDEN, 2 * INTER)] if fused_mlp else [("gate", HIDDEN, INTER), ("up", HIDDEN, INTER)]
    return [("qkv", HIDDEN, HIDDEN + 2 * KV), ("o", HIDDEN, HIDDEN), *mlp, ("down", INTER, HIDDEN)]


def layer_model(block: int, fused_mlp: bool, level: int, rng: np.random.Generator):
    """An ONNX model of one layer's projections: each takes the layer input (down takes a 1536-wide one) and
    the outputs are summed into one, so that no projection can be pruned; and numpy's function of the same
    (the int4 weights dequantized: scale * (q - 8))."""
    inits, nodes, outs, weights = [], [], [], []
    for name, k, n in _projections(fused_mlp):
        nb = -(-k // block)
        q = rng.integers(0, 256, size=(n, nb, block // 2), dtype=np.uint8)
        scales = rng.uniform(0.001, 0.01, size=(n * nb,)).astype(np.float32)
        inits += [numpy_helper.from_array(q, f"{name}.B"), numpy_helper.from_array(scales, f"{name}.S")]
        x = "h" if k == INTER else "x"
        nibbles = np.stack([q & 15, q >> 4], axis=-1).reshape(n, nb * block).astype(np.float32)
        w = (nibbles - 8).reshape(n, nb, block) * scales.reshape(n, nb, 1)
        weights.append((x, w.reshape(n, nb * block)[:, :k]))
        nodes.append(
            helper.make_node(
                "MatMulNBits",
                [x, f"{name}.B", f"{name}.S"],
                [f"{name}.y"],
                domain="com.microsoft",
                K=k,
                N=n,
                bits=4,
                block_size=block,
                accuracy_level=level,
            )
        )
        outs.append(f"{name}.y")
    # reduce each output to one number per token so that the graph has one output of a fixed width
    sums = []
    for o in outs:
        nodes.append(helper.make_node("ReduceSum", [o, "axis"], [f"{o}.sum"], keepdims=1))
        sums.append(f"{o}.sum")
    nodes.append(helper.make_node("Sum", sums, ["y"]))
    inits.append(numpy_helper.from_array(np.array([-1], np.int64), "axis"))
    graph = helper.make_graph(
        nodes,
        "layer",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", HIDDEN]),
            helper.make_tensor_value_info("h", TensorProto.FLOAT, ["m", INTER]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", 1])],
        inits,
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]

    def reference(feed: dict[str, np.ndarray]) -> np.ndarray:
        return sum((feed[x].astype(np.float64) @ w.T).sum(-1, keepdims=True) for x, w in weights)

    return helper.make_model(graph, opset_imports=opsets), reference


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--blocks", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--levels", type=int, nargs="+", default=[4], help="accuracy levels, each a layout axis")
    ap.add_argument("--no-fused", action="store_true", help="leave out the layouts with gate and up fused")
    ap.add_argument("--smoke", action="store_true", help="1 thread, 2 rounds of 2 runs, for CI")
    args = ap.parse_args()
    if args.smoke:
        args.threads, args.rounds, args.runs = 1, 2, 2
    fusings = (False,) if args.no_fused else (False, True)
    layouts = [(b, fused, lv) for lv in args.levels for fused in fusings for b in args.blocks]
    names = [
        f"blocks of {b}{', gate+up fused' if fused else ''}{f', level {lv}' if len(args.levels) > 1 else ''}"
        for b, fused, lv in layouts
    ]
    sessions, references = [], []
    for block, fused, level in layouts:
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        model, reference = layer_model(block, fused, level, np.random.default_rng(0))
        sessions.append(ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]))
        references.append(reference)
    rng = np.random.default_rng(1)
    feeds = {
        m: {
            "x": rng.standard_normal((m, HIDDEN)).astype(np.float32),
            "h": rng.standard_normal((m, INTER)).astype(np.float32),
        }
        for m in args.tokens
    }
    errors = {}
    for i, s in enumerate(sessions):  # warm up every kernel at every shape; each computes what numpy does
        for m, f in feeds.items():
            for _ in range(3):
                got = s.run(None, f)[0]
            ref = references[i](f)
            errors[(i, m)] = float(np.abs(got - ref).max() / np.abs(ref).max())
    times: dict[tuple[int, int], list[float]] = {(i, m): [] for i in range(len(layouts)) for m in args.tokens}
    for r in range(args.rounds):
        order = list(range(len(layouts)))
        order = order[r % len(order) :] + order[: r % len(order)]
        for m in args.tokens:
            for i in order:
                runs = []
                for _ in range(args.runs):
                    t0 = time.perf_counter()
                    sessions[i].run(None, feeds[m])
                    runs.append(1e3 * (time.perf_counter() - t0))
                times[(i, m)].append(median(runs))
    print(
        f"{platform.processor() or platform.machine()}, ONNX Runtime {ort.__version__}, {args.threads} threads, "
        f"accuracy level {', '.join(map(str, args.levels))}, {args.rounds} rounds of {args.runs} runs; "
        f"one SmolLM2-135M layer (x30 for the model)"
    )
    print(
        "| layout | tokens | ms per layer (min-max over rounds) | vs first layout, within rounds (min-max) "
        "| relative error vs numpy |"
    )
    print("|---|---|---|---|---|")
    for m in args.tokens:
        for i, name in enumerate(names):
            t = times[(i, m)]
            ratios = [a / b for a, b in zip(t, times[(0, m)], strict=True)]
            print(
                f"| {name} | {m} | {median(t):.3f} ({min(t):.3f}-{max(t):.3f}) | "
                f"{median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) | {errors[(i, m)]:.1e} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
