"""The package stages: what the Android demo app (and, from it, a Linux board's device bundle) needs of a run.

Classification (`ClassifierPackage`): the int8 model with the BERT tokenizer inside the graph, so the app passes
a string and gets logits, plus its ORT-format copy for arm64. Causal LM (`ChatPackage`): the int4 onnxruntime-genai
folder with the chat prompt format. Both write manifest.json (edgetune/packaging/manifest.py) and golden.json
(inputs with PyTorch's outputs, tolerances from verify), check the package, write the device bundles the recipe
asks for (package.linux) and install into the app (package.android).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from edgetune.build import BaseStage, BuildContext, Key, trained_model
from edgetune.core.artifacts import AdapterSet, MergedModel, OnnxModel, Package, ShippedAdapter, Verification
from edgetune.core.errors import CheckFailed, EdgetuneError
from edgetune.core.rundir import atomic_write_json
from edgetune.engines.adapters import merged_with
from edgetune.packaging.app import assets_dir, install
from edgetune.packaging.check import check_package, golden_max_diff, golden_min_cosine
from edgetune.packaging.graph import to_ort_format, with_tokenizer
from edgetune.packaging.manifest import (
    GOLDEN,
    SCHEMA_VERSION,
    ChatAdapter,
    ChatFormat,
    GoldenRef,
    PackageManifest,
    SourceRef,
    TensorSpec,
    file_entry,
    read_manifest,
    runtime_versions,
)

# Hand-picked edge cases added to the golden set: accents, case, punctuation, and a text over max_length.
EDGE_TEXTS = ["TURN ON the Kitchen lights!!!", "Café lights: ON, s'il vous plaît", "lights " * 200]


class _PackageStage(BaseStage):
    """What both package stages share: when they run, their key, the manifest, checks, bundles, installing."""

    name = "package"
    needs = ("merge", "compress", "quantize", "verify")
    record = Package

    def skip(self, ctx: BuildContext, inputs: dict) -> str | None:
        p = ctx.recipe.package
        if p.android is None and not p.linux and ctx.until != "package":
            return ""  # the recipe asks for no package (package.android, package.linux)
        if not inputs["verify"].passed:
            return "a verification gate failed"
        return None

    def reads(self, ctx: BuildContext) -> list:
        """Recipe fields this task's package content reads besides the package section."""
        return [ctx.recipe.training.max_length]

    def key(self, ctx: BuildContext) -> Key:
        r = ctx.recipe
        config = r.package.model_dump(exclude={"android"})  # android only says where to install
        bundles: list = []
        if r.package.linux:  # a new run_device.py (an edgetune upgrade) rewrites the bundles too
            from edgetune.device.bundle import runner_sha256

            bundles = [r.benchmark.model_dump(), r.verify.greedy_tokens, runner_sha256()]
        return Key([config, *self.reads(ctx), *bundles])

    def content(self, ctx: BuildContext, model: OnnxModel, inputs: dict, out: Path) -> dict:
        """Write `model` (the packaged one), its files and golden.json into `out`; return the manifest's
        task-specific fields. `inputs`: the stage's inputs (the trained model, verify's record, ...)."""
        raise NotImplementedError

    def packaged(self, inputs: dict) -> OnnxModel:
        """The model the package ships: int8 for encoders; the last precision (int4 by default) for LLMs."""
        return inputs["quantize"].models[-1]

    def bundle_inputs(self, ctx: BuildContext, inputs: dict) -> dict:
        """What write_bundle needs from the run for this task's bundle (edgetune/device/bundle.py)."""
        return {}

    def run(self, ctx: BuildContext, inputs: dict, out: Path) -> Package:
        r = ctx.recipe
        model = self.packaged(inputs)
        fields = self.content(ctx, model, inputs, out)
        manifest = PackageManifest(
            schema_version=SCHEMA_VERSION,
            task=r.task,
            recipe=r.name,
            **fields,
            versions=runtime_versions(),
            source=SourceRef(quantized_sha256=model.sha256, precision=model.precision),
        )
        manifest.write(out)
        problems = check_package(out)
        if problems:
            raise CheckFailed("package: " + "; ".join(problems))
        for arch in r.package.linux:  # device bundles for Linux boards: package/linux-<arch>/
            from edgetune.device.bundle import write_bundle

            where = write_bundle(
                out,
                f"linux-{arch}",
                benchmark=r.benchmark,
                greedy_tokens=r.verify.greedy_tokens,
                **self.bundle_inputs(ctx, inputs),
            )
            ctx.log(f"package: device bundle for linux-{arch} in {ctx.run.stage_dir('package') / where.name}")
            if arch == "x86_64" and model.notes.get("reduce_range") is False:
                ctx.log(
                    "package: WARNING: linux-x86_64: the int8 model keeps 8-bit weights (quantized for "
                    f"{model.notes.get('reduce_range_why', 'this machine')}); an x86 board without VNNI adds "
                    "int8 products in 16 bits and clamps them, and its golden check may fail. Put x86_64 in the "
                    "recipe's package.linux and run `edgetune build`: quantize then stores 7-bit weights"
                )
        return Package(
            path=out,
            manifest_path=out / "manifest.json",
            model_sha256=manifest.model.sha256,
            size_bytes=manifest.model.size_bytes,
            files=manifest.model.files,
            golden_cases=manifest.golden.count,
        )

    def finish(self, ctx: BuildContext, record: Any) -> None:
        """Install into the recipe's Android project unless the same package is there already."""
        r = ctx.recipe
        if r.package.android is None:
            return
        android = r.path(r.package.android)
        where = assets_dir(android, r.task)
        made_from = read_manifest(record.path).source.quantized_sha256
        if check_package(where, made_from, run_golden=False):
            where = install(record.path, android, r.task)
            ctx.log(f"package: installed into {where}")
        else:
            ctx.log(f"package: {where} is up to date")


class ClassifierPackage(_PackageStage):
    def bundle_inputs(self, ctx: BuildContext, inputs: dict) -> dict:
        # words the in-graph tokenizer keeps whole, to build benchmark texts of any length on the board
        return {"tokenizer": ctx.task.load_tokenizer(trained_model(inputs).path)}

    def content(self, ctx: BuildContext, model: OnnxModel, inputs: dict, out: Path) -> dict:
        return package_classifier(model, trained_model(inputs), inputs["verify"], ctx, out)


class ChatPackage(_PackageStage):
    def bundle_inputs(self, ctx: BuildContext, inputs: dict) -> dict:
        from edgetune.runtime.decoding import step_logits

        merged, trained = trained_model(inputs), _trained(inputs)

        def reference(seqs: list, names: list) -> list:
            """PyTorch's logits along the host's greedy tokens, what a board's are checked against: the merged
            model's, or for a case with an adapter, the base with that adapter merged."""
            rows: list = [None] * len(seqs)
            for name in dict.fromkeys(names):
                at = [i for i, n in enumerate(names) if n == name]
                if name is None:
                    model = ctx.task.load_model(merged.path)
                else:
                    model = _reference(ctx, trained[name])
                for i, r in zip(at, step_logits(model, [seqs[i] for i in at])):
                    rows[i] = r
            return rows

        return {"reference": reference}

    def reads(self, ctx: BuildContext) -> list:
        # the system prompt is part of the packaged prompt format
        return [*super().reads(ctx), getattr(ctx.recipe.dataset, "system_prompt", None)]

    needs = ("finetune", "merge", "compress", "quantize", "verify", "adapters")

    def skip(self, ctx: BuildContext, inputs: dict) -> str | None:
        shipped = inputs.get("adapters")
        if shipped is not None and not shipped.verification.passed:
            return "an adapter's verification gate failed"
        return super().skip(ctx, inputs)

    def packaged(self, inputs: dict) -> OnnxModel:
        # with the recipe's adapters: list, the int4 base and its adapters instead of the merged model
        shipped = inputs.get("adapters")
        return shipped.model if shipped is not None else super().packaged(inputs)

    def content(self, ctx: BuildContext, model: OnnxModel, inputs: dict, out: Path) -> dict:
        return package_chat(model, trained_model(inputs), ctx, out, inputs.get("adapters"))


def _trained(inputs: dict) -> dict[str, ShippedAdapter]:
    """Each task a build with the recipe's adapters: list ships, by name ({} without)."""
    shipped = inputs.get("adapters")
    return {a.name: a for a in shipped.adapters} if shipped is not None else {}


def _reference(ctx: BuildContext, adapter: ShippedAdapter) -> Any:
    """The PyTorch model a shipped adapter is checked against: the base (int4-rounded where it trained against
    that) with the adapter merged."""
    if adapter.trained is None:
        raise EdgetuneError(f"package: adapter {adapter.name}: its record names no trained adapter (build again)")
    return merged_with(ctx.task.load_model, ctx.base().path, adapter.trained, adapter.int4_base)


def package_classifier(
    model: OnnxModel, merged: MergedModel, verification: Verification, ctx: BuildContext, out: Path
) -> dict:
    task, data, cfg, max_length = ctx.task, ctx.data, ctx.recipe.package, ctx.recipe.training.max_length
    import onnx

    tokenizer = task.load_tokenizer(merged.path)
    try:
        graph = onnx.load(model.path)
    except Exception as e:
        raise EdgetuneError(
            f"package: {model.path} is not a readable ONNX model ({str(e).splitlines()[0][:120]})"
        ) from None
    graph = with_tokenizer(graph, tokenizer, max_length)
    onnx.save(graph, out / "model.onnx")
    ort_model = None
    if cfg.ort_format:
        ort_model = to_ort_format(out / "model.onnx")
    texts = [e["text"] for e in data.eval[: max(0, cfg.golden - len(EDGE_TEXTS))]] + EDGE_TEXTS[: cfg.golden]
    examples = [{"text": t, "label": 0} for t in texts]
    torch_model = task.load_model(merged.path, data.labels)
    ref, _ = task.evaluate(torch_model, tokenizer, examples, 16, max_length)
    ref = np.asarray(ref, dtype=np.float64)
    # Tolerances come from verify, which measured this model against PyTorch on the whole held-out split with
    # the Hugging Face tokenizer: a tokenizer-in-graph mistake shows up as a larger difference than that.
    m = verification.models.get(f"onnx_{model.precision}", {})
    max_diff = golden_max_diff(m.get("max_abs_diff", 0.0))
    min_cos = golden_min_cosine(m.get("min_cosine", 1.0))
    cases = []
    for text, logits in zip(texts, ref):
        top2 = np.sort(logits)[-2:]
        cases.append(
            {
                "text": text,
                "pytorch_logits": [round(float(x), 6) for x in logits],
                "pytorch_label": data.labels[int(np.argmax(logits))],
                # a label can only flip when the runner-up is within twice the tolerance
                "check_label": bool(top2[1] - top2[0] > 2 * max_diff),
            }
        )
    atomic_write_json(out / GOLDEN, {"max_abs_diff": max_diff, "min_cosine": min_cos, "cases": cases})
    files = ["model.onnx"]
    return {
        "model": file_entry(out, "model.onnx", model.precision, files),
        "ort_model": file_entry(out, ort_model.name, model.precision, [ort_model.name]) if ort_model else None,
        "inputs": [TensorSpec(name="text", dtype="string", shape=[1])],
        "outputs": [TensorSpec(name="logits", dtype="float32", shape=[1, len(data.labels)])],
        "tokenizer": {
            "kind": "embedded",
            "op": "BertTokenizer",
            "library": "onnxruntime-extensions",
            "max_length": max_length,
        },
        "labels": list(data.labels),
        "golden": GoldenRef(file=GOLDEN, count=len(cases)),
    }


def package_chat(
    model: OnnxModel,
    merged: MergedModel,
    ctx: BuildContext,
    out: Path,
    shipped: AdapterSet | None = None,
) -> dict:
    """The genai folder, the prompt format and golden.json (PyTorch's greedy replies to held-out prompts). With
    `shipped` (the adapters stage's record), the folder is the int4 base with every task's .onnx_adapter, and the
    golden cases are split over the adapters, each with PyTorch's base + that adapter merged."""
    from edgetune.runtime.decoding import end_ids

    task, data, cfg = ctx.task, ctx.data, ctx.recipe.package
    system_prompt = getattr(ctx.recipe.dataset, "system_prompt", None)
    folder = Path(model.path).parent
    files = sorted(f.name for f in folder.iterdir() if f.is_file() or f.is_symlink())
    for name in files:
        if (folder / name).is_symlink():
            raise EdgetuneError(f"package: {folder / name} is a symlink; refusing to follow it out of the run dir")
        shutil.copy2(folder / name, out / name)
    tokenizer = task.load_tokenizer(merged.path)
    prompt_format = tokenizer.apply_chat_template(
        ([{"role": "system", "content": "{system}"}] if system_prompt else [])
        + [{"role": "user", "content": "{user}"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    eos = end_ids(tokenizer)
    adapters: list[ChatAdapter] = []
    if shipped is None:
        cases = _chat_golden(task.load_model(merged.path), tokenizer, data.eval[: cfg.golden], eos)
    else:
        entries = {a.name: a for a in ctx.recipe.adapters}
        cases, each = [], max(1, cfg.golden // len(shipped.adapters))
        for a in shipped.adapters:
            own = entries[a.name].dataset
            examples = (ctx.adapter_data.get(a.name) or data).eval[:each]
            reference = _reference(ctx, a)
            cases += [{"adapter": a.name, **c} for c in _chat_golden(reference, tokenizer, examples, eos)]
            prompt = (own.system_prompt if own is not None else None) or ""
            adapters.append(ChatAdapter(name=a.name, file=a.path.name, system_prompt=prompt))
    atomic_write_json(out / GOLDEN, {"cases": cases})
    chat = ChatFormat(
        system_prompt=system_prompt or "", prompt_format=prompt_format, max_new_tokens=64, adapters=adapters
    )
    return {
        "model": file_entry(out, "model.onnx", model.precision, files),
        "inputs": [TensorSpec(name="input_ids", dtype="int64", shape=[1, -1])],
        "outputs": [TensorSpec(name="logits", dtype="float32", shape=[1, -1, -1])],
        "tokenizer": {"kind": "onnxruntime-genai", "file": "tokenizer.json"},
        "chat": chat,
        "labels": [],
        "golden": GoldenRef(file=GOLDEN, count=len(cases)),
    }


def _chat_golden(model: Any, tokenizer: Any, examples: list[dict], eos: set[int]) -> list[dict]:
    """PyTorch's greedy replies to the user prompts of `examples`, as golden cases."""
    from edgetune.runtime.decoding import greedy_torch, prompt_ids

    budgets = [len(tokenizer(ex["messages"][-1]["content"])["input_ids"]) + 8 for ex in examples]
    gens = greedy_torch(model, [prompt_ids(tokenizer, ex) for ex in examples], budgets, eos)
    return [
        {
            "prompt": next(m["content"] for m in ex["messages"] if m["role"] == "user"),
            "pytorch_text": tokenizer.decode([t for t in toks if t not in eos], skip_special_tokens=True),
        }
        for ex, toks in zip(examples, gens)
    ]
