"""Adaptation methods on one recipe: held-out accuracy and seconds per epoch for lora, dora, adalora and ia3.

Each method builds the recipe (package off) up to verify in a fresh process, one after the other, with
everything else unchanged; the table shows the fine-tuned PyTorch and int8 ONNX accuracy and the median epoch
time (which includes the per-epoch evaluation), with the load average before each build.

    python benchmarks/methods.py [recipes/intent-minilm.yaml] [--out /tmp/methods] [--methods lora,ia3] [--smoke]

--smoke: the same path on a tiny recipe in seconds (CI, tests/test_benchmarks.py): SMOKE_METHODS (unless
--methods names others), trained for 1 epoch. Its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

CHILD = """
import sys
from edgetune.pipeline import build
from edgetune.core.recipe import load_recipe
build(load_recipe(sys.argv[1]), sys.argv[2], until="verify", progress=False)
"""
METHODS = "lora,dora,adalora,ia3"
SMOKE_METHODS = "lora"


def derived_recipe(recipe: Path, method: str, folder: Path, epochs: int | None = None) -> Path:
    """The recipe with lora.method set and packaging off (and training.epochs, if given); its relative paths made
    absolute."""
    data = yaml.safe_load(recipe.read_text())
    base = recipe.resolve().parent
    for key in ("train", "eval"):
        if data["dataset"].get(key):
            data["dataset"][key] = str((base / data["dataset"][key]).resolve())
    data["name"] = f"{data['name']}-{method}"
    data.setdefault("lora", {})["method"] = method
    data.setdefault("package", {})["android"] = None
    if epochs is not None:
        data.setdefault("training", {})["epochs"] = epochs
    path = folder / f"{method}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("recipe", nargs="?", default="recipes/intent-minilm.yaml", type=Path)
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "edgetune-methods")
    ap.add_argument("--methods", default=None, help=f"comma-separated (default {METHODS})")
    ap.add_argument("--smoke", action="store_true", help=f"{SMOKE_METHODS} (unless --methods), 1 epoch, for CI")
    args = ap.parse_args()
    methods = (args.methods or (SMOKE_METHODS if args.smoke else METHODS)).split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        "unknown CPU",
    )
    print(f"# {args.recipe}, {cpu}, {os.cpu_count()} cores")
    print(
        "| method | trainable params | held-out acc. (PyTorch) | int8 ONNX acc. | s/epoch (median) | "
        "finetune s | load avg before |"
    )
    print("|---|---|---|---|---|---|---|")
    for method in methods:
        recipe = derived_recipe(args.recipe, method, args.out, 1 if args.smoke else None)
        run = args.out / f"run-{method}"
        load = os.getloadavg()[0]
        subprocess.run([sys.executable, "-c", CHILD, str(recipe), str(run)], check=True)
        stages = json.loads((run / "manifest.json").read_text())["stages"]
        ft, ver = stages["finetune"]["record"], stages["verify"]["record"]["models"]
        epoch_s = statistics.median(e["seconds"] for e in ft["epochs"])
        print(
            f"| {method} | {ft['trainable_params']:,} | {ver['pytorch_fp32']['accuracy']:.3f} | "
            f"{ver['onnx_int8']['accuracy']:.3f} | {epoch_s:.1f} | {stages['finetune']['seconds']:.0f} | "
            f"{load:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
