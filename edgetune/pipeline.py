"""build(): validate, then run the stages in order in a run directory, skipping finished ones."""

from __future__ import annotations

import dataclasses
import functools
import shutil
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from .artifacts import (Adapter, Benchmark, MergedModel, OnnxModel, Package, Quantized, Report, Verification,
                        from_json, rebase, to_json)
from .errors import CheckFailed, EdgetuneError, RecipeError
from .families import AdapterPlan, ModelInfo, check_exportable, model_info, plan_adapter
from .recipe import Recipe, parse_recipe
from .rundir import RunDir, StageEntry, config_key
from .sources import ModelSource, resolve_model_source
from .tasks import Task, TaskData, get_task

STAGES = ("finetune", "merge", "export", "quantize", "verify", "package", "bench", "report")
RUN_RECIPE = "recipe.json"
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
    package: Package | None = None


@dataclass(frozen=True)
class Prepared:
    """Everything validated before stage one: the recipe, its task, data, model source and what it adapts."""

    recipe: Recipe
    task: Task
    data: TaskData
    source: ModelSource
    info: ModelInfo
    adapter: AdapterPlan


def prepare(recipe: Recipe) -> Prepared:
    """Resolve the model source and read and validate the dataset; raise RecipeError on bad input."""
    task = get_task(recipe.task)
    if task.exporter == "optimum" and recipe.quantize.precisions != ["int8"]:
        raise RecipeError(f"quantize.precisions: the {recipe.task} task supports [int8] only")
    tr, q = recipe.training, recipe.quantize
    if tr.int4_aware_epochs:
        if tr.int4_aware_epochs > tr.epochs:
            raise RecipeError(f"training.int4_aware_epochs: {tr.int4_aware_epochs} is more than training.epochs "
                              f"({tr.epochs})")
        if "int4" not in q.precisions or q.int4_keep_lm_head or q.int4_int8_layers:
            raise RecipeError("training.int4_aware_epochs: needs int4 in quantize.precisions, with "
                              "int4_keep_lm_head and int4_int8_layers false (it trains for an all-int4 model)")
        if recipe.lora.method != "lora":
            raise RecipeError(f"training.int4_aware_epochs: trains LoRA layers against int4 rounding, so it needs "
                              f"lora.method: lora (not {recipe.lora.method})")
    remote = recipe.model.trust_remote_code
    source = resolve_model_source(recipe.model.source, recipe.base_dir)
    info = model_info(source.path, recipe.task, remote)
    check_exportable(info, recipe.task)
    adapter = plan_adapter(info, recipe.task, recipe.lora, remote)
    data = task.load_data(recipe.dataset, recipe.base_dir, source, tr.max_length)
    data = dataclasses.replace(data, warnings=[*data.warnings, *task.check_model(info, source, recipe.package, remote)])
    return Prepared(recipe, task, data, source, info, adapter)


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
            if (upstream_of_target and self.run.stage_dir(name).is_dir()) or self.run.is_valid(name, key):
                if upstream_of_target and self.run.hash_outputs(name) != entry.outputs:
                    self.log(f"{name}: files changed since it ran; using them as they are (build would redo it)")
                try:
                    record = from_json(cls, entry.record, self.run.root)
                except (KeyError, TypeError):  # written by an older edgetune with another record layout
                    record = None
                if record is not None:
                    self.log(f"{name}: up to date, skipped")
                    self.result.skipped.append(name)
                    return record
                if upstream_of_target:
                    raise EdgetuneError(f"{self.run.root}: the {name} stage was written by another edgetune "
                                        f"version; run `edgetune build` to redo it")
        self.log(f"{name}: running")
        t0 = time.perf_counter()
        self.run.drop_entry(name)
        scratch = self.run.scratch_dir(name)
        record = fn(scratch)
        record = rebase(record, scratch, self.run.stage_dir(name))
        seconds = time.perf_counter() - t0
        # entry first, then the rename (see RunDir.commit_dir): no final folder the manifest does not know
        self.run.write_entry(name, StageEntry(key, to_json(record, self.run.root),
                                              self.run.hash_outputs(name, scratch), round(seconds, 3), self.versions))
        self.run.commit_dir(name)
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

        atomic_write_json(run.root / RUN_RECIPE,
                          {**recipe.model_dump(mode="json"), "base_dir": str(recipe.base_dir.resolve())})
        stage = _Runner(run, force_from, until, log)
        remote = recipe.model.trust_remote_code
        if remote:
            log("warning: model.trust_remote_code is true: Python code shipped with the model will run")
        for w in p.data.warnings:
            log(f"warning: {w}")
        r, task, data = p.recipe, p.task, p.data
        source_fp = p.source.fingerprint()
        # loaded lazily: only the stages that run need the base weights
        base = functools.cache(lambda: _dequantized_once(run, p.source, source_fp, task, remote, log))
        tr = r.training
        ckpt_root = run.root / "finetune.ckpt"
        int4_block = r.quantize.int4_block_size if tr.int4_aware_epochs else None
        int4_key = [int4_block] if int4_block else []  # keys of runs without it stay as they were

        def do_finetune(tmp: Path) -> Adapter:
            from .stages.finetune import finetune

            ckpt = ckpt_root / config_key(lora_key, tr.model_dump(), data.fingerprint, *int4_key)[:16]
            rec = finetune(base(), data, r.lora, p.adapter, tr, task, tmp, ckpt, remote, progress, log, int4_block)
            shutil.rmtree(ckpt_root, ignore_errors=True)
            return rec

        # method: lora is left out of the key, so runs from before methods existed stay valid
        lora_key = r.lora.model_dump(exclude={"method"} if r.lora.method == "lora" else None)
        adapter = stage("finetune", Adapter, [r.task, r.model.source, lora_key, tr.model_dump(), *int4_key],
                        [data.fingerprint, source_fp], do_finetune)
        if last < 1:
            return stage.result

        def do_merge(tmp: Path) -> MergedModel:
            from .stages.merge import merge

            return merge(adapter, base(), data, task, tmp, r.verify.merge_max_abs_diff,
                         tr.batch_size * 2, tr.max_length, remote, r.verify.merge_check_rows)

        merged = stage("merge", MergedModel, [r.verify.merge_max_abs_diff, r.verify.merge_check_rows, tr.max_length],
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
                          base=base().path)

        verification = stage("verify", Verification, [r.verify.model_dump(), tr.max_length],
                             ["merge", "export", "quantize", data.fingerprint], do_verify)
        stage.result.verification = verification
        if until == "verify" and not verification.passed:
            raise _gate_error(verification)
        if last < 5:
            return stage.result

        if r.package.android is not None or r.package.linux or until == "package":
            stage.result.package = _package_stage(stage, run, p, merged, verification, onnx_models, log)
        if last < 6:
            return stage.result

        def do_bench(tmp: Path) -> Benchmark:
            from .stages.bench import bench

            return bench(onnx_models, r.benchmark, tmp, merged, task.name, data.labels, log)

        stage.result.benchmark = stage("bench", Benchmark, r.benchmark.model_dump(),
                                       ["merge", "export", "quantize"], do_bench)
        if last < 7:
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


def _dequantized_once(run: RunDir, source: ModelSource, fingerprint: str, task: Task, remote: bool,
                      log: Callable[[str], None]) -> ModelSource:
    """A GGUF source dequantized once into the run dir (base/, safetensors), so that finetune, merge and the
    base-model score in verify each load it in seconds instead of converting the GGUF again."""
    if not (source.path.is_file() and source.path.suffix == ".gguf"):
        return source
    from .rundir import replace_dir

    folder, stamp = run.root / "base", "source.sha256"
    if (folder / stamp).is_file() and (folder / stamp).read_text().strip() == fingerprint:
        return dataclasses.replace(source, path=folder)
    log(f"base: dequantizing {source.path.name} once into {folder}")
    tmp = run.root / "base.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    task.load_model(source.path, None, remote).save_pretrained(tmp)
    task.load_tokenizer(source.path, remote).save_pretrained(tmp)
    (tmp / stamp).write_text(fingerprint)
    replace_dir(tmp, folder)
    return dataclasses.replace(source, path=folder)


def _package_stage(stage: _Runner, run: RunDir, p: Prepared, merged: MergedModel, verification: Verification,
                   onnx_models: list[OnnxModel], log: Callable[[str], None]) -> Package | None:
    """Package the smallest quantized model for the Android demo; install it into the app when the recipe says."""
    from .stages import package as pkg

    r = p.recipe
    if not verification.passed:
        log("package: skipped, a verification gate failed")
        return None
    model = onnx_models[-1]  # int8 for encoders; the last precision (int4 in the default LLM recipe) for decoders

    def do_package(tmp: Path) -> Package:
        record = pkg.package(model, merged, verification, p.data, p.task, r.package, r.name, tmp,
                             r.training.max_length, getattr(r.dataset, "system_prompt", None))
        for arch in r.package.linux:  # device bundles for Linux boards: package/linux-<arch>/
            from .device.bundle import write_bundle

            tok = p.task.load_tokenizer(merged.path) if p.task.name == "classification" else None
            where = write_bundle(tmp, f"linux-{arch}", tok, r.benchmark, r.verify.greedy_tokens,
                                 r.verify.greedy_min_agreement)
            log(f"package: device bundle for linux-{arch} in {run.stage_dir('package') / where.name}")
        return record

    # keys of runs without device bundles stay as they were
    config = {k: v for k, v in r.package.model_dump().items() if k != "android" and (k != "linux" or v)}
    bundles = []
    if r.package.linux:  # a new run_device.py (an edgetune upgrade) rewrites the bundles too
        from .device.bundle import runner_sha256

        bundles = [r.benchmark.model_dump(), r.verify.greedy_tokens, r.verify.greedy_min_agreement, runner_sha256()]
    record = stage("package", Package, [config, r.training.max_length, *bundles], ["merge", "quantize", "verify"],
                   do_package)
    if r.package.android is not None:
        android = r.path(r.package.android)
        where = pkg.assets_dir(android, p.task.name)
        if pkg.check_package(where, model.sha256, run_golden=False):
            where = pkg.install(record.path, android, p.task.name)
            log(f"package: installed into {where}")
        else:
            log(f"package: {where} is up to date")
    return record


def check_installed(recipe: Recipe, out: Path | None = None) -> Path:
    """Check the package installed in the recipe's Android project against its run; CheckFailed if stale."""
    from .stages import package as pkg

    if recipe.package.android is None:
        raise RecipeError("package.android: no Android project given (use --android)")
    run_dir = Path(out) if out is not None else Path("runs") / recipe.name
    entry = RunDir(run_dir).entry("quantize")
    if entry is None:
        raise RecipeError(f"{run_dir}: the run has no quantized model yet (run edgetune build)")
    expect = entry.record["models"][-1]["sha256"]
    where = pkg.assets_dir(recipe.path(recipe.package.android), get_task(recipe.task).name)
    problems = pkg.check_package(where, expect)
    if problems:
        raise CheckFailed("; ".join(problems))
    return where


def load_run_recipe(run_dir: Path) -> Recipe:
    """The recipe a run directory was last built with (from its recipe.json)."""
    path = Path(run_dir) / RUN_RECIPE
    if not path.is_file():
        raise RecipeError(f"{run_dir}: not an edgetune run directory (no {RUN_RECIPE})")
    import json

    data = json.loads(path.read_text())
    base = Path(data.pop("base_dir", "."))
    return parse_recipe(data, str(path), base)


def _gate_error(v: Verification, report: Report | None = None) -> CheckFailed:
    failures = "; ".join(c.describe() for c in v.failures())
    where = f"; details: {v.details_path}" + (f"; report: {report.markdown_path}" if report else "")
    return CheckFailed(f"{failures}{where}")
