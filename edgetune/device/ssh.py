"""`edgetune bench RUN_DIR --ssh USER@HOST`: copy a device bundle to a Linux board, run it there, read its JSON.

The system OpenSSH client does the work (ssh and scp, BatchMode=yes so it never waits for a password or a
prompt, ConnectTimeout so an unreachable board fails in seconds): it already reads the user's ~/.ssh/config
(host aliases, jump hosts, keys in an agent) and known_hosts, which a Python ssh library would each have to
be taught. Flow: probe the board with a few lines of Python (version, architecture, modules, the hash of the
bundle copied last time), copy the bundle only when that hash differs, run run_device.py, parse its JSON.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import shutil
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edgetune import runner
from edgetune.core.errors import CheckFailed, EdgetuneError, RecipeError
from edgetune.device.bundle import HASH_FILE, RUNNER, bundle_sha256, read_bundle
from edgetune.device.results import greedy_summary

REMOTE_ROOT = ".cache/edgetune"  # relative to the login directory on the device
NO_PYTHON = "__edgetune_no_python__"
# Runs on the device before anything is copied. Python 2 and 3 syntax, so an old interpreter still answers
# with its version instead of a SyntaxError.
PROBE = r"""
import json, os, platform, struct, sys
mods = {}
for name in [n for n in sys.argv[2].split(",") if n]:
    try:
        import importlib.util
        mods[name] = importlib.util.find_spec(name.replace("-", "_")) is not None
    except Exception:
        mods[name] = False
try:
    with open(os.path.join(sys.argv[1], %(hash_file)r)) as f:
        bundle_hash = f.read().strip()
except Exception:
    bundle_hash = None
print(json.dumps({"python": platform.python_version(), "executable": sys.executable,
                  "machine": platform.machine(), "bits": struct.calcsize("P") * 8,
                  "modules": mods, "bundle_hash": bundle_hash}))
""" % {"hash_file": HASH_FILE}


@dataclass(frozen=True)
class SshTarget:
    """Where the board is and how to log in: USER@HOST (or a Host alias of ~/.ssh/config)."""

    destination: str
    port: int | None = None
    identity: Path | None = None
    options: tuple[str, ...] = ()  # extra `-o` options, e.g. UserKnownHostsFile=/tmp/kh
    connect_timeout: int = 10

    @property
    def host(self) -> str:
        return self.destination.rsplit("@", 1)[-1]

    def label(self) -> str:
        return self.destination + (f":{self.port}" if self.port else "")


@dataclass
class Ssh:
    """Runs commands on, and copies folders to, one SshTarget with the system ssh and scp."""

    target: SshTarget
    ssh: str = field(init=False)
    scp: str = field(init=False)

    def __post_init__(self) -> None:
        if self.target.destination.startswith("-") or not self.target.destination.strip():
            raise RecipeError(f"--ssh {self.target.destination!r}: expected USER@HOST")
        found = {exe: shutil.which(exe) for exe in ("ssh", "scp")}
        missing = [exe for exe, path in found.items() if path is None]
        if missing:
            raise RecipeError(
                f"{' and '.join(missing)} not found on PATH: install the OpenSSH client "
                f"(Debian/Ubuntu: apt-get install openssh-client)"
            )
        self.ssh, self.scp = found["ssh"], found["scp"]

    def _options(self) -> list[str]:
        t = self.target
        # ssh keeps the first value it is given for an option: the user's -o options go first
        opts = [a for o in t.options for a in ("-o", o)]
        opts += [
            "-o",
            "BatchMode=yes",
            "-o",
            f"ConnectTimeout={t.connect_timeout}",
            "-o",
            "StrictHostKeyChecking=accept-new",
            "-o",
            "ServerAliveInterval=15",
            "-o",
            "ServerAliveCountMax=4",
            "-o",
            "LogLevel=ERROR",
        ]
        if t.port:
            opts += ["-o", f"Port={t.port}"]
        if t.identity:
            if not Path(t.identity).is_file():
                raise RecipeError(f"--identity {t.identity}: no such file")
            opts += ["-i", str(t.identity), "-o", "IdentitiesOnly=yes"]
        return opts

    def run(
        self,
        command: str,
        stdin: str | None = None,
        on_stderr: Callable[[str], None] | None = None,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess:
        """Run `command` through the device's login shell; raise RecipeError when ssh itself fails (255)."""
        cmd = [self.ssh, *self._options(), "--", self.target.destination, command]
        proc = _run(cmd, stdin, on_stderr, timeout, f"ssh {self.target.label()}")
        if proc.returncode == 255:
            raise self._ssh_error(proc.stderr)
        return proc

    def copy_dir(self, local: Path, remote: str) -> None:
        """Copy the folder `local` to `remote` (a path relative to the login directory, which must not exist)."""
        host = self.target.destination
        user, _, name = host.rpartition("@")
        if ":" in name and not name.startswith("["):  # an IPv6 address
            host = (user + "@" if user else "") + f"[{name}]"
        cmd = [self.scp, "-r", "-q", *self._options(), "--", str(local), f"{host}:{remote}"]
        proc = _run(cmd, None, None, None, f"scp to {self.target.label()}")
        if proc.returncode != 0 and "connection closed" in (proc.stderr or "").lower():
            # scp speaks SFTP by default; a board without the sftp subsystem (dropbear, a trimmed sshd_config)
            # closes the connection: the original scp protocol (-O) needs only scp on the board
            cmd.insert(1, "-O")
            proc = _run(cmd, None, None, None, f"scp to {self.target.label()}")
        if proc.returncode != 0:
            if proc.returncode == 255 or _SSH_FAILURES.search(proc.stderr or ""):
                raise self._ssh_error(proc.stderr)
            raise EdgetuneError(f"scp to {self.target.label()}:{remote} failed: {_last_line(proc.stderr)}")

    def _ssh_error(self, stderr: str) -> RecipeError:
        t = self.target
        line = re.sub(r"^(\S*/)?(ssh|scp): ", "", _last_line(stderr))  # "(ssh: ssh: ...)" reads twice
        where = f"{t.label()}"
        low = stderr.lower()
        if "could not resolve hostname" in low:
            return RecipeError(
                f"cannot resolve the host name '{t.host}' (ssh: {line}): check the name, or use the board's IP address"
            )
        if "host key verification failed" in low or "identification has changed" in low:
            name = f"'[{t.host}]:{t.port}'" if t.port else t.host  # how known_hosts names a host on another port
            return RecipeError(
                f"{where}: the host key differs from the one in known_hosts (ssh: {line}); if the "
                f"board was reinstalled, remove the old key with `ssh-keygen -R {name}`"
            )
        if (
            "permission denied" in low
            or "too many authentication failures" in low
            or "no supported authentication" in low
        ):
            key = f" the key {t.identity}" if t.identity else " your keys"
            return RecipeError(
                f"{where} refused authentication with{key} (ssh: {line}); edgetune never types a "
                f"password: install your public key there (ssh-copy-id {t.destination}) or pass "
                f"--identity KEY"
            )
        if any(
            s in low
            for s in (
                "connection refused",
                "timed out",
                "no route to host",
                "network is unreachable",
                "host is down",
                "connection closed",
                "connection reset",
                "kex_exchange",
            )
        ):
            return RecipeError(
                f"{where} is unreachable (ssh: {line}): check that the board is on, on the network "
                f"and running sshd (port {t.port or 22})"
            )
        return RecipeError(f"ssh to {where} failed: {line}")


_SSH_FAILURES = re.compile(
    r"could not resolve|permission denied|connection refused|timed out|host key verification", re.I
)


def _last_line(text: str | None) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no message"


def _run(
    cmd: list[str], stdin: str | None, on_stderr: Callable[[str], None] | None, timeout: float | None, what: str
) -> subprocess.CompletedProcess:
    """subprocess.run, with stderr also passed line by line to `on_stderr` as it arrives."""
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out: list[str] = []
    err: list[str] = []

    def pump_err() -> None:
        for line in proc.stderr:
            err.append(line)
            if on_stderr is not None:
                on_stderr(line.rstrip("\n"))

    readers = [
        threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True),
        threading.Thread(target=pump_err, daemon=True),
    ]
    for r in readers:
        r.start()
    try:
        if stdin:
            proc.stdin.write(stdin)
        proc.stdin.close()
    except BrokenPipeError:  # the command ended without reading it; its exit code tells why
        pass
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise EdgetuneError(f"{what}: no answer within {timeout:.0f} s") from None
    finally:
        for r in readers:
            r.join()
    return subprocess.CompletedProcess(cmd, proc.returncode, "".join(out), "".join(err))


# -- the bench flow -----------------------------------------------------------------------------------------
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


def remote_exe(path: str) -> str:
    """`path` for the device's shell: a bare name is looked up on PATH; `~/x` and a relative path with a slash
    are under the login directory (the runner runs after a cd into the bundle)."""
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    if "/" in path and not path.startswith("/"):
        return '"$HOME"/' + shlex.quote(path)
    return shlex.quote(path)


def _sh(script: str) -> str:
    """`script` for the device's login shell, whatever it is, run by sh."""
    return f"sh -c {shlex.quote(script)}"


def probe(ssh: Ssh, python: str, remote_dir: str, requires: list[str]) -> dict:
    q = shlex.quote
    exe = remote_exe(python)
    script = (
        f"command -v {exe} >/dev/null 2>&1 || {{ echo {NO_PYTHON}; exit 127; }}; "
        f"exec {exe} - {q(remote_dir)} {q(','.join(requires))}"
    )
    proc = ssh.run(_sh(script), stdin=PROBE, timeout=300)
    where = ssh.target.label()
    if NO_PYTHON in proc.stdout or proc.returncode in (126, 127):
        raise RecipeError(
            f"no Python at '{python}' on {where}: install Python 3.9+ there (Debian: sudo apt install "
            f"python3 python3-venv) or pass --python PATH"
        )
    try:
        info = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RecipeError(
            f"'{python}' on {where} did not run the probe (exit {proc.returncode}): "
            f"{_last_line(proc.stderr)}; pass --python with a Python 3.9+ interpreter"
        ) from None
    return info


def check_probe(info: dict, target: str, requires: list[str], python: str, where: str) -> None:
    """RecipeError for a device that cannot run the bundle: old Python, another architecture, missing modules."""
    version = tuple(int(x) for x in re.findall(r"\d+", info["python"])[:2])
    if version < runner.MIN_PYTHON:
        raise RecipeError(
            f"'{python}' on {where} is Python {info['python']}; the runner needs "
            f"{'.'.join(map(str, runner.MIN_PYTHON))}+: install a newer one, or pass --python PATH"
        )
    problem = runner.abi_problem(target, info["machine"], int(info["bits"]))
    if problem:
        raise RecipeError(f"{where}: {problem}")
    missing = [m for m in requires if not info["modules"].get(m)]
    if missing:
        raise RecipeError(
            f"{', '.join(missing)} not installed for '{python}' on {where}: run "
            f"`{runner.pip_line(missing).replace('python3', python, 1)}` on the device"
        )


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
        log(f"ssh: the bundle on {where} is this one (sha256 {digest[:12]}), not copied again")
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


# -- what the user sees -------------------------------------------------------------------------------------
def golden_summary(doc: dict) -> str:
    """One line per model: how the golden check went on the device."""
    g = doc["golden"]
    lines = []
    for name, m in g["models"].items():
        if g["kind"] == "greedy":
            lines.append(f"golden {name}: {greedy_summary(m)}: {'pass' if m['passed'] else 'FAIL'}")
        else:
            lines.append(
                f"golden {name}: {m['cases'] - len(m['failures'])}/{m['cases']} cases within tolerance, "
                f"max|diff| {m['max_abs_diff']:.3g}, min cosine {m['min_cosine']:.6f}, labels equal "
                f"{m['label_agreement']:.3f}: {'pass' if m['passed'] else 'FAIL'}"
            )
    return "\n".join(lines)


def golden_failure(doc: dict, where: str) -> CheckFailed:
    """The first failed golden case, by how much, as one line."""
    g = doc["golden"]
    failed = [n for n, m in g["models"].items() if not m["passed"]]
    also = f"; {', '.join(failed[1:])} failed too" if len(failed) > 1 else ""
    for name, m in g["models"].items():
        if m["passed"]:
            continue
        if g["kind"] == "greedy":
            f = m["failures"][0] if m["failures"] else {"case": "?", "prompt": "", "prompt_ids_equal": True}
            what = []
            if "step" in f:
                what.append(
                    f"token {f['step']}: max|diff| {f['max_abs_diff']:.4g} against PyTorch over the host's top "
                    f"logits (<= {m['max_abs_diff_limit']:g}), device token {f['device']} (host {f['host']}"
                    + ("" if f["in_host_top"] else ", not among the host's top tokens")
                    + ")"
                )
            if not f["prompt_ids_equal"]:
                what.append("the prompt tokenizes differently on the device")
            return CheckFailed(
                f"golden check failed on {where} ({name}): {len(m['failures'])}/{m['cases']} prompts; "
                f"case {f['case']} '{f['prompt'][:40]}': {'; '.join(what)}{also}"
            )
        f = m["failures"][0]
        return CheckFailed(
            f"golden check failed on {where} ({name}): {len(m['failures'])}/{m['cases']} cases; case "
            f"{f['case']} '{f['text'][:40]}': max|diff| {f['max_abs_diff']:.4g} (<= "
            f"{g.get('max_abs_diff_limit', '?')}), cosine {f['cosine']:.6f} (>= "
            f"{g.get('min_cosine_limit', '?')}), label {f['label']} (PyTorch {f['pytorch_label']}){also}"
        )
    return CheckFailed(f"golden check failed on {where}")
