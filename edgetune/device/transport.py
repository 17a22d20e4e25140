"""The ssh transport to a board: where it is (SshTarget), running commands and copying folders there (Ssh).

The system OpenSSH client does the work (ssh and scp, BatchMode=yes so it never waits for a password or a
prompt, ConnectTimeout so an unreachable board fails in seconds): it already reads the user's ~/.ssh/config
(host aliases, jump hosts, keys in an agent) and known_hosts, which a Python ssh library would each have to
be taught.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edgetune.core.errors import EdgetuneError, RecipeError


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
