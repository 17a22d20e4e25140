"""report.json (stable keys, see README 'Reading the report') plus report.md and latency.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgetune.build import BaseStage, BuildContext, Key
from edgetune.core.artifacts import (
    Report,
)
from edgetune.report.write import SCHEMA_VERSION, devices_fingerprint, report


class ReportStage(BaseStage):
    """report.json, report.md and latency.png from every record of the build (and the device results saved in
    the run directory)."""

    name = "report"
    needs = (
        "finetune",
        "merge",
        "compress",
        "export",
        "quantize",
        "verify",
        "adapters",
        "package",
        "bench",
    )  # those it has
    after_failure = ()  # written with what finished when a stage failed
    record = Report

    def key(self, ctx: BuildContext) -> Key:
        r = ctx.recipe
        stopped = [list(ctx.stopped)] if ctx.stopped else []  # a report of a failed build is not reused later
        return Key([SCHEMA_VERSION, _recipe_facts(r), *stopped], [devices_fingerprint(ctx.run.root)])

    def run(self, ctx: BuildContext, inputs: dict, out: Path) -> Report:
        # what each stage cost when it ran (a reused stage: the figures recorded then)
        entries = {name: e for name in inputs if (e := ctx.run.entry(name)) is not None}
        seconds = {name: e.seconds for name, e in entries.items()}
        peaks = {name: e.peak_rss_mb for name, e in entries.items()}
        return report(
            inputs, seconds, _recipe_facts(ctx.recipe), out, ctx.run.root, stopped=ctx.stopped, peak_rss_mb=peaks
        )


def _recipe_facts(r: Any) -> dict:
    return {"name": r.name, "task": r.task, "model": r.model.source}
