"""quantize.auto: an accuracy budget that picks the int8 build. Each candidate is built, measured against the fp32
ONNX model on a selection split made from the training set (never on the held-out split, which stays for
reporting: choosing on it would make its figures a second training signal), and timed (interleaved rounds,
fresh processes, as `bench` times); the fastest that keeps verify's int8 budgets on the selection split wins.
Candidates within the timing noise of the fastest count as equally fast and the earlier one in CANDIDATES wins,
so the same data and seed pick the same build.

The selection split: SELECT_COPIES altered copies of each training text (words dropped, masked or swapped, as
compress.augment makes them, with a seed of its own), labelled as their source. They are texts no stage trained
on, drawn from the training distribution, and there are several times as many of them as held-out rows, so
one flipped text moves a figure less."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgetune.core.artifacts import OnnxModel
from edgetune.core.errors import CheckFailed
from edgetune.core.recipe import QuantizeConfig
from edgetune.engines.onnxfile import describe_onnx
from edgetune.engines.verify import compare, holds


@dataclass(frozen=True)
class Candidate:
    name: str
    mode: str  # dynamic | static
    per_channel: bool
    head_fp32: bool = False  # the classifier head and pooler (the last layers, most sensitive) stay in float


CANDIDATES = [  # in order of preference when equally fast
    Candidate("dynamic per-channel", "dynamic", True),
    Candidate("dynamic per-tensor", "dynamic", False),
    Candidate("dynamic per-channel, head fp32", "dynamic", True, head_fp32=True),
    Candidate("static QDQ per-channel", "static", True),
]
SEQ = 32  # the length candidates are timed at (batch 1)
TIE = 0.05  # timing differences below this share (or the measured spread) count as noise
SELECT_COPIES = 2  # altered copies of each training text in the selection split
SELECT_SEED = 7_919  # their seed: other copies than compress.augment's (seed = training.seed)


def selection_split(train: list[dict], seed: int, mask_token: str | None) -> list[dict]:
    """The rows candidates are chosen on: SELECT_COPIES altered copies of each training text (module docstring)."""
    from edgetune.engines.compress.augment import augment_examples

    return augment_examples(train, SELECT_COPIES, seed + SELECT_SEED, mask_token)[len(train) :]


def head_nodes(path: Path) -> list[str]:
    """The MatMul/Gemm nodes of the classification head and pooler."""
    import onnx

    graph = onnx.load(path, load_external_data=False).graph
    return [
        n.name
        for n in graph.node
        if n.op_type in ("MatMul", "Gemm") and any(k in n.name.lower() for k in ("classifier", "pooler", "score"))
    ]


@dataclass(frozen=True)
class Selection:
    """What the search measures candidates with (the quantize stage builds it from the task and the recipe)."""

    examples: list[dict]  # the selection split (selection_split)
    heldout: list[dict]  # reported beside the choice, never read by it
    evaluate: Callable[[Path, list[dict]], tuple[np.ndarray, dict]]  # an ONNX file on examples: outputs, metrics
    gates: Callable[[dict, dict], list[tuple[str, float, float, str]]]  # (fp32 metrics, int8 metrics): the int8 gates
    calibration: list[dict]  # static candidates' calibration inputs
    timing_feeds: dict[str, np.ndarray]  # batch 1 x SEQ inputs every candidate is timed on
    what: str  # how the selection split was made, for the notes


def search(
    fp32: OnnxModel,
    out: Path,
    selection: Selection,
    quantize_cfg: QuantizeConfig,
    threads: int,
    runs: int,
    weights: tuple[bool, str],
    log: Callable[[str], None] = lambda s: None,
) -> OnnxModel:
    """Build, measure and time every candidate into out/candidates/; copy the chosen one to out/model_int8.onnx.
    `weights`: the int8 weight range (edgetune.engines.int8.reduce_range's answer), the same for every candidate.
    A candidate passes when every gate `selection.gates` returns holds. CheckFailed when none passes."""
    from edgetune.core.recipe import BenchmarkConfig
    from edgetune.engines.bench.run import bench
    from edgetune.engines.quantize import INT8_NAME, quantize_int8

    sel = selection
    log(f"quantize: choosing on {len(sel.examples)} altered copies of the training texts (not the held-out split)")
    ref, ref_metrics = sel.evaluate(fp32.path, sel.examples)
    _, heldout_ref = sel.evaluate(fp32.path, sel.heldout)
    rows, models = [], []
    for c in CANDIDATES:
        folder = out / "candidates" / c.name.replace(" ", "_").replace(",", "")
        folder.mkdir(parents=True)
        cfg = quantize_cfg.model_copy(update={"mode": c.mode, "per_channel": c.per_channel})
        exclude = head_nodes(fp32.path) if c.head_fp32 else []
        log(f"quantize: candidate {c.name} ...")
        m = quantize_int8(fp32, cfg, folder, sel.calibration, weights, exclude)
        got, metrics = sel.evaluate(m.path, sel.examples)
        measured = {**metrics, **compare(ref, got)}
        heldout = sel.evaluate(m.path, sel.heldout)[1]["accuracy"]
        gates = sel.gates(ref_metrics, measured)
        row = {
            "name": c.name,
            "accuracy": float(metrics["accuracy"]),
            "accuracy_drop": float(ref_metrics["accuracy"] - metrics["accuracy"]),
            "top1_agreement": measured["top1_agreement"],
            "mean_cosine": measured["mean_cosine"],
            # reported beside the choice, never read by it
            "heldout_accuracy": float(heldout),
            "heldout_accuracy_drop": float(heldout_ref["accuracy"] - heldout),
            "size_bytes": m.size_bytes,
            "excluded_nodes": exclude,
            "passed": all(holds(value, threshold, op) for _, value, threshold, op in gates),
        }
        rows.append(row)
        models.append(m)
    cfg = BenchmarkConfig(threads=threads, sequence_lengths=[SEQ], warmup=20, runs=max(60, runs // 2), rounds=3)
    timed = bench(models, cfg, inputs={SEQ: sel.timing_feeds}, log=log)
    for row, t in zip(rows, timed.results):
        row.update(p50_ms=t["p50_ms"], spread=t["spread"], round_p50_ms=t["round_p50_ms"])
    chosen = choose(rows)
    if chosen is None:
        best = max(rows, key=lambda x: x["top1_agreement"])
        raise CheckFailed(
            f"quantize.auto: no int8 candidate keeps verify's budgets (best: {best['name']}, accuracy drop "
            f"{best['accuracy_drop']:.4f}, top-1 agreement {best['top1_agreement']:.4f})"
        )
    m = models[rows.index(chosen)]
    shutil.copy2(m.path, out / INT8_NAME)
    for f in m.path.parent.iterdir():  # tokenizer and config travel with the model
        if f.is_file() and f.suffix != ".onnx":
            shutil.copy2(f, out / f.name)
    notes = {
        **m.notes,
        "auto": {
            "chosen": chosen["name"],
            "chosen_on": {
                "rows": len(sel.examples),
                "what": sel.what,
                "fp32_accuracy": float(ref_metrics["accuracy"]),
            },
            "timed_at": {"seq": SEQ, "batch": 1, "threads": cfg.threads, "rounds": cfg.rounds},
            "noise": timed.noise,
            "candidates": rows,
        },
    }
    return describe_onnx(out / INT8_NAME, "int8", notes)


def choose(rows: list[dict]) -> dict | None:
    """The fastest passing candidate; those within the noise of it (TIE, or the rows' measured spread, plus the
    timer's jitter) are ties, won by the earliest in CANDIDATES order."""
    from edgetune.runner import MIN_SPREAD_MS

    passing = [row for row in rows if row["passed"]]
    if not passing:
        return None
    fastest = min(row["p50_ms"] for row in passing)
    noise = max([TIE] + [row["spread"] for row in passing])
    # differences under the timer's jitter (MIN_SPREAD_MS) are ties too
    return next(row for row in passing if row["p50_ms"] <= fastest * (1 + noise) + MIN_SPREAD_MS)
