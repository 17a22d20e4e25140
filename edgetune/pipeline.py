"""build(): validate, then run the stages in order in a run directory, skipping finished ones."""

from __future__ import annotations

import dataclasses
import errno
import functools
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from edgetune.build import BuildContext, Stage
from edgetune.core.artifacts import (
    AdapterSet,
    Benchmark,
    Package,
    Quantized,
    Report,
    Verification,
    from_json,
    rebase,
    to_json,
)
from edgetune.core.data import carve
from edgetune.core.errors import CheckFailed, EdgetuneError, RecipeError
from edgetune.core.families import AdapterPlan, ModelInfo, model_info, plan_adapter
from edgetune.core.memory import TreePeak, release_memory
from edgetune.core.progress import on_terminal, quiet_library_bars
from edgetune.core.recipe import Recipe, parse_recipe
from edgetune.core.rundir import RunDir, StageEntry, config_key
from edgetune.core.sources import ModelSource, resolve_model_source
from edgetune.engines.int4_auto import SELECT_ROWS, SELECT_SEED
from edgetune.engines.training import Team
from edgetune.tasks import Task, TaskData, get_task

# The stages of a build, in order, each with a line saying what it does: the one list of stage names (the CLI's
# per-stage commands, their help and build's --from choices come from it; each task runs those it lists).
STAGE_HELP = {
    "finetune": "Fine-tune the base model with LoRA on the recipe's data and evaluate it each epoch.",
    "train-adapters": "causal-lm with an adapters: list: train each task's adapter on its own dataset (against "
    "the int4 base with int4-aware epochs); one whose data and settings are unchanged is kept.",
    "merge": "Merge the adapter into the base weights; fail if merged outputs differ from the adapter model's.",
    "compress": "Make a smaller student from the merged model (the recipe's compress: section) and distill it.",
    "export": "Export the merged model to ONNX: encoders with torch's exporter, or optimum-onnx where installed "
    "(dynamic batch and sequence axes), decoders with onnxruntime-genai's model builder (KV cache).",
    "quantize": "Quantize the exported model: int8 with ONNX Runtime (encoders); int4 and/or int8 weight-only "
    "(MatMulNBits) with onnxruntime-genai's model builder (decoders), as quantize.precisions says.",
    "verify": "Compare PyTorch and every ONNX model on the held-out split; exit 1 if a gate fails.",
    "adapters": "causal-lm with an adapters: list: build the base model once (int4) and each task as an "
    ".onnx_adapter over it; verify each against its own PyTorch model (exit 1 if a gate fails).",
    "package": "Package the quantized model for the Android demo app (package.android) and Linux boards "
    "(package.linux), checked in ONNX Runtime.",
    "bench": "Benchmark PyTorch eager fp32 and every ONNX model on this CPU, in interleaved rounds.",
    "report": "Write report.json, report.md and latency.png from the finished stages.",
}
STAGES = tuple(STAGE_HELP)
RUN_RECIPE = "recipe.json"
IDENTITY = "identity"  # recipe.json's record of the project a run directory was built for (see _identity)
_PACKAGES = (
    "edgetune",
    "torch",
    "transformers",
    "peft",
    "optimum-onnx",
    "onnx",
    "onnxruntime",
    "onnxruntime-genai",
)


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
    rank: int = 0  # a launch's rank: only rank 0 builds; the others trained with it and report nothing


@dataclass(frozen=True)
class Prepared:
    """Everything validated before stage one: the recipe, its task, data, model source and what it adapts."""

    recipe: Recipe
    task: Task
    data: TaskData
    source: ModelSource
    info: ModelInfo
    adapter: AdapterPlan
    adapter_data: dict[str, TaskData] = field(default_factory=dict)  # adapters: entries' own data, by name

    def context(self, run: RunDir, base: Callable[[], ModelSource], **rest: Any) -> BuildContext:
        """The build's context in `run` (`rest`: log, progress, until)."""
        return BuildContext(
            recipe=self.recipe,
            task=self.task,
            data=self.data,
            source=self.source,
            info=self.info,
            adapter=self.adapter,
            adapter_data=self.adapter_data,
            run=run,
            base=base,
            **rest,
        )


def prepare(recipe: Recipe) -> Prepared:
    """Resolve the model source and read and validate the dataset; raise RecipeError on bad input."""
    task = get_task(recipe.task)
    tr, q = recipe.training, recipe.quantize
    if tr.int4_aware_epochs:
        if tr.int4_aware_epochs > tr.epochs:
            raise RecipeError(
                f"training.int4_aware_epochs: {tr.int4_aware_epochs} is more than training.epochs ({tr.epochs})"
            )
        if "int4" not in q.precisions or q.int4_keep_lm_head or q.int4_int8_layers:
            raise RecipeError(
                "training.int4_aware_epochs: needs int4 in quantize.precisions, with "
                "int4_keep_lm_head and int4_int8_layers false (it trains for an all-int4 model)"
            )
        if recipe.lora.method != "lora":
            raise RecipeError(
                f"training.int4_aware_epochs: trains LoRA layers against int4 rounding, so it needs "
                f"lora.method: lora (not {recipe.lora.method})"
            )
    remote = recipe.model.trust_remote_code
    source = resolve_model_source(recipe.model.source, recipe.base_dir)
    info = model_info(source.path, recipe.task, remote)
    stages = task.stages()
    for st in stages:  # what a stage cannot do with this recipe or model, before stage one
        st.check(recipe, info)
    if recipe.compress is not None and "compress" not in {st.name for st in stages}:
        raise RecipeError(f"compress: the {recipe.task} task has no compression stage (classification has)")
    adapter = plan_adapter(info, recipe.task, recipe.lora, remote)
    data = task.load_data(recipe.dataset, recipe.base_dir, source, tr.max_length)
    data = dataclasses.replace(data, warnings=[*data.warnings, *task.check_model(info, source, recipe.package, remote)])
    if recipe.quantize.auto and task.auto_carves_selection:
        data = _carve_selection(data, tr.seed)
    extra = {}
    for i, a in enumerate(recipe.adapters):
        if a.dataset is not None:
            try:
                extra[a.name] = task.load_data(a.dataset, recipe.base_dir, source, tr.max_length)
            except RecipeError as e:
                raise RecipeError(f"adapters[{i}] ({a.name}): {e.message}") from None
            if extra[a.name].chat_template != data.chat_template:
                raise RecipeError(
                    f"adapters[{i}].dataset ({a.name}): its rows are encoded with another chat format than the "
                    f"recipe's dataset, and every adapter shares the base's tokenizer; use the same kind of rows "
                    f"and dataset.chat_template"
                )
            data = dataclasses.replace(
                data, warnings=[*data.warnings, *(f"{a.name}: {w}" for w in extra[a.name].warnings)]
            )
    return Prepared(recipe, task, data, source, info, adapter, extra)


def _carve_selection(data: TaskData, seed: int) -> TaskData:
    """quantize.auto on a decoder: its layout search measures on SELECT_ROWS training rows (at most a fifth) that
    finetune then never trains on; the data's identity says so, so finetune and every stage after it rebuild."""
    train, picked = carve(data.train, SELECT_ROWS, seed + SELECT_SEED)
    if len(picked) < 2:
        raise RecipeError(
            f"quantize.auto: measures layouts on up to a fifth of the training rows, carved out before finetune; "
            f"dataset.train has {len(data.train)} rows, too few (10 or more)"
        )
    fingerprint = hashlib.sha256(json.dumps([data.fingerprint, "selection", SELECT_ROWS, seed]).encode()).hexdigest()
    return dataclasses.replace(data, train=train, selection=picked, fingerprint=fingerprint)


class _Runner:
    """Runs or reuses one stage at a time and records it in the manifest."""

    def __init__(self, ctx: BuildContext, stages: list[Stage], force_from: int | None, lead: _Lead) -> None:
        self.ctx, self.run, self.log, self.lead = ctx, ctx.run, ctx.log, lead
        self.order = [s.name for s in stages]
        self.force_from = force_from
        self.result = BuildResult(ctx.run.root)
        self.versions = _versions()
        self.said_older = False  # the one line saying an older run directory is being rebuilt

    def __call__(self, st: Stage, inputs: dict[str, Any]) -> Any:
        name, ctx, target = st.name, self.ctx, self.ctx.until
        idx = self.order.index(name)
        k = st.key(ctx)
        key = config_key(name, k.version, k.config, [self.run.hash_outputs(n) for n in inputs] + list(k.reads))
        entry = self.run.entry(name)
        forced = (self.force_from is not None and idx >= self.force_from) or name == target
        if not forced and entry is not None:
            upstream_of_target = target is not None and self.order.index(target) > idx
            same = entry.key_version == k.version and self.run.is_valid(name, key)
            if (upstream_of_target and self.run.stage_dir(name).is_dir()) or same:
                if upstream_of_target and self.run.hash_outputs(name) != entry.outputs:
                    self.log(f"{name}: files changed since it ran; using them as they are (build would redo it)")
                elif upstream_of_target and entry.key_version != k.version:
                    self.log(f"{name}: made by another edgetune; using it as it is (build would redo it)")
                try:
                    record = from_json(st.record, entry.record, self.run.root)
                except (KeyError, TypeError):  # written by an older edgetune with another record layout
                    record = None
                if record is not None:
                    self.log(f"{name}: up to date, skipped")
                    self.result.skipped.append(name)
                    return record
                if upstream_of_target:
                    raise EdgetuneError(
                        f"{self.run.root}: the {name} stage was written by another edgetune "
                        f"version; run `edgetune build` to redo it"
                    )
        moved = _moved(entry.versions, self.versions) if entry is not None and not forced else ""
        if moved and entry is not None and entry.key_version == k.version:
            # most often a run directory taken to the other library line (core/lines.py): say why it reruns
            self.log(f"{name}: what it reads changed since it ran with {moved}: running it again")
        if entry is not None and entry.key_version != k.version and not self.said_older:
            self.said_older = True
            self.log(
                f"{name}: made by another edgetune (key version {entry.key_version}, now {k.version}): "
                f"rebuilding it and the stages after it"
            )
        self.log(f"{name}: running")
        t0 = time.perf_counter()
        self.run.drop_entry(name)
        scratch = self.run.scratch_dir(name)
        if st.distributed:  # the other ranks of a launch join it
            self.lead.announce({"stage": name, "inputs": inputs, "base": ctx.base(), "out": scratch})
        # what the stage costs: wall time, and the peak resident memory of this process and all it starts
        with TreePeak() as peak:
            try:
                record = st.run(ctx, inputs, scratch)
            finally:
                release_memory()  # what the stage freed goes back to the system before the next one starts
        record = rebase(record, scratch, self.run.stage_dir(name))
        seconds = time.perf_counter() - t0
        # entry first, then the rename (see RunDir.commit_dir): no final folder the manifest does not know
        self.run.write_entry(
            name,
            StageEntry(
                key,
                to_json(record, self.run.root),
                self.run.hash_outputs(name, scratch),
                round(seconds, 3),
                self.versions,
                k.version,
                peak.peak_mb,
            ),
        )
        self.run.commit_dir(name)
        self.log(f"{name}: done in {seconds:.1f} s, peak memory {peak.peak_mb / 1024:.1f} GiB")
        self.result.ran.append(name)
        return record


def _moved(then: dict[str, str], now: dict[str, str]) -> str:
    """The packages whose version differs between a stage's run and now, as 'transformers 4.57.6 (now 5.25.0)'."""
    return ", ".join(f"{p} {v} (now {now.get(p, 'not installed')})" for p, v in then.items() if now.get(p, v) != v)


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
    if not (progress and on_terminal()):
        quiet_library_bars()
    stages = p.task.stages()
    team = Team(recipe.training.device)
    if not team.is_main:
        return _follow(p, team, out, stages)
    lead = _Lead(team, stages)
    try:
        return _lead(p, out, stages, lead, from_stage, force, until, log, progress)
    finally:
        lead.release()


def _lead(
    p: Prepared,
    out: Path,
    stages: list[Stage],
    lead: _Lead,
    from_stage: str | None,
    force: bool,
    until: str | None,
    log: Callable[[str], None],
    progress: bool,
) -> BuildResult:
    """build() in a plain process, or on rank 0 of a launch."""
    recipe = p.recipe
    names = [st.name for st in stages]
    for s in (from_stage, until):
        if s is not None and s not in names:
            raise RecipeError(f"the {recipe.task} task has no {s} stage (its stages: {', '.join(names)})")
    force_from = 0 if force else (names.index(from_stage) if from_stage else None)
    last = names.index(until) if until else len(stages) - 1
    with RunDir(out) as run:
        from edgetune.core.rundir import atomic_write_json

        identity = _identity(p)
        other = None if force else _other_recipe(run.root, identity)
        if other is not None:
            raise RecipeError(
                f"{out}: this run directory was built from another recipe ({other}); pass --out DIR for a new run "
                f"directory, or `edgetune build --force` to rebuild this one from this recipe"
            )

        atomic_write_json(
            run.root / RUN_RECIPE,
            {**recipe.model_dump(mode="json"), "base_dir": str(recipe.base_dir.resolve()), IDENTITY: identity},
        )
        remote = recipe.model.trust_remote_code
        if remote:
            log("warning: model.trust_remote_code is true: Python code shipped with the model will run")
        for w in p.data.warnings:
            log(f"warning: {w}")
        if p.adapter.inferred:
            log(p.adapter.inferred)
        source_fp = p.source.fingerprint()
        # loaded lazily: only the stages that run need the base weights
        base = functools.cache(lambda: _dequantized_once(run, p.source, source_fp, p.task, remote, log))
        ctx = p.context(run, base, log=log, progress=progress, until=until)
        runner = _Runner(ctx, stages, force_from, lead)
        records: dict[str, Any] = {}
        failure: Exception | None = None
        for st in stages[: last + 1]:
            if failure is not None and (st.after_failure is None or not set(st.after_failure) <= records.keys()):
                continue
            lead.passing(st)
            inputs = {n: records[n] for n in st.needs if n in records}
            why = st.skip(runner.ctx, inputs)
            if why is not None:
                if why:  # "": a stage the recipe does not ask for
                    log(f"{st.name}: skipped, {why}")
                continue
            try:
                records[st.name] = record = runner(st, inputs)
                st.finish(runner.ctx, record)
            except Exception as e:  # noqa: BLE001 - re-raised below, after bench and report of what finished
                if failure is not None:
                    log(f"{st.name}: failed as well: {_message(e)}")
                    continue
                if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise  # a full disk: writing more would fail too
                failure = e
                log(f"{st.name}: failed: {_message(e)}; writing the bench and report of what finished")
                runner.ctx = dataclasses.replace(runner.ctx, stopped=(st.name, _message(e)))
                continue
            if st.name in _RESULT_FIELDS:
                setattr(runner.result, _RESULT_FIELDS[st.name], record)
            gate = _gates(record)
            if gate is not None and not gate.passed and until == st.name:
                raise _gate_error(gate)
        if failure is not None:
            raise _after_failure(failure, records.get("report"))
        for name in ("verify", "adapters"):
            gate = _gates(records.get(name))
            if gate is not None and not gate.passed and "report" in records:
                raise _gate_error(gate, records["report"])
        return runner.result


def _gates(record: Any) -> Verification | None:
    """The verification a stage's record holds (verify's record is one; adapters' carries one), or None."""
    if isinstance(record, Verification):
        return record
    inner = getattr(record, "verification", None)
    return inner if isinstance(inner, Verification) else None


class _Lead:
    """Rank 0's side of a launch with several processes: it tells the other ranks which stage to join (the
    stages marked `distributed`: training) and releases them once no such stage is left."""

    def __init__(self, team: Team, stages: list[Stage]) -> None:
        self.team = team
        self.last = max((i for i, st in enumerate(stages) if st.distributed), default=-1)
        self.order = [st.name for st in stages]
        self.released = team.world == 1

    def announce(self, message: dict) -> None:
        if not self.released:
            self.team.broadcast(message)

    def passing(self, st: Stage) -> None:
        """Called before each stage: past the last distributed one, the other ranks are let go (they would
        otherwise wait, holding memory, until the build ends)."""
        if self.order.index(st.name) > self.last:
            self.release()

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.team.broadcast(None)
            self.team.disband()


def _follow(p: Prepared, team: Team, out: Path, stages: list[Stage]) -> BuildResult:
    """A rank other than 0: run the training stages rank 0 announces, with rank 0's inputs, writing nothing
    (the run directory is not even locked: rank 0 holds it); return when rank 0 lets go."""
    by_name = {st.name: st for st in stages}
    run = RunDir(out)
    while (message := team.broadcast(None)) is not None:
        ctx = p.context(run, functools.partial(lambda source: source, message["base"]), progress=False)
        by_name[message["stage"]].run(ctx, message["inputs"], message["out"])
    team.disband()
    return BuildResult(run.root, rank=team.rank)


# the stages whose records BuildResult carries
_RESULT_FIELDS = {"verify": "verification", "package": "package", "bench": "benchmark", "report": "report"}


def _dequantized_once(
    run: RunDir, source: ModelSource, fingerprint: str, task: Task, remote: bool, log: Callable[[str], None]
) -> ModelSource:
    """A GGUF source dequantized once into the run dir (base/, safetensors), so that finetune, merge and the
    base-model score in verify each load it in seconds instead of converting the GGUF again."""
    if not (source.path.is_file() and source.path.suffix == ".gguf"):
        return source
    from edgetune.core.rundir import replace_dir

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


def check_installed(recipe: Recipe, out: Path | None = None) -> Path:
    """Check the package installed in the recipe's Android project against its run; CheckFailed if stale."""
    from edgetune.packaging.app import assets_dir
    from edgetune.packaging.check import check_package

    if recipe.package.android is None:
        raise RecipeError("package.android: no Android project given (use --android)")
    run_dir = Path(out) if out is not None else Path("runs") / recipe.name
    entry = RunDir(run_dir).entry("quantize")
    if entry is None:
        raise RecipeError(f"{run_dir}: the run has no quantized model yet (run edgetune build)")
    expect = from_json(Quantized, entry.record, run_dir).models[-1].sha256
    shipped = RunDir(run_dir).entry("adapters")
    if recipe.adapters and shipped is not None:  # the package is the int4 base with the adapters
        expect = from_json(AdapterSet, shipped.record, run_dir).model.sha256
    where = assets_dir(recipe.path(recipe.package.android), recipe.task)
    problems = check_package(where, expect)
    if problems:
        raise CheckFailed("; ".join(problems))
    return where


def _identity(p: Prepared) -> dict[str, str]:
    """What makes a recipe another project rather than an edit of the same one (an edit only redoes the stages
    whose keys it changes): its name and task, and the content of its model and data, wherever they are."""
    return {
        "name": p.recipe.name,
        "task": p.recipe.task,
        "model": p.source.fingerprint(),
        "data": p.data.fingerprint,
    }


_WHAT = {"name": "name", "task": "task", "model": "model.source: another model", "data": "dataset: other data"}


def _other_recipe(run_dir: Path, now: dict[str, str]) -> str | None:
    """How the recipe a run directory was built from differs in identity from `now`, or None (the same project,
    a new run directory, or a run from before identities were recorded)."""
    try:
        before = json.loads((run_dir / RUN_RECIPE).read_text()).get(IDENTITY) or {}
    except (OSError, ValueError):
        return None
    diff = [k for k in now if k in before and before[k] != now[k]]
    return (
        "; ".join(f"{_WHAT[k]}: {before[k]} there, {now[k]} here" if k in ("name", "task") else _WHAT[k] for k in diff)
        or None
    )


def load_run_recipe(run_dir: Path) -> Recipe:
    """The recipe a run directory was last built with (from its recipe.json)."""
    path = Path(run_dir) / RUN_RECIPE
    if not path.is_file():
        raise RecipeError(f"{run_dir}: not an edgetune run directory (no {RUN_RECIPE})")

    data = json.loads(path.read_text())
    base = Path(data.pop("base_dir", "."))
    data.pop(IDENTITY, None)
    return parse_recipe(data, str(path), base)


def _message(e: Exception) -> str:
    return e.message if isinstance(e, EdgetuneError) else f"{type(e).__name__}: {e}"


def _after_failure(e: Exception, report: Report | None) -> Exception:
    """The error of the stage that failed, saying where the report of what finished is (an error edgetune does
    not know, a bug, is raised as it is, with its traceback)."""
    if report is None or not isinstance(e, EdgetuneError):
        return e
    out = type(e)(f"{e.message} (the report of the stages that finished: {report.markdown_path})")
    out.__cause__ = e.__cause__
    return out


def _gate_error(v: Verification, report: Report | None = None) -> CheckFailed:
    failures = "; ".join(c.describe() for c in v.failures())
    where = f"; details: {v.details_path}" + (f"; report: {report.markdown_path}" if report else "")
    return CheckFailed(f"{failures}{where}")
