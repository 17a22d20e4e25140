"""quantize.auto for decoders: search int4 layouts under verify's int4 budgets, keep the fastest that holds them.

A layout is one onnxruntime-genai model-builder int4 export of the merged model with some options: the block
size (128/64/32, and 16 with lm_head int8), MatMulNBits' accuracy level (4: int8 activations, the fast CPU
kernel; 0: float compute), the rounding (the builder's symmetric round-to-nearest, asymmetric, or k_quant; or GPTQ
by Olive's pass, symmetric, calibrated on the training rows, where Olive is installed: edgetune.engines.gptq), the
output projection and embedding table (lm_head int4 with the table sharing its int4 weights; lm_head int4 with a
table of its own; lm_head int8), and which decoder layers stay int8: none, the N most sensitive (an eighth, a
quarter, half of them) by a measured sensitivity, or the builder's own 'mixed_layers' preset (llama.cpp's rule:
first/last eighth and every third layer).

Per-layer sensitivity (measured, not guessed): on a few selection rows, in PyTorch, the mean KL divergence of the
next-token distribution at the response positions when only that layer's linears are rounded as MatMulNBits
rounds them (edgetune.engines.int4.fake_int4), from the float model's. The layers that move the output most are
the ones kept in int8 (the builder's per-node overrides; onnxruntime-genai 0.18 and later).

Each layout is built, measured on the selection rows (a seeded sample of the training rows: never the held-out
split, which verify reports on) against the fp32 ONNX export (perplexity ratio, and the task's metric: JSON exact
match drop, which must hold the budget by more than its standard error on those paired rows: drop_se), and every
measured layout is timed (decode tokens/s and prefill, each in a fresh process, rounds
interleaved, as `bench` times decoders). The fastest decoder within the budgets is kept; layouts within the timing
noise of it are ties, won by the first in the list (smaller, simpler).

Cost is bounded three ways: a layout that is at least as slow as one that already passed by construction (smaller
blocks, more int8, float compute, zero points (asymmetric, k_quant) where it had none) is not built ('pruned');
perplexity is measured first (one forward pass per row) and a layout over the perplexity budget is not decoded;
decoding stops as soon as the misses already exceed the exact-match budget."""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgetune.core.artifacts import OnnxModel
from edgetune.core.errors import CheckFailed
from edgetune.core.rundir import atomic_write_json
from edgetune.engines.builder import MODEL_NAME, build_genai, drop_default_zero_points, half_embeddings
from edgetune.engines.onnxfile import describe_onnx
from edgetune.engines.verify import holds

SELECT_ROWS = 96  # training rows the layouts are measured on
SENSITIVITY_ROWS = 16  # of those, the rows per-layer sensitivity is measured on (one forward pass per layer)
SELECT_SEED = 104_729  # the sample's seed offset (from training.seed): other rows than any other split's
CHUNK = 16  # rows decoded at a time, between checks whether a layout can still pass
TIE = 0.05  # decode-speed differences below this share (or the measured spread) count as noise
SLOWER = 1.5  # a layout whose perplexity pass takes this many times the fp32 model's is not decoded
HEADS = {"shared": 0, "int4": 1, "int8": 2}  # lm_head / table layouts, cheapest first
# roundings whose file carries zero points (the kernels' slower asymmetric path): GPTQ symmetric against
# asymmetric, b32 + lm_head int8 + 4 sensitive layers int8, decoded at 178.9 vs 161.9 tok/s (SmolLM2-135M, AMD
# EPYC Zen 3, 2 threads, 5 interleaved rounds)
ZERO_POINTS = {"rtn": False, "gptq": False, "asymmetric": True, "k_quant": True}
BLOCKS = (128, 64, 32, 16)


@dataclass(frozen=True)
class Layout:
    block: int
    level: int = 4  # MatMulNBits accuracy_level
    rounding: str = "rtn"  # rtn (symmetric round-to-nearest) | asymmetric | k_quant | gptq (Olive, symmetric)
    head: str = "shared"  # shared: lm_head int4, table shares it | int4: table of its own | int8: lm_head int8
    int8_layers: int = 0  # the N most sensitive decoder layers in int8 (measured)
    mixed: bool = False  # the builder's 'mixed_layers' preset in int8

    @property
    def name(self) -> str:
        parts = [f"b{self.block}"]
        if self.level != 4:
            parts.append(f"level {self.level}")
        if self.rounding != "rtn":
            parts.append(self.rounding)
        parts.append({"shared": "", "int4": "own table", "int8": "lm_head int8"}[self.head])
        if self.int8_layers:
            parts.append(f"{self.int8_layers} sensitive layer{'s' if self.int8_layers > 1 else ''} int8")
        if self.mixed:
            parts.append("builder's mixed layers int8")
        return ", ".join(p for p in parts if p)

    def at_least_as_slow_as(self, other: Layout) -> bool:
        """True when this layout does all the work `other` does and more (or the same): smaller or equal blocks,
        float compute where `other` has int8, more of the model in int8, zero points where `other` has none (how
        the weights were rounded does not change the kernel: GPTQ runs as fast as round-to-nearest).
        Such a layout cannot decode faster than `other` (blocks: benchmarks/int4_layouts.py measured 32 within
        0-4% of 64 at one token, never faster)."""
        return (
            self.block <= other.block
            and (self.level == other.level or other.level == 4)
            and HEADS[self.head] >= HEADS[other.head]
            and self.int8_layers >= other.int8_layers  # the N most sensitive: a larger N holds a smaller one's
            and (self.mixed or not other.mixed)
            and ZERO_POINTS[self.rounding] >= ZERO_POINTS[other.rounding]  # the roundings run the same kernels
        )


def layouts(num_layers: int, trained_block: int | None, per_node: bool, gptq: bool = False) -> list[Layout]:
    """The candidates, in order of preference when equally fast. `trained_block`: the block size the model was
    trained to be rounded in (training.int4_aware_epochs), then the only one tried, with the rounding trained
    against; `per_node`: the builder takes per-node overrides (the measured sensitive layers) and pre-quantized
    checkpoints; `gptq`: Olive is installed (GPTQ layouts)."""
    few, more, half = (max(1, math.ceil(num_layers / d)) for d in (8, 4, 2))
    if trained_block is not None:
        b = trained_block
        out = [
            Layout(b),
            Layout(b, head="int8"),
            Layout(b, head="int8", int8_layers=few),
            Layout(b, head="int8", int8_layers=more),
            Layout(b, head="int8", int8_layers=half),
            Layout(b, head="int8", mixed=True),
            Layout(b, level=0),
        ]
    else:
        out = [
            Layout(128),
            Layout(64),
            Layout(32),
            Layout(64, rounding="asymmetric", head="int4"),
            Layout(32, rounding="asymmetric", head="int4"),
            Layout(32, rounding="k_quant", head="int4"),
            Layout(64, head="int8"),
            Layout(32, head="int8"),
            # GPTQ (Olive, calibrated on the training rows; symmetric: the zero points Olive leaves out are left
            # out of the file too) before round-to-nearest with int8 layers: of a given layout it keeps more, so
            # once one passes the round-to-nearest layouts as slow as it are pruned, not built. On the chat
            # recipe without int4-aware epochs (96 carved rows, fp32 0.760; held out: PyTorch 0.825) b32 +
            # lm_head int4 (GPTQ too) + 8 sensitive layers int8 kept 0.750 (held out 0.817; round-to-nearest
            # with lm_head int8 + 8 layers 0.708), decoding 1.07x the README's hand-found layout; with the
            # builder's mixed layers instead 0.719, 1.15x (SmolLM2-135M, AMD EPYC Zen 3, 2 threads, 7 rounds)
            Layout(32, rounding="gptq", head="int4", mixed=True),
            Layout(32, rounding="gptq", head="int4", int8_layers=more),
            Layout(32, rounding="gptq", head="int8", int8_layers=few),
            Layout(32, rounding="gptq", head="int8", int8_layers=more),
            Layout(32, head="int8", int8_layers=few),
            Layout(32, head="int8", int8_layers=more),
            Layout(32, head="int8", int8_layers=half),
            Layout(32, head="int8", mixed=True),
            Layout(32, rounding="asymmetric", head="int8", int8_layers=more),
            # blocks of 16, with the layouts that came closest at 32: on the chat recipe without int4-aware epochs
            # (96 rows not trained on, fp32 0.760) b32 + lm_head int8 + 8 sensitive layers kept 0.708 of exact
            # match, b16 the same 0.729 (SmolLM2-135M, measured; held out it then lost 0.075: README, quantize.auto)
            Layout(16, head="int8"),
            Layout(16, head="int8", int8_layers=few),
            Layout(16, head="int8", int8_layers=more),
            # float compute with int8 layers is left out: MatMulNBits' 8-bit weights at accuracy level 0 decoded
            # at 1.4 tok/s against 34.6 at level 4 (SmolLM2-135M, AMD EPYC Zen 3, 2 threads)
            Layout(32, level=0),
        ]
    keep = [x for x in out if (per_node or not x.int8_layers) and (gptq and per_node or x.rounding != "gptq")]
    # a small model has as few sensitive layers in its eighth as in its quarter: each layout once
    return list(dict.fromkeys(keep))


def builder_options(layout: Layout, layer_nodes: dict[int, list[str]], ranking: list[int]) -> tuple[dict, dict | None]:
    """The builder's --extra_options (on top of BUILD_OPTIONS) and --target_options for `layout`. `layer_nodes`:
    each decoder layer's MatMul node names as the builder names them; `ranking`: the layers, most sensitive first."""
    extra: dict = {"block_size": layout.block, "accuracy_level": layout.level}
    if layout.rounding == "gptq":  # Olive rounds the layers (int8 ones too) and an int4 lm_head; the
        # builder quantizes an int8 lm_head
        extra.update({"shared_embeddings": "false"} if layout.head != "shared" else {})
        if layout.head == "int8":
            extra["matmul_mixed_precision"] = "last_matmul:int8"
        return extra, None
    if layout.rounding == "asymmetric":
        extra["is_symmetric"] = "false"
    elif layout.rounding == "k_quant":
        extra["algo_config"] = "k_quant"
    if layout.head != "shared":
        extra["shared_embeddings"] = "false"
    presets = [p for p, on in (("last_matmul", layout.head == "int8"), ("mixed_layers", layout.mixed)) if on]
    if not layout.int8_layers:
        if presets:
            extra["matmul_mixed_precision"] = ",".join(f"{p}:int8" for p in presets)
        return extra, None
    # with per-node overrides the builder takes its whole override list from them (a matmul_mixed_precision
    # option beside them is dropped: found by tests/test_int4_auto.py), so the presets go in the list too
    names = [n for i in sorted(ranking[: layout.int8_layers]) for n in layer_nodes[i]]
    overrides = [{"match": {"name": n}, "type": "int8"} for n in names]
    overrides += [{"match": {"preset": p}, "type": "int8"} for p in presets]
    return extra, {"quant_config": {"weights": {"overrides": overrides}}}


def builder_takes_node_overrides() -> bool:
    """The model builder has per-node quantization overrides (onnxruntime-genai 0.18 and later)."""
    try:
        from onnxruntime_genai.models.quantization.quant_config import Override  # noqa: F401
    except ImportError:
        return False
    return True


def layer_nodes(path: Path) -> dict[int, list[str]]:
    """Each decoder layer's quantized MatMul nodes in a builder int4 file, named as the builder's overrides name
    them (without the _Q4/_Q8 suffix the quantizer adds)."""
    import re

    import onnx

    out: dict[int, list[str]] = {}
    for n in onnx.load(path, load_external_data=False).graph.node:
        m = re.match(r"/model/layers\.(\d+)/.*/MatMul(_Q\d+)?$", n.name)
        if n.op_type == "MatMulNBits" and m:
            out.setdefault(int(m.group(1)), []).append(n.name.rsplit("_Q", 1)[0])
    return out


def layer_sensitivity(model: Any, examples: list[dict], block: int) -> list[float]:
    """Per decoder layer of a PyTorch causal LM: the mean KL divergence (nats) of the next-token distribution at
    the response positions of `examples` (token ids and labels, IGNORE outside responses) when only that layer's
    linear weights are rounded to int4 in blocks of `block`, from the float model's."""
    import torch

    from edgetune.engines.int4 import fake_int4

    layers = _decoder_layers(model)

    def log_probs() -> list[Any]:
        out = []
        with torch.no_grad():
            for ex in examples:
                ids = torch.tensor([ex["ids"]])
                labels = torch.tensor(ex["labels"])
                keep = torch.nonzero(labels[1:] != -100).flatten()
                logits = model(input_ids=ids).logits[0, :-1][keep]
                out.append(torch.log_softmax(logits.float(), -1))
        return out

    ref = log_probs()
    scores = []
    for layer in layers:
        linears = [m for m in layer.modules() if isinstance(m, torch.nn.Linear)]
        saved = [m.weight.detach().clone() for m in linears]
        with torch.no_grad():
            for m in linears:
                m.weight.copy_(fake_int4(m.weight, block))
        got = log_probs()
        with torch.no_grad():
            for m, w in zip(linears, saved):
                m.weight.copy_(w)
        kl = [float((r.exp() * (r - g)).sum(-1).mean()) for r, g in zip(ref, got)]
        scores.append(float(np.mean(kl)))
    return scores


def _decoder_layers(model: Any) -> list[Any]:
    """The decoder's layer list: the longest nn.ModuleList of the model (model.layers in LLaMA-family models)."""
    import torch

    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    return list(max(lists, key=len)) if lists else []


@dataclass(frozen=True)
class LMSelection:
    """What the search measures layouts with (the quantize stage builds it from the task and the recipe)."""

    examples: list[dict]  # the selection rows
    evaluate: Callable[[Path, list[dict], bool], dict]  # a genai folder on rows (decoding or not): its metrics
    gates: Callable[[dict, dict], list[tuple[str, float, float, str]]]  # (fp32 metrics, int4 metrics): int4 gates
    load_torch: Callable[[], Any]  # the merged model in PyTorch, for per-layer sensitivity
    timing: Any  # BenchmarkConfig the layouts are timed with
    vocab: int  # the decoder's vocabulary (timing prompts are random ids below it)
    what: str  # how the rows were chosen, for the notes
    num_layers: int  # the decoder's layers (the int8 layer counts are shares of them)
    metric: str | None = None  # the task's exact-match metric (json_exact_match), when the responses have one
    budget: dict = field(default_factory=dict)  # {"max_drop": ..., "max_perplexity_ratio": ...}
    calibration: list[str] = field(default_factory=list)  # training rows as text, for GPTQ (never the selection)
    calibration_len: int = 256  # GPTQ's calibration sequence length (tokens)


def search_int4(
    merged: Path,
    fp32: Path,
    out: Path,
    sel: LMSelection,
    embeddings: str,
    trained_block: int | None,
    log: Callable[[str], None] = lambda s: None,
    figures: Path | None = None,
) -> OnnxModel:
    """Build, measure and time the int4 layouts into out/candidates/; move the chosen one to out/int4/.
    `merged`: the merged transformers folder; `fp32`: the fp32 genai folder (the reference); `embeddings`:
    quantize.embeddings (a table of its own is stored in fp16 unless fp32). CheckFailed when none passes, after
    writing every layout's figures to `figures` (JSON, as the chosen model's notes['auto'] has them)."""
    from edgetune.engines import gptq

    started = time.monotonic()
    per_node = builder_takes_node_overrides()
    with_gptq = gptq.available() and bool(sel.calibration) and trained_block is None
    log(f"quantize.auto: measuring int4 layouts on {sel.what}; verify's held-out split stays apart")
    if trained_block is None and not gptq.available():
        log("quantize.auto: GPTQ layouts left out: Olive is not installed (pip install 'edgetune[gptq]')")
    ref = _measure(fp32, sel, None)
    log(f"quantize.auto: fp32 reference: {_figures(ref, sel.metric)}")
    rows: list[dict] = []
    candidates = out / "candidates"
    nodes: dict[int, list[str]] = {}
    ranking: list[int] = []
    sensitivity: list[float] = []
    for layout in layouts(sel.num_layers, trained_block, per_node, with_gptq):
        if layout.int8_layers and not ranking:
            t0 = time.monotonic()
            block = trained_block or 32
            sensitivity = layer_sensitivity(sel.load_torch(), sel.examples[:SENSITIVITY_ROWS], block)
            ranking = sorted(range(len(sensitivity)), key=lambda i: -sensitivity[i])
            log(
                f"quantize.auto: per-layer sensitivity ({time.monotonic() - t0:.0f} s), layers most sensitive "
                "first: " + ", ".join(f"{i} ({sensitivity[i]:.2g})" for i in ranking)
            )
        passing = [r for r in rows if r["status"] == "passed"]
        beaten = next((r for r in passing if layout.at_least_as_slow_as(Layout(**r["layout"]))), None)
        row: dict[str, Any] = {"name": layout.name, "layout": asdict(layout)}
        if beaten is not None:
            rows.append({**row, "status": "pruned", "why": f"at least as slow as {beaten['name']}, which passed"})
            continue
        folder = candidates / layout.name.replace(", ", "_").replace(" ", "-").replace("'", "")
        folder.mkdir(parents=True)
        extra, target = builder_options(layout, nodes, ranking)
        t0 = time.monotonic()
        log(f"quantize.auto: building {layout.name} ...")
        source = merged
        if layout.rounding == "gptq":
            int8 = gptq.layer_linears(merged, sorted(ranking[: layout.int8_layers]))
            int8 += gptq.mixed_linears(merged) if layout.mixed else []
            source = gptq.gptq(
                merged,
                folder / "gptq",
                layout.block,
                sel.calibration,
                sel.calibration_len,
                sorted(set(int8)),
                lm_head=layout.head == "int4",
            )
        build_genai(source, folder, "int4", extra, target=target)
        shutil.rmtree(folder / "gptq", ignore_errors=True)
        if layout.rounding == "gptq":  # the zero points filled in for the builder go: the symmetric kernels run
            drop_default_zero_points(folder / MODEL_NAME)
        if embeddings != "fp32":
            half_embeddings(folder / MODEL_NAME)
        if not nodes:
            nodes = layer_nodes(folder / MODEL_NAME)
        model = describe_onnx(folder / MODEL_NAME, "int4", {"layout": layout.name, **extra})
        measured = _measure(folder, sel, ref)
        gates = sel.gates(ref, measured)
        if "exact_match_se" in measured:  # the drop must hold the budget by more than its noise (drop_se)
            drop = ref[sel.metric] - measured[sel.metric]
            gates.append(
                (f"{sel.metric}_drop_plus_se", drop + measured["exact_match_se"], sel.budget["max_drop"], "<=")
            )
        passed = all(holds(v, t, op) for _, v, t, op in gates) and not measured.get("stopped_early")
        rows.append(
            {
                **row,
                "status": "passed" if passed else "failed",
                "builder_options": extra,
                "int8_nodes": len((target or {}).get("quant_config", {}).get("weights", {}).get("overrides", [])),
                "size_bytes": model.size_bytes,
                "perplexity": measured["perplexity"],
                "perplexity_ratio": measured["perplexity"] / ref["perplexity"],
                "exact_match": measured.get(sel.metric) if sel.metric else None,
                "exact_match_drop": (ref[sel.metric] - measured[sel.metric])
                if sel.metric and sel.metric in measured
                else None,
                "exact_match_se": measured.get("exact_match_se"),
                "rows_decoded": measured.get("rows_decoded", 0),
                "stopped_early": measured.get("stopped_early", ""),
                "gates": [[g, v, t, op] for g, v, t, op in gates],
                "path": str(folder),
                "seconds": time.monotonic() - t0,
            }
        )
        log(f"quantize.auto: {layout.name}: {_figures(measured, sel.metric)}: {rows[-1]['status']}")
    measured_rows = [r for r in rows if r["status"] in ("passed", "failed")]
    if not any(r["status"] == "passed" for r in measured_rows):  # nothing to choose between: no timing
        best = max(
            measured_rows,
            key=lambda r: (-(r["exact_match_drop"] or 0), -r["perplexity_ratio"]),
        )
        shutil.rmtree(candidates)  # nothing to ship: the files go, their figures stay
        gptq_hint = "" if with_gptq or trained_block else "; GPTQ layouts need Olive (pip install 'edgetune[gptq]')"
        where = ""
        if figures is not None:
            atomic_write_json(figures, _auto_notes(None, rows, sel, ref, sensitivity, time.monotonic() - started))
            where = f"; every layout's figures: {figures}"
        raise CheckFailed(
            f"quantize.auto: no int4 layout keeps verify's int4 budgets on the selection rows (best: {best['name']}"
            f", {_gate_text(best)}); train against the rounding (training.int4_aware_epochs: 2) or ship int8 "
            f"(quantize.precisions: [int8]){gptq_hint}{where}"
        )
    _time(measured_rows, sel, log)
    chosen = choose(measured_rows)
    assert chosen is not None
    wall = time.monotonic() - started
    dest = out / "int4"
    Path(chosen["path"]).rename(dest)
    shutil.rmtree(candidates)  # the others' figures are in the notes; their files are not kept
    notes = {
        "quantizer": "onnxruntime-genai model builder (MatMulNBits), layout chosen by quantize.auto",
        **chosen["builder_options"],
        "auto": _auto_notes(chosen["name"], rows, sel, ref, sensitivity, wall),
    }
    log(f"quantize.auto: kept {chosen['name']} ({wall / 60:.1f} min for the search)")
    return describe_onnx(dest / MODEL_NAME, "int4", notes)


def _auto_notes(
    chosen: str | None, rows: list[dict], sel: LMSelection, ref: dict, sensitivity: list[float], wall: float
) -> dict:
    """The search's record (notes['auto'] of the kept model): every layout's figures, what they were measured
    on, the budgets, the sensitivities and the wall time; `chosen` None when no layout passed."""
    return {
        "kind": "int4",
        "chosen": chosen,
        "chosen_on": {"rows": len(sel.examples), "what": sel.what, "fp32": _public(ref, sel.metric)},
        "timed_at": {
            "seq": sel.timing.sequence_lengths[0],
            "new_tokens": sel.timing.new_tokens,
            "batch": 1,
            "threads": sel.timing.threads,
            "rounds": sel.timing.rounds,
        },
        "budget": sel.budget,
        "sensitivity": sensitivity,
        "search_seconds": wall,
        "candidates": [{k: v for k, v in r.items() if k != "path"} for r in rows],
    }


def _measure(folder: Path, sel: LMSelection, ref: dict | None) -> dict:
    """Perplexity on every row, then greedy decoding in chunks; against `ref` (the fp32 figures) decoding stops
    once the layout is over the perplexity budget, or has already missed more rows than the exact-match budget
    allows, and is skipped when the perplexity pass ran SLOWER times longer than the fp32 model's (such a file
    cannot be the int4 worth shipping). Metrics as the task reports them, plus rows_decoded, stopped_early (why it
    stopped, or '') and pass_seconds (the perplexity pass's time)."""
    t0 = time.monotonic()
    m = sel.evaluate(folder, sel.examples, False)
    seconds = time.monotonic() - t0
    out = {
        "perplexity": m["perplexity"],
        "tokens": m["tokens"],
        "rows_decoded": 0,
        "stopped_early": "",
        "pass_seconds": seconds,
    }
    n = len(sel.examples)
    why = ""
    if ref is not None and m["perplexity"] / ref["perplexity"] > sel.budget["max_perplexity_ratio"]:
        why = "over the perplexity budget: not decoded"
    elif ref is not None and seconds > SLOWER * ref["pass_seconds"] + 2.0:  # 2 s: timer and load jitter
        why = f"its perplexity pass took {seconds:.0f} s, the fp32 model's {ref['pass_seconds']:.0f} s: not decoded"
    if why:
        out["stopped_early"] = why
        if sel.metric:
            out[sel.metric] = 0.0
        return out
    if not sel.metric:
        return out
    hits, done, per_row = 0.0, 0, []
    allowed = None if ref is None else (ref[sel.metric] - sel.budget["max_drop"]) * n  # fewest hits that pass
    for start in range(0, n, CHUNK):
        rows = sel.examples[start : start + CHUNK]
        m = sel.evaluate(folder, rows, True)
        hits += m[sel.metric] * len(rows)
        per_row += m.get(f"{sel.metric}_rows", [])
        done += len(rows)
        if allowed is not None and hits + (n - done) < allowed - 1e-9:
            out["stopped_early"] = f"after {done} rows: too many misses to keep the exact-match budget"
            break
    out[sel.metric] = hits / n if not out["stopped_early"] else hits / done
    out["rows_decoded"] = done
    if len(per_row) == done == n:
        out[f"{sel.metric}_rows"] = per_row
        if ref is not None and len(ref.get(f"{sel.metric}_rows", [])) == n:
            out["exact_match_se"] = drop_se(ref[f"{sel.metric}_rows"], per_row)
    return out


def drop_se(ref: list[float], got: list[float]) -> float:
    """The standard error of an exact-match drop measured on paired rows (the same rows, the fp32 model's hits
    `ref` and a layout's `got`): sqrt(sum of squared per-row differences) / n. Only rows where one of the two
    hits and the other misses count: the drop of a layout that changes few answers is known more closely than
    that of one that gains some and loses more. With about 100 rows a drop within one such error of the budget
    can land on either side of it on another sample: on the chat recipe without int4-aware epochs the layout
    kept on a 0.031 drop on the selection rows dropped 0.075 held out (README, quantize.auto)."""
    n = len(ref)
    return math.sqrt(sum((a - b) ** 2 for a, b in zip(ref, got))) / n if n else 0.0


def _time(rows: list[dict], sel: LMSelection, log: Callable[[str], None]) -> None:
    """Decode tokens/s and prefill ms of each measured layout, in interleaved rounds (bench's method)."""
    from edgetune.engines.bench.run import time_decoders

    models = [(r["name"], Path(r["path"]) / MODEL_NAME, r["size_bytes"]) for r in rows]
    timed = time_decoders(models, sel.timing, sel.vocab, log)
    for r, t in zip(rows, timed):
        r.update(
            decode_tokens_per_s=t["decode_tokens_per_s"],
            prefill_ms=t["ttft_ms"],
            spread=t["spread"],
            round_decode_tokens_per_s=[1000 / p for p in t["round_p50_ms"]],
        )


def choose(rows: list[dict]) -> dict | None:
    """The passing layout that decodes fastest; those within the noise of it (TIE, or the rows' measured spread)
    are ties, won by the earliest in the list."""
    passing = [r for r in rows if r["status"] == "passed"]
    if not passing:
        return None
    fastest = max(r["decode_tokens_per_s"] for r in passing)
    noise = max([TIE] + [r["spread"] for r in passing])
    return next(r for r in passing if r["decode_tokens_per_s"] >= fastest * (1 - noise))


def _figures(m: dict, metric: str | None) -> str:
    s = f"perplexity {m['perplexity']:.4f}"
    if metric and metric in m:
        s += f", exact match {m[metric]:.3f}"
    if m.get("stopped_early"):
        s += f" ({m['stopped_early']})"
    return s


def _gate_text(row: dict) -> str:
    return ", ".join(f"{g} {v:.4g} (must be {op} {t:g})" for g, v, t, op in row["gates"] if not holds(v, t, op)) or (
        row.get("stopped_early") or "gates held"
    )


def _public(m: dict, metric: str | None) -> dict:
    return {k: m[k] for k in ("perplexity", metric) if k and k in m}
