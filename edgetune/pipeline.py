"""build(): validate, then run the stages in order in a run directory, skipping finished ones."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from .artifacts import Adapter, Benchmark, MergedModel, OnnxModel, Quantized, Report, Verification, from_json, rebase, to_json
from .errors import CheckFailed, EdgetuneError, RecipeError
from .recipe import Recipe
from .rundir import RunDir, StageEntry, config_key
from .sources import ModelSource, resolve_model_source
from .tasks import Task, TaskData, get_task

STAGES = ("finetune", "merge", "export", "quantize", "verify", "bench", "report")
_PACKAGES = ("edgetune", "torch", "transformers", "peft", "optimum-onnx", "onnx", "onnxruntime")


def _versions() -> dict[str, str]:
    out = {}
    for p in _PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "not installed"
    return out


@dataclass
class BuildResult:
    run_dir: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    verification: Verification | None = None
    benchmark: Benchmark | None = None
    report: Report | None = None


@dataclass(frozen=True)
class Prepared:
    """Everything validated before stage one: the recipe, its task, data and model source."""

    recipe: Recipe
    task: Task
    data: TaskData
    source: ModelSource


def prepare(recipe: Recipe) -> Prepared:
    """Resolve the model source and read and validate the dataset; raise RecipeError on bad input."""
    task = get_task(recipe.task)
    if task.exporter == "optimum" and recipe.quantize.precisions != ["int8"]:
        raise RecipeError(f"quantize.precisions: the {recipe.task} task supports [int8] only")
    source = resolve_model_source(recipe.model.source, recipe.base_dir)
    data = task.load_data(recipe.dataset, recipe.base_dir, source)
    return Prepared(recipe, task, data, source)


class _Runner:
    """Runs or reuses one stage at a time and records it in the manifest."""

    def __init__(self, run: RunDir, force_from: int | None, target: str | None, log: Callable[[str], None]) -> None:
        self.run, self.force_from, self.target, self.log = run, force_from, target, log
        self.result = BuildResult(run.root)
        self.versions = _versions()

    def __call__(self, name: str, cls: type, config: Any, inputs: list[str], fn: Callable[[Path], Any]) -> Any:
        idx = STAGES.index(name)
        fingerprints = [self.run.hash_outputs(i) if i in STAGES else i for i in inputs]
        key = config_key(name, config, fingerprints)
        entry = self.run.entry(name)
        forced = (self.force_from is not None and idx >= self.force_from) or name == self.target
        if not forced and entry is not None:
            upstream_of_target = self.target is not None and STAGES.index(self.target) > idx
            if upstream_of_target or self.run.is_valid(name, key):
                if upstream_of_target and self.run.hash_outputs(name) != entry.outputs:
                    self.log(f"{name}: files changed since it ran; using them as they are (build would redo it)")
                self.log(f"{name}: up to date, skipped")
                self.result.skipped.append(name)
                return from_json(cls, entry.record, self.run.root)
        self.log(f"{name}: running")
        t0 = time.perf_counter()
        self.run.drop_entry(name)
        scratch = self.run.scratch_dir(name)
        record = fn(scratch)
        final = self.run.commit_dir(name)
        record = rebase(record, scratch, final)
        seconds = time.perf_counter() - t0
        self.run.write_entry(name, StageEntry(key, to_json(record, self.run.root), self.run.hash_outputs(name),
                                              round(seconds, 3), self.versions))
        self.log(f"{name}: done in {seconds:.1f} s")
        self.result.ran.append(name)
        return record


def build(
    recipe: Recipe,
    out: Path | None = None,
    from_stage: str | None = None,
    force: bool = False,
    until: str | None = None,
    log: Callable[[str], None] = lambda s: None,
    progress: bool = True,
) -> BuildResult:
    """Run the stages of `recipe` into `out` (default runs/<name>), reusing finished ones.

    `until` runs the stages up to and including that one and always reruns it, using earlier results as they are.
    A failed verification gate raises CheckFailed after the report is written.
    """
    for s in (from_stage, until):
        if s is not None and s not in STAGES:
            raise EdgetuneError(f"unknown stage '{s}' (stages: {', '.join(STAGES)})")
    p = prepare(recipe)
    out = Path(out) if out is not None else Path("runs") / recipe.name
    force_from = 0 if force else (STAGES.index(from_stage) if from_stage else None)
    last = STAGES.index(until) if until else len(STAGES) - 1
    with RunDir(out) as run:
        from .rundir import atomic_write_json

        atomic_write_json(run.root / "recipe.json", recipe.model_dump(mode="json"))
        stage = _Runner(run, force_from, until, log)
        r, task, data, source = p.recipe, p.task, p.data, p.source
        remote = r.model.trust_remote_code
        tr = r.training
        ckpt_root = run.root / "finetune.ckpt"

        def do_finetune(tmp: Path) -> Adapter:
            from .stages.finetune import finetune

            ckpt = ckpt_root / config_key(r.lora.model_dump(), tr.model_dump(), data.fingerprint)[:16]
            rec = finetune(source, data, r.lora, tr, task, tmp, ckpt, remote, progress, log)
            shutil.rmtree(ckpt_root, ignore_errors=True)
            return rec

        adapter = stage("finetune", Adapter, [r.task, r.model.source, r.lora.model_dump(), tr.model_dump()],
                        [data.fingerprint, source.fingerprint()], do_finetune)
        if last < 1:
            return stage.result

        def do_merge(tmp: Path) -> MergedModel:
            from .stages.merge import merge

            return merge(adapter, source, data, task, tmp, r.verify.merge_max_abs_diff,
                         tr.batch_size * 2, tr.max_length, remote)

        merged = stage("merge", MergedModel, [r.verify.merge_max_abs_diff, tr.max_length],
                       ["finetune", data.fingerprint], do_merge)
        if last < 2:
            return stage.result

        def do_export(tmp: Path) -> OnnxModel:
            from .stages.export import export

            return export(merged, r.export, task, tmp)

        fp32 = stage("export", OnnxModel, r.export.model_dump(), ["merge"], do_export)
        if last < 3:
            return stage.result

        def do_quantize(tmp: Path) -> OnnxModel:
            from .stages.quantize import quantize

            tok = task.load_tokenizer(merged.path) if r.quantize.mode == "static" else None
            return quantize(fp32, merged, r.quantize, task, tmp, data.train, tok, tr.max_length)

        quantized = stage("quantize", Quantized, [r.quantize.model_dump(), data.fingerprint], ["merge", "export"],
                          do_quantize)
        onnx_models = [fp32, *quantized.models]
        if last < 4:
            return stage.result

        def do_verify(tmp: Path) -> Verification:
            from .stages.verify import verify

            return verify(merged, onnx_models, r.verify, data, task, tmp, tr.max_length, threads=r.benchmark.threads,
                          base=source.path)

        verification = stage("verify", Verification, [r.verify.model_dump(), tr.max_length],
                             ["merge", "export", "quantize", data.fingerprint], do_verify)
        stage.result.verification = verification
        if until == "verify" and not verification.passed:
            raise _gate_error(verification)
        if last < 5:
            return stage.result

        def do_bench(tmp: Path) -> Benchmark:
            from .stages.bench import bench

            return bench(onnx_models, r.benchmark, tmp, merged, task.name, data.labels, log)

        stage.result.benchmark = stage("bench", Benchmark, r.benchmark.model_dump(),
                                       ["merge", "export", "quantize"], do_bench)
        if last < 6:
            return stage.result

        def do_report(tmp: Path) -> Report:
            from .stages.report import report

            stages = {s: {"record": e.record, "seconds": e.seconds}
                      for s in STAGES[:-1] if (e := run.entry(s)) is not None}
            return report(stages, {"name": r.name, "task": r.task, "model": r.model.source}, tmp)

        stage.result.report = stage("report", Report, time.time(), STAGES[:-1], do_report)
        if not verification.passed:
            raise _gate_error(verification, stage.result.report)
        return stage.result


def _gate_error(v: Verification, report: Report | None = None) -> CheckFailed:
    failures = "; ".join(c.describe() for c in v.failures())
    where = f"; details: {v.details_path}" + (f"; report: {report.markdown_path}" if report else "")
    return CheckFailed(f"{failures}{where}")
