"""report.md, report.json and latency.png from records built here (issue 14 point 6): figures that were never
measured are not shown as measured, column headers say what they hold, one format per kind of figure, the
fine-tune time agrees with the epoch rows after a resume, and the plot names the run and each model's figures."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from edgetune.core.artifacts import Adapter, Benchmark, Check, MergedModel, OnnxModel, Quantized, Verification
from edgetune.report.markdown import _devices_markdown
from edgetune.report.write import report

MB = 1_000_000


def _parity(accuracy: float, diff: float, cosine: float, agreement: float, **more: float) -> dict:
    return {
        "max_abs_diff": diff,
        "mean_abs_diff": diff / 10,
        "min_cosine": cosine,
        "mean_cosine": 0.9999,
        "top1_agreement": agreement,
        **more,
    }


def _records(root: Path, chat: bool = False, epoch_seconds=(144.75, 156.12), session=None) -> dict:
    """The records of a finished build: classification (accuracy) or, with `chat`, causal-lm (JSON exact match)."""
    metric = "json_exact_match" if chat else "accuracy"
    epochs = [
        {"epoch": i + 1, "loss": 1.0 / (i + 1), f"eval_{'perplexity' if chat else 'accuracy'}": 0.9, "seconds": s}
        for i, s in enumerate(epoch_seconds)
    ]
    if session is not None:
        epochs = [{**e, "session": n} for e, n in zip(epochs, session)]
    models = {
        "pytorch_fp32": {metric: 0.9444444444444444},
        "pytorch_base": {metric: 0.11666666666666667},
        "onnx_fp32": {metric: 0.9444444444444444, **_parity(0.944, 6.67572021484375e-06, 0.99999999999, 1.0)},
        "onnx_int8": {metric: 0.9444444444444444, **_parity(0.944, 1.2117881774902344, 0.96846019742, 0.98888888)},
    }
    if chat:
        for m in models.values():
            m["perplexity"], m["tokens"] = 1.0278854370117188, 3093
    checks = [Check("verify[onnx_int8]", "top1_agreement", 0.9888888888888889, 0.98, ">=", True)]
    onnx = dict(sha256="0" * 64, inputs=["input_ids", "attention_mask"], outputs=["logits"])
    if chat:
        rows = [
            {
                "model": name,
                "threads": threads,
                "seq_len": 64,
                "ttft_ms": ttft,
                "first_ms": ttft,
                "prefill_tokens_per_s": 64 / ttft * 1000,
                "decode_tokens_per_s": tps,
                "decode_speedup_vs_baseline": tps / 27.0,
                "p50_ms": 1000 / tps,
                "p50_ratio_to_baseline": 27.0 / tps,
                "throughput_per_s": tps,
            }
            for name, threads, ttft, tps in [("pytorch_fp32", 2, 129.7234, 27.0), ("onnx_int8@1t", 1, 62.6512, 127.6)]
        ]
        bench = Benchmark(
            kind="decode",
            results=rows,
            models={
                r["model"]: {"load_seconds": 0.1612, "peak_rss_mb": 269.9453125, "size_bytes": 201970901} for r in rows
            },
            settings={"batch_size": 1, "warmup": 1, "runs": 5},
            machine={"cpu": "AMD EPYC", "cores": 2, "threads": 2, "onnxruntime": "1.32.0", "torch": "2.13.0+cpu"},
        )
    else:
        rows = [
            {
                "model": name,
                "seq_len": seq,
                "p50_ms": p50,
                "p90_ms": p50 * 1.1,
                "p99_ms": p50 * 1.5,
                "mean_ms": p50,
                "throughput_per_s": 1000 / p50,
                "first_ms": p50 * 3.123,
                "p50_ratio_to_baseline": p50 / base,
            }
            for name, seq, p50, base in [
                ("pytorch_fp32", 16, 14.57409849990654, 14.57409849990654),
                ("onnx_int8", 16, 1.125890500134119, 14.57409849990654),
            ]
        ]
        bench = Benchmark(
            kind="latency",
            results=rows,
            models={
                "pytorch_fp32": {"load_seconds": 3.6812, "peak_rss_mb": 458.50390625, "size_bytes": 90883360},
                "onnx_int8": {"load_seconds": 0.1277, "peak_rss_mb": 114.78125, "size_bytes": 22982411},
            },
            settings={"batch_size": 1, "warmup": 20, "runs": 300},
            machine={"cpu": "AMD EPYC", "cores": 2, "threads": 2, "onnxruntime": "1.32.0", "torch": "2.13.0+cpu"},
        )
    return {
        "finetune": Adapter(
            path=root / "finetune" / "adapter",
            epochs=epochs,
            eval_metrics={"accuracy": 0.9},
            trainable_params=816012,
            total_params=23533848,
            train_examples=660,
            eval_examples=180,
        ),
        "merge": MergedModel(
            path=root / "merge" / "model",
            merge_max_abs_diff=9.33e-15,
            eval_metrics={metric: 0.9444444444444444},
            size_bytes=90883360,
        ),
        "export": OnnxModel(path=root / "export" / "model.onnx", precision="fp32", size_bytes=90898954, **onnx),
        "quantize": Quantized(
            [OnnxModel(path=root / "quantize" / "model_int8.onnx", precision="int8", size_bytes=22982411, **onnx)]
        ),
        "verify": Verification(
            passed=True, checks=checks, models=models, rows=180, details_path=root / "verify" / "diff.json"
        ),
        "bench": bench,
    }


def _write(root: Path, records: dict, finetune_seconds: float = 689.18, name: str = "intent-minilm") -> tuple:
    out = root / "report"
    out.mkdir(parents=True, exist_ok=True)
    task = "causal-lm" if records["bench"].kind == "decode" else "classification"
    seconds = {"finetune": finetune_seconds}
    report(records, seconds, {"name": name, "task": task, "model": "m"}, out, root, devices=[])
    return (out / "report.md").read_text(), json.loads((out / "report.json").read_text())


def _table(md: str, header_has: str) -> list[dict[str, str]]:
    """The rows of the first table in `md` whose header line contains `header_has`, as header -> cell."""
    lines = md.splitlines()
    i = next(n for n, ln in enumerate(lines) if ln.startswith("|") and header_has in ln)
    head = [c.strip() for c in lines[i].strip("|").split("|")]
    rows = []
    for ln in lines[i + 2 :]:
        if not ln.startswith("|"):
            break
        rows.append(dict(zip(head, (c.strip() for c in ln.strip("|").split("|")))))
    return rows


# -- parity figures that were never measured ----------------------------------------------------------------
def test_reference_rows_show_no_parity_figures(tmp_path):
    md, doc = _write(tmp_path, _records(tmp_path))
    rows = {r["model"]: r for r in _table(md, "| max abs diff |")}
    for name in ("pytorch_fp32", "pytorch_base"):
        assert [rows[name][c] for c in ("max abs diff", "min cosine", "top-1 agreement")] == ["—"] * 3, rows[name]
    assert rows["pytorch_base"]["accuracy"] == "0.117"
    assert rows["onnx_int8"]["max abs diff"] == "1.21" and rows["onnx_int8"]["top-1 agreement"] == "0.989"
    assert "—: not measured" in md
    # report.json: null, not 0 or 1, and the verify record as it was (no figure invented)
    summary = doc["summary"]["models"]
    for name in ("pytorch_fp32", "pytorch_base"):
        ev = summary[name]["eval"]
        assert ev["max_abs_diff"] is None and ev["min_cosine"] is None and ev["top1_agreement"] is None, ev
    assert summary["onnx_int8"]["eval"]["max_abs_diff"] == pytest.approx(1.2117881774902344)
    assert doc["stages"]["verify"]["models"]["pytorch_base"] == {"accuracy": 0.11666666666666667}


# -- the task metric's column -------------------------------------------------------------------------------
@pytest.mark.parametrize("chat", [False, True])
def test_metric_column_says_what_the_task_measures(tmp_path, chat):
    md, _ = _write(tmp_path, _records(tmp_path, chat=chat))
    label = "JSON exact match" if chat else "accuracy"
    assert f"| model | {label} | size MB |" in md  # summary
    assert f"| model | {label} | max abs diff |" in md  # verify
    assert "accuracy / exact match" not in md
    assert ("exact match" in md) == chat


def test_metric_column_of_a_text_response_task_is_perplexity(tmp_path):
    records = _records(tmp_path, chat=True)
    models = {n: {k: v for k, v in m.items() if k != "json_exact_match"} for n, m in records["verify"].models.items()}
    records["verify"] = Verification(passed=True, checks=[], models=models, rows=180)
    md, _ = _write(tmp_path, records)
    assert "| model | perplexity | max abs diff |" in md
    rows = {r["model"]: r for r in _table(md, "| max abs diff |")}
    assert rows["pytorch_base"]["perplexity"] == "1.028"


# -- first-call and first-token columns ---------------------------------------------------------------------
def test_first_call_column_is_named_and_explained(tmp_path):
    md, _ = _write(tmp_path, _records(tmp_path))
    assert "| first call ms |" in md and "first ms" not in md
    legend = next(ln for ln in md.splitlines() if ln.startswith("p50/p90/p99 ms:"))
    assert "first call ms: the model's first call at that length, before warm-up" in legend


def test_first_token_column_is_named_and_explained(tmp_path):
    md, _ = _write(tmp_path, _records(tmp_path, chat=True))
    assert "| first token ms |" in md and "TTFT" not in md
    assert any(
        ln.startswith("First token ms: from handing over the prompt to the first new token") for ln in md.splitlines()
    )


def test_device_tables_name_and_explain_the_first_call():
    device = {
        "cpu": "ARMv8",
        "arch": "aarch64",
        "emulated": False,
        "cores": 4,
        "ram_mb": 4096,
        "os": "Debian",
        "kernel": "6.1",
        "python": "3.11",
    }
    d = {
        "ssh": "pi@board",
        "device": device,
        "bundle": {"target": "linux-arm64", "model_sha256": "ab" * 32},
        "settings": {"threads": 4, "warmup": 2, "runs": 10},
        "results": [
            {
                "model": "device_int8",
                "seq_len": 16,
                "p50_ms": 12.3456,
                "p90_ms": 13.0,
                "p99_ms": 14.0,
                "throughput_per_s": 81.0,
                "first_ms": 40.111,
            }
        ],
        "models": {"device_int8": {"peak_rss_mb": 218.4}},
    }
    md = "\n".join(_devices_markdown([d]))
    assert "| first call ms |" in md and "first ms" not in md
    assert "| device_int8 | 16 | 12.35 | 13.00 | 14.00 | 81.0 | 40.11 | 218.4 |" in md
    assert "first call ms: the model's first call at that length, before warm-up" in md


# -- fine-tune time after a resume --------------------------------------------------------------------------
def test_finetune_time_agrees_with_the_epoch_rows_after_a_resume(tmp_path):
    # 6512 s of epochs, 3665 s of them in this session: the stage resumed after the first two epochs
    records = _records(tmp_path, epoch_seconds=(1400.0, 1447.0, 1800.0, 1865.0))
    md, _ = _write(tmp_path, records, finetune_seconds=3665.2)
    line = next(ln for ln in md.splitlines() if ln.startswith("660 training rows"))
    assert "4 epochs (training and held-out evaluation) 6512.0 s over more than one session" in line
    assert "this session's finetune stage 3665.2 s (resumed from a checkpoint)" in line
    assert sum(float(r["seconds"]) for r in _table(md, "| epoch | loss |")) == pytest.approx(6512.0)


def test_finetune_sessions_are_counted_when_the_rows_say_them(tmp_path):
    records = _records(tmp_path, epoch_seconds=(1400.0, 1447.0, 1800.0, 1865.0), session=(1, 1, 2, 2))
    md, _ = _write(tmp_path, records, finetune_seconds=3665.2)
    assert "6512.0 s over 2 sessions; this session's finetune stage 3665.2 s" in md


def test_finetune_time_of_one_session(tmp_path):
    md, _ = _write(tmp_path, _records(tmp_path), finetune_seconds=310.0)
    assert "2 epochs (training and held-out evaluation) 300.9 s; the finetune stage 310.0 s with loading and" in md
    assert "session" not in md


# -- one format per kind of figure --------------------------------------------------------------------------
FORMATS = {  # column header -> the form of its cells
    "accuracy": r"\d\.\d{3}",
    "JSON exact match": r"\d\.\d{3}",
    "eval_accuracy": r"\d\.\d{3}",
    "eval_perplexity": r"\d\.\d{3}",
    "top-1 agreement": r"\d\.\d{3}",
    "min cosine": r"\d\.\d{6}",
    "size MB": r"\d+\.\d",
    "peak RSS MB": r"\d+\.\d",
    "size vs ONNX fp32": r"\d+\.\d\dx",
    "p50 vs PyTorch": r"\d+\.\d\dx",
    "decode vs PyTorch": r"\d+\.\d\dx",
    "p50 ms": r"\d+\.\d\d",
    "p90 ms": r"\d+\.\d\d",
    "p99 ms": r"\d+\.\d\d",
    "first call ms": r"\d+\.\d\d",
    "first token ms": r"\d+\.\d\d",
    "p50 ms seq 16": r"\d+\.\d\d \(\d+\.\d\dx\)",
    "ms per new token, prompt 64": r"\d+\.\d\d \(\d+\.\d\dx\)",
    "items/s": r"\d+\.\d",
    "prefill tok/s": r"\d+\.\d",
    "decode tok/s": r"\d+\.\d",
    "seconds": r"\d+\.\d",
    "load s": r"\d+\.\d",
}


@pytest.mark.parametrize("chat", [False, True])
def test_each_kind_of_figure_has_one_format(tmp_path, chat):
    md, _ = _write(tmp_path, _records(tmp_path, chat=chat))
    seen = set()
    for n, ln in enumerate(lines := md.splitlines()):
        if not (ln.startswith("| ") and n + 1 < len(lines) and lines[n + 1].startswith("|---")):
            continue
        for row in _table("\n".join(lines[n:]), ln):
            for col, cell in row.items():
                if col in FORMATS and cell != "—":
                    assert re.fullmatch(FORMATS[col], cell), (col, cell)
                    seen.add(col)
    assert {"size MB", "peak RSS MB", "seconds", "load s", "min cosine", "top-1 agreement"} <= seen
    assert ({"first token ms", "decode tok/s"} if chat else {"p50 ms", "first call ms", "p50 ms seq 16"}) <= seen
    # sizes in the prose: one decimal; the same model's size is the same figure everywhere
    assert "weights 90.9 MB" in md and "fp32, 90.9 MB" in md and "90.88" not in md


# -- latency.png ----------------------------------------------------------------------------------------------
def _texts(fig) -> tuple[str, list[str]]:
    ax = fig.axes[0]
    return ax.get_title(), [t.get_text() for t in ax.get_legend().get_texts()]


def test_latency_plot_names_the_run_and_each_models_accuracy_and_size(tmp_path):
    import matplotlib.pyplot as plt

    from edgetune.report.plots import latency_figure

    md, doc = _write(tmp_path, _records(tmp_path), name="intent-minilm")
    assert (tmp_path / "report" / "latency.png").stat().st_size > 1000 and "![latency](latency.png)" in md
    fig = latency_figure(_records(tmp_path)["bench"], doc["summary"]["models"], "intent-minilm")
    title, legend = _texts(fig)
    plt.close(fig)
    assert "intent-minilm" in title
    assert legend == ["pytorch_fp32 (accuracy 0.944, 90.9 MB)", "onnx_int8 (accuracy 0.944, 23.0 MB)"]


def test_latency_plot_of_a_chat_model_labels_each_thread_count(tmp_path):
    import matplotlib.pyplot as plt

    from edgetune.report.plots import latency_figure

    records = _records(tmp_path, chat=True)
    _, doc = _write(tmp_path, records, name="home-assistant-smollm2")
    fig = latency_figure(records["bench"], doc["summary"]["models"], "home-assistant-smollm2")
    title, legend = _texts(fig)
    ylabel = fig.axes[0].get_ylabel()
    plt.close(fig)
    assert "home-assistant-smollm2" in title and "ms per new token" in ylabel
    assert legend == [
        "pytorch_fp32 (JSON exact match 0.944, 90.9 MB)",
        "onnx_int8@1t (JSON exact match 0.944, 23.0 MB)",
    ]
