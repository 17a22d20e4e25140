"""Measure the export and int8 choices edgetune makes, against PyTorch eager fp32 in the same process.

Usage: python benchmarks/int8_variants.py RECIPE [--out RUN_DIR] [--threads 2] [--seq 32] [--warmup 20] [--runs 300]
       python benchmarks/int8_variants.py RECIPE --out RUN_DIR --smoke

Needs a finished `edgetune build` of RECIPE (it reads merge/model). For each variant it prints export
seconds, file size, p50 latency at batch 1 and the ratio to PyTorch, and top-1 agreement and minimum
cosine against PyTorch on the recipe's held-out split. Variants:
  a plain torch.onnx.export vs edgetune's export_encoder (the export stage's exporter on the transformers 5 line:
  TorchScript, eager attention; both fp32, unoptimized);
  ONNX Runtime transformer fusions with and without SkipLayerNormalization, sessions with and without the
  runtime SkipLayerNormFusion;
  int8 dynamic per-tensor vs per-channel.

--smoke: the same path on a tiny run in seconds (CI, tests/test_benchmarks.py): every variant, 1 thread, seq 8,
1 warmup and 3 timed runs. Its timings mean nothing.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

SMOKE = {"threads": 1, "seq": 8, "warmup": 1, "runs": 3}


def p50_ms(fn, warmup: int, runs: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("recipe", type=Path)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--smoke", action="store_true", help="tiny settings, for CI: " + str(SMOKE))
    args = ap.parse_args()
    if args.smoke:
        vars(args).update(SMOKE)

    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoConfig

    from edgetune.core.recipe import load_recipe
    from edgetune.engines.bench.inputs import encoder_inputs
    from edgetune.engines.encoder_export import export_encoder
    from edgetune.engines.fusions import optimize_encoder
    from edgetune.engines.onnxfile import quiet
    from edgetune.pipeline import prepare
    from edgetune.runtime.ort import DISABLED_OPTIMIZERS

    p = prepare(load_recipe(args.recipe))
    run = args.out or Path("runs") / p.recipe.name
    merged_dir = run / "merge" / "model"
    task = p.task
    torch.set_num_threads(args.threads)
    tok = task.load_tokenizer(merged_dir)
    model = task.load_model(merged_dir, p.data.labels)
    feeds_np = encoder_inputs(tok, 1, args.seq)
    feeds_pt = {k: torch.from_numpy(v) for k, v in feeds_np.items()}
    batches = list(task.batches(p.data.eval, tok, 32, p.recipe.training.max_length))
    ref = np.concatenate([task.logits(model, b) for b in batches])
    with torch.inference_mode():
        base = p50_ms(lambda: model(**feeds_pt), args.warmup, args.runs)
    print(f"PyTorch eager fp32: p50 {base:.2f} ms at batch 1 x seq {args.seq}, {args.threads} threads\n")

    tmp = Path(tempfile.mkdtemp(prefix="edgetune-variants-"))
    files: dict[str, tuple[Path, float]] = {}

    t = time.perf_counter()
    torch.onnx.export(
        model,
        (),
        str(tmp / "torch_onnx.onnx"),
        kwargs=dict(feeds_pt),
        dynamo=False,
        opset_version=17,
        input_names=list(feeds_pt),
        output_names=["logits"],
        dynamic_axes={k: {0: "batch", 1: "seq"} for k in feeds_pt},
    )
    files["fp32 torch.onnx.export"] = (tmp / "torch_onnx.onnx", time.perf_counter() - t)
    t = time.perf_counter()
    edgetune_model = task.load_model(merged_dir, p.data.labels)  # export_encoder switches it to eager attention
    export_encoder(edgetune_model, list(tok.model_input_names), tmp / "edgetune.onnx", 17)
    files["fp32 edgetune export_encoder"] = (tmp / "edgetune.onnx", time.perf_counter() - t)
    config = AutoConfig.from_pretrained(merged_dir)
    for name, skip in (("fused, SkipLayerNorm fused", False), ("fused, SkipLayerNorm unfused", True)):
        out = tmp / name.replace(" ", "_").replace(",", "")
        out.mkdir()
        t = time.perf_counter()
        optimize_encoder(tmp / "edgetune.onnx", out / "model.onnx", config, skip_layer_norm=not skip)
        files[f"fp32 {name}"] = (out / "model.onnx", time.perf_counter() - t)
        for pc in (False, True):
            q = out / f"int8_pc{int(pc)}.onnx"
            t = time.perf_counter()
            with quiet():
                quantize_dynamic(
                    out / "model.onnx",
                    q,
                    weight_type=QuantType.QInt8,
                    per_channel=pc,
                    extra_options={"DefaultTensorType": 1},
                )
            files[f"int8 {'per-channel' if pc else 'per-tensor'}, {name}"] = (q, time.perf_counter() - t)

    print(f"{'variant':<58}{'runtime SLN':>12}{'secs':>6}{'MB':>7}{'p50 ms':>8}{'ratio':>7}{'top1':>7}{'min cos':>8}")
    for name, (path, secs) in files.items():
        for disabled in ([], DISABLED_OPTIMIZERS):
            so = ort.SessionOptions()
            so.intra_op_num_threads = args.threads
            sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)
            wanted = [i.name for i in sess.get_inputs()]
            ms = p50_ms(
                lambda sess=sess, wanted=wanted: sess.run(None, {n: feeds_np[n] for n in wanted}),
                args.warmup,
                args.runs,
            )
            got = np.concatenate([sess.run(None, {n: b[n].numpy() for n in wanted})[0] for b in batches])
            cos = (got * ref).sum(-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(ref, axis=-1)
            agree = (got.argmax(-1) == ref.argmax(-1)).mean()
            print(
                f"{name:<58}{'off' if disabled else 'on':>12}{secs:>6.1f}{path.stat().st_size / 1e6:>7.1f}"
                f"{ms:>8.2f}{ms / base:>7.3f}{agree:>7.3f}{cos.min():>8.4f}"
            )

    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
