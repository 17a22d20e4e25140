"""`edgetune doctor`: check this machine and Python environment against what edgetune needs, and say what to fix."""

from __future__ import annotations

import platform
import shutil
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from edgetune.core.lines import OPTIMUM, encoder_exporter, release, transformers_line
from edgetune.runtime.cpu import NATIVE_BF16, cpu_flags, int8_saturates

# The combinations CI runs, one per library line (core/lines.py); other versions may work, these are the ones
# known to work together.
COMMON = {"torch": "2.13", "peft": "0.21", "onnx": "1.23", "onnxruntime": "1.32", "onnxruntime-extensions": "0.15"}
TESTED = {
    "transformers 5": {**COMMON, "transformers": "5.25", "onnxruntime-genai": "0.18"},
    "transformers 4": {**COMMON, "transformers": "4.57", "onnxruntime-genai": "0.15", "optimum-onnx": "0.1"},
}
# Each of these installs its own `onnxruntime` Python module: two of them at once shadow each other.
ORT_DISTRIBUTIONS = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-openvino",
    "onnxruntime-directml",
    "onnxruntime-qnn",
    "onnxruntime-training",
    "ort-nightly",
    "ort-nightly-gpu",
)


@dataclass(frozen=True)
class Finding:
    level: str  # "ok" | "warn" | "fail"
    topic: str
    message: str

    def line(self) -> str:
        return f"[{self.level:>4}] {self.topic}: {self.message}"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def check_packages() -> list[Finding]:
    transformers_v = _version("transformers") or "0"
    line = transformers_line(transformers_v)
    tested_line = TESTED.get(line, TESTED["transformers 5"])
    install = "pip install -e ." if line != "transformers 4" else "pip install -e '.[optimum]'"
    exporter = encoder_exporter()
    out = [
        Finding(
            "ok" if line in TESTED else "warn",
            "line",
            f"{line} ({transformers_v}): encoders export with {exporter}"
            + (" (optimum-onnx installed)" if exporter == OPTIMUM else " (torch's TorchScript exporter)")
            + f", decoders with onnxruntime-genai {_version('onnxruntime-genai') or '(not installed)'}'s builder"
            + ("" if line in TESTED else f"; edgetune is tested on {' and '.join(TESTED)}"),
        )
    ]
    for dist, tested in tested_line.items():
        v = _version(dist)
        if v is None:
            out.append(Finding("fail", dist, f"not installed: {install} (tested with {tested}.x)"))
        elif not v.startswith(tested):
            out.append(Finding("warn", dist, f"{v} installed; edgetune is tested with {tested}.x"))
        else:
            out.append(Finding("ok", dist, v))
    torch_v = _version("torch") or ""
    if "+cu" in torch_v or any(_version(d) for d in ("nvidia-cublas-cu12", "nvidia-cudnn-cu12")):
        out.append(
            Finding(
                "warn",
                "torch",
                f"{torch_v} is a CUDA build (GBs, unused on CPU): pip install torch==2.13.0 installs the CPU build",
            )
        )
    if _version("optimum-onnx") and release(transformers_v) >= (4, 58):
        out.append(
            Finding(
                "fail",
                "transformers",
                f"{transformers_v}: optimum-onnx 0.1 needs transformers < 4.58: pip uninstall optimum-onnx (the "
                f"transformers 5 line exports with torch), or pip install 'transformers<4.58'",
            )
        )
    genai = _version("onnxruntime-genai")
    if genai and line == "transformers 4" and release(genai) > (0, 15):
        out.append(
            Finding(
                "fail",
                "onnxruntime-genai",
                f"{genai}: its model builder needs transformers 5; on {transformers_v}: "
                f"pip install onnxruntime-genai==0.15.2",
            )
        )
    ort = [d for d in ORT_DISTRIBUTIONS if _version(d)]
    if len(ort) > 1:
        out.append(
            Finding(
                "fail",
                "onnxruntime",
                f"{len(ort)} onnxruntime packages installed ({', '.join(ort)}); "
                f"they overwrite each other's module: pip uninstall all but one",
            )
        )
    return out


def check_cpu(flags: set[str] | None = None, saturates: bool | None = None) -> list[Finding]:
    """CPU features, from the flags Linux reports; `saturates`: whether onnxruntime's int8 kernels clamp here
    (default: measured, runtime.int8_saturates)."""
    flags = cpu_flags() if flags is None else flags
    saturates = int8_saturates() if saturates is None else saturates
    if not flags:
        return [Finding("warn", "cpu", f"cannot read CPU features on {platform.machine()} (no /proc/cpuinfo)")]
    out = []
    if "avx2" not in flags and platform.machine() in ("x86_64", "AMD64"):
        out.append(Finding("warn", "cpu", "no AVX2: ONNX Runtime and PyTorch fall back to slow kernels"))
    vnni = {"avx512_vnni", "avx_vnni"} & flags
    out.append(
        Finding(
            "ok" if vnni else "warn",
            "cpu int8",
            f"{', '.join(sorted(vnni))}: fast int8 matrix kernels"
            if vnni
            else "no AVX-VNNI: int8 models still run, with a smaller speed-up over fp32",
        )
    )
    out.append(
        Finding(
            "ok",
            "int8 kernels",
            "add int8 products in 16 bits and clamp them (x86 without VNNI): quantize stores int8 weights in 7 "
            "bits here (quantize.reduce_range: auto), so results match other CPUs'"
            if saturates
            else "accumulate int8 products in 32 bits: int8 weights keep 8 bits (quantize.reduce_range: auto)",
        )
    )
    bf16 = NATIVE_BF16 & flags
    out.append(
        Finding(
            "ok",
            "cpu bf16",
            f"{', '.join(sorted(bf16))}: training.precision auto uses bf16"
            if bf16
            else "no native bf16: training.precision auto trains in fp32",
        )
    )
    return out


def estimate(recipe) -> tuple[float, float, str]:
    """(disk GB, RAM GB, how) a build of `recipe` needs, from the base model's parameter count."""
    from edgetune.core.sources import resolve_model_source

    src = resolve_model_source(recipe.model.source, recipe.base_dir)
    params = _parameter_count(src.path)
    fp32 = params * 4 / 1e9
    # run dir: base copy (GGUF only), merged, ONNX fp32, quantized (~0.3x), checkpoints; RAM: float64 merge check
    disk = fp32 * (4.5 if src.path.suffix == ".gguf" else 3.5) + 0.5
    ram = fp32 * 6 + 1.5
    return disk, ram, f"{params / 1e6:.0f}M parameters ({fp32:.2f} GB in fp32)"


def _parameter_count(path: Path) -> int:
    import json

    import numpy as np

    if path.is_file() and path.suffix == ".gguf":
        from gguf import GGUFReader

        return int(sum(int(np.prod(t.shape)) for t in GGUFReader(path).tensors))
    total = 0
    for f in sorted(path.glob("*.safetensors")):
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
        total += sum(int(np.prod(v["shape"])) for k, v in header.items() if k != "__metadata__")
    if total == 0:  # .bin weights: approximate from file sizes at 4 bytes per parameter
        total = sum(f.stat().st_size for f in path.glob("*.bin")) // 4
    return total


def check_resources(recipe=None, where: Path = Path(".")) -> list[Finding]:
    import psutil

    where = Path(where)
    while not where.exists():
        where = where.parent
    free_disk = shutil.disk_usage(where).free / 1e9
    free_ram = psutil.virtual_memory().available / 1e9
    if recipe is None:
        return [
            Finding("ok", "disk", f"{free_disk:.1f} GB free at {where.resolve()}"),
            Finding("ok", "memory", f"{free_ram:.1f} GB available"),
        ]
    disk, ram, how = estimate(recipe)
    return [
        Finding(
            "ok" if free_disk >= disk else "fail",
            "disk",
            f"{free_disk:.1f} GB free at {where.resolve()}; {recipe.name} needs about {disk:.1f} GB ({how})"
            + ("" if free_disk >= disk else ": free some space or pass --out on another disk"),
        ),
        Finding(
            "ok" if free_ram >= ram else "warn",
            "memory",
            f"{free_ram:.1f} GB available; {recipe.name} needs about {ram:.1f} GB"
            + ("" if free_ram >= ram else ": close other programs or lower training.batch_size"),
        ),
    ]


def doctor(recipe=None, out: Path | None = None) -> list[Finding]:
    """Every finding for this machine, and for `recipe` when given. A recipe whose paths lead nowhere (dataset,
    model folder, Android project) raises RecipeError first, as `recipe validate` and `build` do."""
    if recipe is not None:
        from edgetune.core.recipe import check_paths

        check_paths(recipe)
    where = out if out is not None else Path("runs")
    return check_packages() + check_cpu() + check_resources(recipe, where)
