"""`edgetune bench RUN_DIR --ssh USER@HOST`: copy a device bundle to a Linux board, run it there, read its JSON.

Flow: probe the board (probe.py), copy the bundle only when the hash of the copy there differs, run
run_device.py over ssh (transport.py), parse its JSON.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgetune import runner
from edgetune.core.errors import EdgetuneError, RecipeError
from edgetune.device.bundle import HASH_FILE, RUNNER, bundle_sha256, read_bundle
from edgetune.device.probe import check_probe, probe
from edgetune.device.transport import Ssh, SshTarget, _last_line, _sh, remote_exe

REMOTE_ROOT = ".cache/edgetune"  # relative to the login directory on the device


@dataclass(frozen=True)
class DeviceRun:
    """One run of a bundle on a device: the runner's JSON plus where and what it ran."""

    doc: dict  # the runner's document (see README, "Run it on a board")
    target: SshTarget
    bundle: Path
    bundle_sha256: str
    copied: bool
    run_dir: Path | None = None  # the run the bundle belongs to, when it was given as a run directory
    saved: Path | None = None  # run_dir/devices/<device>.json


def bench_on_board(
    target: Path,
    where: SshTarget,
    python: str = "python3",
    threads: int | None = None,
    warmup: int | None = None,
    runs: int | None = None,
    seqs: list[int] | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> DeviceRun:
    """`edgetune bench TARGET --ssh`: TARGET is a run directory (its bundle for the board's architecture runs,
    and the result goes into the run's devices/ and report) or a bundle folder (the result is only returned)."""
    from edgetune.device.bundle import find_bundles
    from edgetune.device.results import save_result

    target = Path(target)
    if not target.is_dir():
        raise RecipeError(f"{target}: not a run directory or a device bundle")
    bundles = find_bundles(target)
    bundle = bundles[0]
    if len(bundles) > 1:  # one per architecture: ask the board which one it is
        found = probe(Ssh(where), python, ".", [])
        bundle = next(
            (
                b
                for b in bundles
                if runner.abi_problem(read_bundle(b).bundle["target"], found["machine"], int(found["bits"])) is None
            ),
            bundles[0],
        )
    run = bench_over_ssh(bundle, where, python, threads, warmup, runs, seqs, log)
    if (target / RUNNER).is_file():
        return run
    saved = save_result(target, run)
    return dataclasses.replace(run, run_dir=target, saved=saved)


def bench_over_ssh(
    bundle: Path,
    target: SshTarget,
    python: str = "python3",
    threads: int | None = None,
    warmup: int | None = None,
    runs: int | None = None,
    seqs: list[int] | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> DeviceRun:
    """Copy `bundle` to the device (when the copy there is not this one), run it, and return its result.

    RecipeError (exit 2) for a device or connection the user must fix; EdgetuneError when the runner fails on a
    model. A failed golden case is not raised here: DeviceRun.doc['status'] is 'golden_failed'.
    """
    manifest = read_bundle(bundle)
    info = manifest.bundle or {}
    ssh = Ssh(target)
    where = target.label()
    remote_dir = f"{REMOTE_ROOT}/{manifest.recipe}-{info['target']}"
    log(f"ssh: probing {where} ...")
    found = probe(ssh, python, remote_dir, info["requires"])
    check_probe(found, info["target"], info["requires"], python, where)
    log(f"ssh: {where}: Python {found['python']} on {found['machine']}")
    digest = bundle_sha256(bundle)
    copied = found.get("bundle_hash") != digest
    if copied:
        _copy(ssh, bundle, remote_dir, digest, log)
    else:
        log(f"ssh: {where}:{remote_dir} holds this bundle (sha256 {digest[:12]}), not copied again")
    args = [
        a
        for k, v in (("--threads", threads), ("--warmup", warmup), ("--runs", runs))
        if v is not None
        for a in (k, str(v))
    ]
    args += [a for s in seqs or [] for a in ("--seq", str(s))]
    command = _sh(f"cd {shlex.quote(remote_dir)} && exec {remote_exe(python)} {RUNNER} {' '.join(args)}")
    log(f"ssh: running {RUNNER} on {where} ...")
    proc = ssh.run(command, on_stderr=lambda line: log(f"  {where}: {line}"))
    doc = _runner_doc(proc, where)
    error = doc.get("error") or {}
    if error.get("kind") == "corrupt":
        # the copy on the device was changed or damaged since: copy it again and rerun, once
        log(f"ssh: {error['message']} on {where}; copying the bundle again")
        _copy(ssh, bundle, remote_dir, digest, log)
        copied = True
        doc = _runner_doc(ssh.run(command, on_stderr=lambda line: log(f"  {where}: {line}")), where)
        error = doc.get("error") or {}
    if error:
        msg = f"{where}: {error.get('message')}"
        if error.get("kind") in runner.ENVIRONMENT_KINDS:
            raise RecipeError(msg)
        raise EdgetuneError(f"on-device run failed: {msg}")
    doc["bundle"]["sha256"] = digest
    return DeviceRun(doc, target, Path(bundle), digest, copied)


def _copy(ssh: Ssh, bundle: Path, remote_dir: str, digest: str, log: Callable[[str], None]) -> None:
    q = shlex.quote
    tmp = f"{remote_dir}.tmp"
    size = sum(p.stat().st_size for p in Path(bundle).rglob("*") if p.is_file())
    log(f"ssh: copying the bundle ({size / 1e6:.1f} MB) to {ssh.target.label()}:{remote_dir} ...")
    proc = ssh.run(_sh(f"rm -rf {q(tmp)} && mkdir -p {q(str(Path(remote_dir).parent))}"))
    if proc.returncode != 0:
        raise EdgetuneError(f"cannot prepare {remote_dir} on {ssh.target.label()}: {_last_line(proc.stderr)}")
    ssh.copy_dir(bundle, tmp)
    # the hash goes in last, and the folder is renamed into place: an interrupted copy is never taken as done
    proc = ssh.run(
        _sh(
            f"printf '%s\\n' {q(digest)} > {q(tmp)}/{HASH_FILE} && rm -rf {q(remote_dir)} && "
            f"mv {q(tmp)} {q(remote_dir)}"
        )
    )
    if proc.returncode != 0:
        raise EdgetuneError(
            f"cannot install the bundle in {remote_dir} on {ssh.target.label()}: {_last_line(proc.stderr)}"
        )


def _runner_doc(proc: subprocess.CompletedProcess, where: str) -> dict:
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                break
    raise EdgetuneError(f"{RUNNER} on {where} printed no result (exit {proc.returncode}): {_last_line(proc.stderr)}")
