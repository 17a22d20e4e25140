"""The same int8 files on this CPU's kernels and on an AVX2-only x86's (issue 18).

Usage: python benchmarks/int8_isa.py RUN_DIR [--json OUT.json] [--smoke]

RUN_DIR is a finished `edgetune build` of a classification recipe. Its fp32 ONNX model (export/model.onnx) is
quantized twice the way the quantize stage does (dynamic, per channel): with 8-bit weights, as a machine whose
int8 kernels accumulate in 32 bits builds it, and with 7-bit weights (reduce_range), as edgetune builds it where
a CPU clamps. The fp32 file and both int8 files then run on the held-out split at batch 1 (how verify and the
app run them), each in a fresh process: once on this machine, once under qemu-x86_64's TCG, an x86 with AVX2 and
no AVX512 or VNNI (Haswell to Zen 3), fetched by tests/board into ~/.cache/edgetune. Printed per file and CPU:
held-out accuracy, top-1 agreement and mean cosine against the fp32 file on the same CPU, and max |logit
difference| between the two CPUs. Accuracy only: emulated timings mean nothing.

--smoke: the same path on a tiny run (CI, tests/test_benchmarks.py): the first SMOKE_ROWS held-out rows; where
the emulator cannot be provisioned (no network on first use, not an x86_64 host) it says so and runs this
machine's part alone (the full run fails instead).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SMOKE_ROWS = 6
EMULATED = "emulated AVX2 (qemu-x86_64 TCG)"


def board():
    """tests/board's emulators (qemu-x86_64 provisioned into ~/.cache/edgetune on first use)."""
    sys.path.insert(0, str(REPO / "tests" / "board"))
    import arm64_board

    return arm64_board


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(((a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--smoke", action="store_true", help=f"the first {SMOKE_ROWS} held-out rows, for CI")
    args = ap.parse_args()

    from onnxruntime.quantization import QuantType, quantize_dynamic

    from edgetune.engines.onnxfile import quiet
    from edgetune.pipeline import load_run_recipe
    from edgetune.runtime.cpu import cpu_isa, int8_saturates
    from edgetune.tasks import get_task

    r = load_run_recipe(args.run_dir)
    task = get_task(r.task)
    data = task.load_data(r.dataset, r.base_dir)
    trained = args.run_dir / ("compress" if (args.run_dir / "compress" / "model").is_dir() else "merge") / "model"
    tok = task.load_tokenizer(trained)
    evals = data.eval[:SMOKE_ROWS] if args.smoke else data.eval
    gold = np.array([e["label"] for e in evals])
    with tempfile.TemporaryDirectory(prefix="int8-isa-") as tmp:
        work = Path(tmp)
        feeds = {}
        for i, b in enumerate(task.batches(evals, tok, 1, r.training.max_length)):
            feeds.update({f"{i}:{k}": v.numpy() for k, v in b.items() if k != "labels"})
        np.savez(work / "feeds.npz", **feeds)
        fp32 = args.run_dir / "export" / "model.onnx"
        files = {"fp32": fp32}
        for name, reduced in (("int8, 8-bit weights", False), ("int8, 7-bit weights", True)):
            files[name] = work / f"int8_{int(reduced)}.onnx"
            with quiet():
                quantize_dynamic(
                    fp32,
                    files[name],
                    weight_type=QuantType.QInt8,
                    per_channel=True,
                    reduce_range=reduced,
                    extra_options={"DefaultTensorType": 1},
                )
        emu = board()
        outputs = {}
        for cpu, emulated in (("this machine", False), (EMULATED, True)):
            if emulated and args.smoke:
                try:
                    emu.x86_64_emulator()  # provisions it on first use
                except (emu.ProvisionError, OSError) as e:
                    print(f"smoke: skipped the {EMULATED} part: the emulator is unavailable ({e})")
                    continue
            got = emu.run_onnx_files(work / "feeds.npz", list(files.values()), work, emulated_avx2=emulated)
            outputs[cpu] = dict(zip(files, got))
    here, avx2 = outputs["this machine"], outputs.get(EMULATED)
    print(
        f"{args.run_dir}: {len(gold)} held-out rows, batch 1; this machine: {cpu_isa()}, int8 sums clamp: "
        f"{int8_saturates()}"
    )
    head = f"{'file':<22}{'CPU':<33}{'accuracy':>9}{'agree':>8}{'cosine':>10}{'max|here-avx2|':>16}"
    print(head + "\n" + "-" * len(head))
    rows = []
    for name in files:
        for cpu, got in outputs.items():
            x, ref = got[name], got["fp32"]
            between = float(np.abs(here[name] - avx2[name]).max()) if avx2 is not None else None
            row = {
                "file": name,
                "cpu": cpu,
                "accuracy": float((x.argmax(-1) == gold).mean()),
                "top1_agreement_fp32": float((x.argmax(-1) == ref.argmax(-1)).mean()),
                "mean_cosine_fp32": cosine(x, ref),
                "max_abs_diff_between_cpus": between,
            }
            rows.append(row)
            print(
                f"{name:<22}{cpu:<33}{row['accuracy']:>9.4f}{row['top1_agreement_fp32']:>8.4f}"
                f"{row['mean_cosine_fp32']:>10.5f}{'-' if between is None else f'{between:.2e}':>16}"
            )
    if args.json:
        args.json.write_text(json.dumps({"run_dir": str(args.run_dir), "isa": cpu_isa(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
