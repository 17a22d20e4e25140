"""An emulated arm64 Linux board reachable over ssh, built from Debian's and PyPI's packages alone.

    python tests/board/arm64_board.py provision              # download + unpack into the cache (idempotent)
    python tests/board/arm64_board.py serve --cpu cortex-a53 # start an sshd board, print how to reach it, wait
    python tests/board/arm64_board.py start --cpu max        # the same in the background: prints JSON
    python tests/board/arm64_board.py stop STATE_DIR         # stop a board started with `start`

What the board is: an sshd on 127.0.0.1 whose sessions find first on PATH a `python3` that runs Debian
bookworm's arm64 python3.11 under qemu-user (qemu-aarch64 10.x, static, from bookworm-backports), with the
aarch64 manylinux wheels of onnxruntime, onnxruntime-genai, onnxruntime-extensions and numpy on its
PYTHONPATH. qemu-user emulates /proc/cpuinfo and takes the CPU from QEMU_CPU, so `platform.machine()` is
'aarch64' and the CPU features that onnxruntime's kernels dispatch on are the emulated CPU's. Only python3
(and the processes it starts through sys.executable) is emulated: the login shell, scp and coreutils of a
session are the host's, so `uname -m` over ssh says x86_64; ask python3.

Nothing outside the cache folder is changed: no binfmt_misc, no chroot, no system package installed.
Everything is fetched with apt-get against private state folders (host's apt.conf.d settings still apply)
and `dpkg-deb -x`, and with `pip install --target --platform`. sshd is openssh-server's binary unpacked in
the cache. Run as root, it needs a privilege-separation user and /run/sshd: it gets both in a mount
namespace of its own (`unshare --mount`: a small tmpfs on /run and a copy of /etc/passwd bind-mounted over
it, in which root's home is the board's temp folder and its shell /bin/sh), so the host's /etc, /run and
/root/.ssh are not touched. Run as another user, sshd runs as that user with no namespace.

Cache: ${EDGETUNE_CACHE:-$HOME/.cache/edgetune}/arm64-board/. Each part has a stamp with the pins it was
built from; a part whose stamp matches is not fetched again, so a second provision downloads nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import hashlib
import importlib.metadata
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# ---- pins ----------------------------------------------------------------------------------------------
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_SECURITY = "http://deb.debian.org/debian-security"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
SUITE = "bookworm"  # the board's Debian: glibc 2.36, python3.11
BOARD_PYTHON = "3.11"
BOARD_GLIBC = (2, 36)
# qemu-user 10 of bookworm-backports ships static binaries (no host libraries needed). Backports keeps only its
# newest build: when this exact version is gone, the newest 10.x there is taken and the manifest says so.
QEMU_PACKAGE = "qemu-user"
QEMU_VERSION = "1:10.0.2+ds-2+deb13u1~bpo12+1"
QEMU_MIN_MAJOR = 10
# qemu-aarch64 runs the board's python3; qemu-x86_64 runs this host's own x86_64 programs on an emulated x86 CPU
# whose features are TCG's (AVX2, no AVX512 and no VNNI): the int8 kernels of an AVX2-only x86, on any host.
QEMU_BINARIES = ("qemu-aarch64", "qemu-x86_64")
# What python3 and the wheels need on the board: python3.11's stdlib (ctypes, ssl, lzma, sqlite3...) and the
# C++ runtime. No libgomp: readelf -d of the aarch64 onnxruntime/genai/extensions libraries lists only
# libstdc++, libgcc_s, libm, libc, libdl, librt, libpthread, libutil and ld-linux; numpy's OpenBLAS is vendored.
ROOT_PACKAGES = ("python3-minimal", "python3.11-minimal", "libpython3.11-stdlib", "libstdc++6", "libgcc-s1")
SSHD_PACKAGES = ("openssh-server", "openssh-sftp-server")
# Same versions as the host's venv: onnxruntime-genai follows the library line (0.18 by default, 0.15.2 beside
# transformers 4.57), since the board runs what the host's builder exported.
WHEELS = (
    "onnxruntime==1.32.0",
    f"onnxruntime-genai=={importlib.metadata.version('onnxruntime-genai')}",
    "onnxruntime-extensions==0.15.2",
    "numpy==2.4.6",
)
SITE = "opt/edgetune-site"  # inside the board root
DEFAULT_CPU = "max"

STD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ProvisionError(RuntimeError):
    pass


def cache_dir(cache: str | os.PathLike | None = None) -> Path:
    if cache is None:
        cache = os.environ.get("EDGETUNE_CACHE") or Path.home() / ".cache" / "edgetune"
    return Path(cache).expanduser().resolve() / "arm64-board"


def _log(msg: str) -> None:
    print(f"arm64-board: {msg}", flush=True)


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, text=True, capture_output=True, **kw)
    if res.returncode != 0:
        raise ProvisionError(
            f"command failed ({res.returncode}): {' '.join(map(str, cmd))}\n{res.stdout[-3000:]}{res.stderr[-3000:]}"
        )
    return res


# ---- private apt -------------------------------------------------------------------------------------
class PrivateApt:
    """apt-get with its own sources, lists, cache and dpkg status: the host's apt state is left alone."""

    def __init__(self, folder: Path, arch: str, suites: list[tuple[str, str]]):
        self.folder = folder
        for sub in ("lists/partial", "cache/archives/partial", "parts", "debs"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        (folder / "sources.list").write_text(
            "".join(f"deb [signed-by={KEYRING}] {url} {suite} main\n" for url, suite in suites)
        )
        (folder / "status").touch()  # an empty dpkg status: dependencies resolve as for an empty root
        self.opts = [
            f"-oDir::Etc::SourceList={folder / 'sources.list'}",
            f"-oDir::Etc::SourceParts={folder / 'parts'}",
            f"-oDir::Etc::Preferences={folder / 'parts' / 'none'}",
            f"-oDir::Etc::PreferencesParts={folder / 'parts'}",
            f"-oDir::State::Lists={folder / 'lists'}",
            f"-oDir::Cache={folder / 'cache'}",
            f"-oDir::State::status={folder / 'status'}",
            f"-oAPT::Architecture={arch}",
            f"-oAPT::Architectures={arch}",
            "-oDebug::NoLocking=1",
            "-oAcquire::Languages=none",
            "-oAPT::Get::Download-Only=true",
            "-oAPT::Install-Recommends=false",
        ]
        if os.geteuid() == 0:
            self.opts.append("-oAPT::Sandbox::User=root")

    def update(self) -> None:
        if not Path(KEYRING).exists():
            raise ProvisionError(f"{KEYRING} is missing (Debian package debian-archive-keyring)")
        _run(["apt-get", "-q", *self.opts, "update"])

    def versions(self, pkg: str) -> list[str]:
        out = _run(["apt-cache", *self.opts, "madison", pkg]).stdout
        return [line.split("|")[1].strip() for line in out.splitlines() if "|" in line]

    def download(self, specs: list[str]) -> list[Path]:
        """`apt-get download` exactly these packages (name or name=version) into debs/."""
        debs = self.folder / "debs"
        _run(["apt-get", "-q", *self.opts, "download", *specs], cwd=debs)
        return sorted(debs.glob("*.deb"))

    def download_closure(self, pkgs: list[str]) -> list[Path]:
        """These packages and every dependency, resolved against this apt's (empty) dpkg status."""
        _run(["apt-get", "-q", "-y", *self.opts, "install", *pkgs])
        return sorted((self.folder / "cache" / "archives").glob("*.deb"))


def _deb_info(deb: Path) -> dict:
    fields = _run(["dpkg-deb", "-f", str(deb), "Package", "Version", "Architecture"]).stdout
    info = dict(line.split(": ", 1) for line in fields.strip().splitlines())
    info["sha256"] = hashlib.sha256(deb.read_bytes()).hexdigest()
    return {
        "package": info["Package"],
        "version": info["Version"],
        "arch": info["Architecture"],
        "sha256": info["sha256"],
    }


# ---- the parts -----------------------------------------------------------------------------------------
@dataclasses.dataclass
class Part:
    name: str
    key: dict
    path: str  # relative to the board folder

    def stamp(self, base: Path) -> Path:
        return base / "stamps" / f"{self.name}.json"

    def done(self, base: Path) -> bool:
        try:
            return json.loads(self.stamp(base).read_text())["key"] == self.key and (base / self.path).is_dir()
        except (OSError, ValueError, KeyError):
            return False

    def record(self, base: Path, info: dict) -> None:
        self.stamp(base).parent.mkdir(parents=True, exist_ok=True)
        tmp = self.stamp(base).with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": self.key, **info}, indent=1))
        tmp.replace(self.stamp(base))

    def info(self, base: Path) -> dict:
        return json.loads(self.stamp(base).read_text())


def _install_dir(tmp: Path, final: Path) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)


def _parts() -> dict[str, Part]:
    root = Part("root", {"suite": SUITE, "arch": "arm64", "packages": list(ROOT_PACKAGES), "layout": 2}, "root")
    return {
        "qemu": Part(
            "qemu",
            {"package": QEMU_PACKAGE, "version": QEMU_VERSION, "binaries": list(QEMU_BINARIES), "layout": 2},
            "qemu",
        ),
        "sshd": Part("sshd", {"suite": SUITE, "packages": list(SSHD_PACKAGES), "layout": 1}, "sshd"),
        "root": root,
        "site": Part(
            "site",
            {"wheels": list(WHEELS), "python": BOARD_PYTHON, "glibc": list(BOARD_GLIBC), "root": root.key, "layout": 2},
            f"root/{SITE}",
        ),
    }


def _build_qemu(apt: PrivateApt, tmp: Path) -> dict:
    versions = apt.versions(QEMU_PACKAGE)
    if QEMU_VERSION in versions:
        spec, note = f"{QEMU_PACKAGE}={QEMU_VERSION}", "pinned"
    else:
        newest = next((v for v in versions if int(re.match(r"(?:\d+:)?(\d+)", v).group(1)) >= QEMU_MIN_MAJOR), None)
        if newest is None:
            raise ProvisionError(f"no {QEMU_PACKAGE} >= {QEMU_MIN_MAJOR} in {SUITE}-backports: {versions}")
        spec, note = f"{QEMU_PACKAGE}={newest}", f"pinned {QEMU_VERSION} is gone from the mirror; took {newest}"
        _log(f"WARNING: {note}")
    (deb,) = [d for d in apt.download([spec]) if d.name.startswith(QEMU_PACKAGE + "_")]
    # The package holds every target (370 MB unpacked): take the two the tests use.
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as p:
        _run(["tar", "-x", "-C", str(tmp), *(f"./usr/bin/{b}" for b in QEMU_BINARIES)], stdin=p.stdout)
    if p.returncode:
        raise ProvisionError(f"dpkg-deb --fsys-tarfile {deb} failed")
    for binary in QEMU_BINARIES:
        (tmp / "usr/bin" / binary).rename(tmp / binary)
    shutil.rmtree(tmp / "usr")
    version = _run([str(tmp / "qemu-aarch64"), "--version"]).stdout.splitlines()[0]
    return {"debs": [_deb_info(deb)], "qemu": version, "note": note}


def _missing_libs(binary: Path, env: dict | None = None) -> list[str]:
    out = subprocess.run(["ldd", str(binary)], text=True, capture_output=True, env=env).stdout
    return [line.split()[0] for line in out.splitlines() if "not found" in line]


def _build_sshd(apt: PrivateApt, tmp: Path) -> dict:
    debs = apt.download(list(SSHD_PACKAGES))
    # Its library dependencies that the host lacks (none on a Debian bookworm with openssh-client) are
    # unpacked beside it and put on LD_LIBRARY_PATH.
    depends = _run(["apt-cache", *apt.opts, "depends", "--no-recommends", "--no-suggests", *SSHD_PACKAGES]).stdout
    libs = sorted({m.group(1) for m in re.finditer(r"Depends: (lib[^\s:<>]+)", depends)})
    installed = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package} ${db:Status-Abbrev}\\n", *libs], text=True, capture_output=True
    ).stdout
    have = {line.split()[0] for line in installed.splitlines() if line.split()[1:2] == ["ii"]}
    if set(libs) - have:
        debs = apt.download(sorted(set(libs) - have))
    for deb in debs:
        _run(["dpkg-deb", "-x", str(deb), str(tmp)])
    env = dict(os.environ, LD_LIBRARY_PATH=_sshd_libpath(tmp))
    for binary in (tmp / "usr/sbin/sshd", tmp / "usr/lib/openssh/sftp-server"):
        if missing := _missing_libs(binary, env):
            raise ProvisionError(f"{binary.name} needs host libraries that are missing: {missing}")
    version = subprocess.run([str(tmp / "usr/sbin/sshd"), "-V"], text=True, capture_output=True, env=env).stderr
    return {"debs": [_deb_info(d) for d in debs], "sshd": version.strip().splitlines()[0]}


def _sshd_libpath(sshd_dir: Path) -> str:
    return f"{sshd_dir / 'lib/x86_64-linux-gnu'}:{sshd_dir / 'usr/lib/x86_64-linux-gnu'}"


@dataclasses.dataclass(frozen=True)
class Sshd:
    """OpenSSH's sshd and sftp-server as the board unpacks them (no openssh-server installed on the host), and the
    environment they run in."""

    sshd: str
    sftp_server: str
    env: dict


def sshd(cache: str | os.PathLike | None = None) -> Sshd:
    """The unpacked sshd (provisioned on first use): what the tests' own sshd servers run, on any machine."""
    base = provision(cache, quiet=True) / "sshd"
    return Sshd(
        str(base / "usr/sbin/sshd"),
        str(base / "usr/lib/openssh/sftp-server"),
        dict(os.environ, LD_LIBRARY_PATH=_sshd_libpath(base)),
    )


# What qemu-x86_64's TCG emulates with `-cpu max`: AVX2 and FMA, no AVX512 and no VNNI, so ONNX Runtime takes
# the int8 kernels of an AVX2-only x86 (Haswell to Zen 3). Only the first program is emulated: a child it
# starts runs natively.
X86_AVX2_CPU = "max"


def x86_64_emulator(cpu: str = X86_AVX2_CPU, cache: str | os.PathLike | None = None) -> list[str]:
    """The command prefix that runs an x86_64 program of this host on an emulated x86 CPU (provisioned on first
    use): `[*x86_64_emulator(), sys.executable, "-c", code]`."""
    return [str(provision(cache, quiet=True) / "qemu" / "qemu-x86_64"), "-cpu", cpu]


# Runs ONNX files on the feeds an .npz holds ("ROW:INPUT" -> array, one batch per row) and saves their outputs,
# stacked, as arr_0, arr_1, ...: onnxruntime and numpy only, so that it starts fast under the emulator.
ONNX_RUNNER = """
import sys, numpy as np, onnxruntime as ort
feeds = np.load(sys.argv[1]); n = len({k.split(":")[0] for k in feeds}); out = []
for path in sys.argv[3:]:
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [i.name for i in s.get_inputs()]
    out.append(np.concatenate([s.run(None, {k: feeds[f"{i}:{k}"] for k in names})[0] for i in range(n)]))
np.savez(sys.argv[2], *out)
"""


def run_onnx_files(feeds: Path, models: list[Path], work: Path, emulated_avx2: bool) -> list:
    """The outputs of each ONNX file in `models` on the feeds in `feeds`, computed by this host's Python in a
    fresh process: on this CPU, or with `emulated_avx2` on the emulated AVX2-only x86 (x86_64_emulator)."""
    import numpy as np

    work.mkdir(parents=True, exist_ok=True)
    script, out = work / "onnx_runner.py", work / f"outputs_{'avx2' if emulated_avx2 else 'here'}.npz"
    script.write_text(ONNX_RUNNER)
    prefix = x86_64_emulator() if emulated_avx2 else []
    _run([*prefix, sys.executable, str(script), str(feeds), str(out), *map(str, models)], timeout=3600)
    got = np.load(out)
    return [got[f"arr_{i}"] for i in range(len(models))]


def _build_root(apt: PrivateApt, tmp: Path) -> dict:
    debs = apt.download_closure(list(ROOT_PACKAGES))
    for deb in debs:
        _run(["dpkg-deb", "-x", str(deb), str(tmp)])
    for doc in ("usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/lintian"):
        shutil.rmtree(tmp / doc, ignore_errors=True)
    info = [_deb_info(d) for d in debs]
    by_name = {d["package"]: d["version"] for d in info}
    glibc = tuple(int(x) for x in re.match(r"(\d+)\.(\d+)", by_name["libc6"]).groups())
    if glibc != BOARD_GLIBC or not (tmp / f"usr/bin/python{BOARD_PYTHON}").exists():
        found = sorted(p.name for p in tmp.glob("usr/bin/python3*"))
        raise ProvisionError(
            f"the {SUITE} arm64 root has glibc {glibc} and {found}, "
            f"the pins expect glibc {BOARD_GLIBC} and python{BOARD_PYTHON}"
        )
    # Debian compiles its stdlib in postinst, which an unpacked root never runs: compile it here with the host's
    # python when it is the same minor version (same bytecode), so the emulated python3 does not on first use.
    if sys.version_info[:2] == tuple(map(int, BOARD_PYTHON.split("."))):
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", "-j0", str(tmp / f"usr/lib/python{BOARD_PYTHON}")],
            capture_output=True,
        )
    return {"debs": info, "glibc": ".".join(map(str, glibc)), "python": by_name.get(f"python{BOARD_PYTHON}-minimal")}


def _build_site(tmp: Path) -> dict:
    platforms = [f"manylinux_2_{minor}_aarch64" for minor in range(BOARD_GLIBC[1], 16, -1)] + ["manylinux2014_aarch64"]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
        "--no-cache-dir",
        "--target",
        str(tmp),
        "--only-binary=:all:",
        "--python-version",
        BOARD_PYTHON,
        "--implementation",
        "cp",
        "--abi",
        "cp" + BOARD_PYTHON.replace(".", ""),
    ]
    for plat in platforms:
        cmd += ["--platform", plat]
    _run([*cmd, *WHEELS])
    # sys.executable on the board is the aarch64 binary, which the host cannot exec without binfmt: point it at
    # the launcher, so that code starting a fresh python (subprocess, multiprocessing) runs on the board too.
    (tmp / "sitecustomize.py").write_text(
        "import os, sys\n"
        "if os.environ.get('EDGETUNE_BOARD_PYTHON'):\n"
        "    sys.executable = os.environ['EDGETUNE_BOARD_PYTHON']\n"
    )
    got = {}
    for dist in tmp.glob("*.dist-info"):
        meta = (dist / "METADATA").read_text(errors="replace")
        name = re.search(r"^Name: (.+)$", meta, re.M).group(1)
        tags = re.findall(r"^Tag: (.+)$", (dist / "WHEEL").read_text(), re.M)
        got[name] = {"version": re.search(r"^Version: (.+)$", meta, re.M).group(1), "tags": tags}
    return {"wheels": got}


LAUNCHER = r"""#!/bin/sh
# python3 of the emulated arm64 board: Debian's aarch64 python{py} under qemu-user.
# QEMU_CPU picks the CPU (default: $EDGETUNE_BOARD_CPU, else {cpu}); `qemu-aarch64 -cpu help` lists them.
board="$(cd "$(dirname "$0")/.." && pwd)"
export QEMU_LD_PREFIX="$board/root"
export QEMU_CPU="${{QEMU_CPU:-${{EDGETUNE_BOARD_CPU:-{cpu}}}}}"
export PYTHONPATH="$board/root/{site}${{PYTHONPATH:+:$PYTHONPATH}}"
export EDGETUNE_BOARD_PYTHON="$board/bin/python3"
exec "$board/qemu/qemu-aarch64" "$board/root/usr/bin/python{py}" "$@"
"""


def _launcher_text() -> str:
    return LAUNCHER.format(py=BOARD_PYTHON, cpu=DEFAULT_CPU, site=SITE)


def _write_launchers(base: Path) -> None:
    bindir = base / "bin"
    bindir.mkdir(exist_ok=True)
    script = _launcher_text()
    target = bindir / "python3"
    if not target.exists() or target.read_text() != script:
        tmp = bindir / ".python3.tmp"
        tmp.write_text(script)
        tmp.chmod(0o755)
        tmp.replace(target)
    for alias in (f"python{BOARD_PYTHON}", "python"):
        link = bindir / alias
        if not link.is_symlink():
            link.unlink(missing_ok=True)
            link.symlink_to("python3")


@contextlib.contextmanager
def _locked(base: Path):
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _ready(base: Path, parts: dict[str, Part]) -> bool:
    launcher = base / "bin" / "python3"
    return (
        all(p.done(base) for p in parts.values())
        and (base / "manifest.json").exists()
        and launcher.exists()
        and launcher.read_text() == _launcher_text()
    )


def provision(cache: str | os.PathLike | None = None, quiet: bool = False) -> Path:
    """Fetch and unpack whatever of the board is not in the cache yet; return the board's folder."""
    say = (lambda msg: None) if quiet else _log
    if os.uname().machine != "x86_64":
        raise ProvisionError(f"the board is built for an x86_64 host, this one is {os.uname().machine}")
    for tool in ("apt-get", "apt-cache", "dpkg-deb", "dpkg-query", "tar", "ldd", "ssh", "ssh-keygen", "scp"):
        if shutil.which(tool) is None:
            raise ProvisionError(f"{tool} is not on PATH")
    base = cache_dir(cache)
    t0 = time.monotonic()
    parts = _parts()
    if _ready(base, parts):  # no lock needed (and a read-only cache works)
        manifest = json.loads((base / "manifest.json").read_text())
        say(
            f"cached in {base}: {_summary('qemu', manifest['qemu'])}; {_summary('root', manifest['root'])}; "
            f"onnxruntime {manifest['site']['wheels']['onnxruntime']['version']}"
        )
        return base
    with _locked(base):
        todo = [p for p in parts.values() if not p.done(base)]
        work = base / "work"
        shutil.rmtree(work, ignore_errors=True)
        try:
            amd64 = None
            for part in todo:
                t = time.monotonic()
                tmp = work / part.name
                tmp.mkdir(parents=True)
                if part.name in ("qemu", "sshd"):
                    if amd64 is None:
                        amd64 = PrivateApt(
                            work / "apt-amd64",
                            "amd64",
                            [
                                (DEBIAN_MIRROR, SUITE),
                                (DEBIAN_MIRROR, f"{SUITE}-updates"),
                                (DEBIAN_SECURITY, f"{SUITE}-security"),
                                (DEBIAN_MIRROR, f"{SUITE}-backports"),
                            ],
                        )
                        amd64.update()
                    info = (_build_qemu if part.name == "qemu" else _build_sshd)(amd64, tmp)
                    shutil.rmtree(amd64.folder / "debs")
                    (amd64.folder / "debs").mkdir()
                elif part.name == "root":
                    arm64 = PrivateApt(
                        work / "apt-arm64",
                        "arm64",
                        [
                            (DEBIAN_MIRROR, SUITE),
                            (DEBIAN_MIRROR, f"{SUITE}-updates"),
                            (DEBIAN_SECURITY, f"{SUITE}-security"),
                        ],
                    )
                    arm64.update()
                    info = _build_root(arm64, tmp)
                    # the new root replaces the old one and the wheels installed in it
                    parts["site"].stamp(base).unlink(missing_ok=True)
                    if parts["site"] not in todo:
                        todo.append(parts["site"])
                else:
                    info = _build_site(tmp)
                _install_dir(tmp, base / part.path)
                part.record(base, {**info, "seconds": round(time.monotonic() - t, 1)})
                say(f"{part.name}: {_summary(part.name, info)} ({time.monotonic() - t:.1f} s)")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        _write_launchers(base)
        manifest = {name: part.info(base) for name, part in parts.items()}
        (base / "manifest.json").write_text(json.dumps(manifest, indent=1))
    say(f"ready in {time.monotonic() - t0:.1f} s: {base / 'bin' / 'python3'}")
    return base


def _summary(name: str, info: dict) -> str:
    if name == "qemu":
        return info["qemu"]
    if name == "sshd":
        return info["sshd"]
    if name == "root":
        return (
            f"{SUITE} arm64 root, {len(info['debs'])} packages, python{BOARD_PYTHON} {info['python']}, "
            f"glibc {info['glibc']}"
        )
    return ", ".join(f"{k} {v['version']}" for k, v in sorted(info["wheels"].items()))


# ---- the sshd board ------------------------------------------------------------------------------------
@dataclasses.dataclass
class Board:
    """How to reach a running board. `alias` is its Host name in `ssh_config`."""

    host: str
    port: int
    user: str
    identity_file: str
    cpu: str
    ssh_config: str
    alias: str
    state_dir: str
    pid: int

    def ssh_args(self) -> list[str]:
        """argv prefix for ssh: append a command (one string, run by the board's shell)."""
        return ["ssh", "-F", self.ssh_config, self.alias]

    def run(self, command: str, check: bool = True, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
        """Run a shell command on the board; `python3` in it is the emulated aarch64 one."""
        res = subprocess.run([*self.ssh_args(), command], text=True, capture_output=True, timeout=timeout, **kw)
        if check and res.returncode != 0:
            raise subprocess.CalledProcessError(res.returncode, command, res.stdout, res.stderr)
        return res

    def python(self, code: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run Python source on the board (sent on stdin to the board's python3)."""
        return self.run("python3 -", check=check, timeout=timeout, input=code)

    def put(self, local: str | os.PathLike, remote: str) -> None:
        """Copy a file to the board (scp over SFTP); a relative `remote` is under the board's home."""
        subprocess.run(
            ["scp", "-F", self.ssh_config, "-q", str(local), f"{self.alias}:{remote}"],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def get(self, remote: str, local: str | os.PathLike) -> None:
        subprocess.run(
            ["scp", "-F", self.ssh_config, "-q", f"{self.alias}:{remote}", str(local)],
            check=True,
            capture_output=True,
            timeout=120,
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _passwd_for_board(home: Path) -> str:
    """The host's /etc/passwd with root's home and shell set for the board, plus sshd's privsep user."""
    lines = Path("/etc/passwd").read_text().splitlines()
    out, has_sshd = [], False
    for line in lines:
        f = line.split(":")
        if f[0] == "root":
            f[5], f[6] = str(home), "/bin/sh"
        has_sshd |= f[0] == "sshd"
        out.append(":".join(f))
    if not has_sshd:
        used = {int(line.split(":")[2]) for line in lines if line.count(":") >= 6}
        uid = next(u for u in range(65533, 1000, -1) if u not in used)
        out.append(f"sshd:x:{uid}:65534:sshd privsep:/run/sshd:/usr/sbin/nologin")
    return "\n".join(out) + "\n"


NS_SCRIPT = """set -e
mount -n -t tmpfs -o mode=755,size=1m edgetune-board /run
mkdir -m 755 /run/sshd
mount -n --bind "$1" /etc/passwd
shift
exec "$@"
"""


def start(cpu: str = DEFAULT_CPU, cache: str | os.PathLike | None = None, state_dir: str | None = None) -> Board:
    """Start an sshd board whose python3 emulates `cpu` (QEMU_CPU); the cache must be provisioned."""
    base = cache_dir(cache)
    parts = _parts()
    if not all(p.done(base) for p in parts.values()) or not (base / "bin/python3").exists():
        raise ProvisionError(f"{base} is not provisioned: run provision() first")
    cpus = subprocess.run(
        [str(base / "qemu/qemu-aarch64"), "-cpu", "help"],  # exits 1 after the list
        text=True,
        capture_output=True,
    ).stdout.split()
    if cpu not in cpus:
        raise ValueError(f"qemu-aarch64 has no CPU {cpu!r}; it has {' '.join(c for c in cpus if c[0].islower())}")
    if os.geteuid() == 0 and shutil.which("unshare") is None:
        raise ProvisionError("unshare (util-linux) is not on PATH")
    state = Path(state_dir or tempfile.mkdtemp(prefix=f"edgetune-board-{cpu}-"))
    try:
        return _start(cpu, base, state)
    except BaseException:
        if state_dir is None:
            shutil.rmtree(state, ignore_errors=True)
        raise


def _start(cpu: str, base: Path, state: Path, wait: float = 20.0) -> Board:
    home = state / "home"
    home.mkdir(parents=True, exist_ok=True)
    for key in ("host_key", "id_ed25519"):
        if not (state / key).exists():
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"edgetune-board-{key}", "-f", str(state / key)])
    (state / "authorized_keys").write_text((state / "id_ed25519.pub").read_text())
    root = os.geteuid() == 0
    user = "root" if root else pwd.getpwuid(os.getuid()).pw_name
    sshd_dir = base / "sshd"
    env = dict(os.environ, LD_LIBRARY_PATH=_sshd_libpath(sshd_dir))
    moduli = sshd_dir / "etc/ssh/moduli"
    last_err = ""
    for _attempt in range(3):
        port = _free_port()
        cfg = state / "sshd_config"
        cfg.write_text(
            "\n".join(
                [
                    "ListenAddress 127.0.0.1",
                    f"Port {port}",
                    f"HostKey {state / 'host_key'}",
                    "PidFile none",
                    f"AuthorizedKeysFile {state / 'authorized_keys'}",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "PermitRootLogin prohibit-password",
                    "StrictModes no",  # the key files live under /tmp, which is world-writable
                    f"Subsystem sftp {sshd_dir / 'usr/lib/openssh/sftp-server'}",
                    *([f"ModuliFile {moduli}"] if moduli.exists() else []),
                    # PATH: the board's python3 first. EDGETUNE_BOARD_CPU: this board's CPU; a session may still pick
                    # another with QEMU_CPU (ssh -o SetEnv=QEMU_CPU=..., or in the command itself).
                    f'SetEnv "PATH={base / "bin"}:{STD_PATH}" EDGETUNE_BOARD_CPU={cpu} LANG=C.UTF-8',
                    "AcceptEnv QEMU_CPU",
                    "PermitUserRC no",
                    "PrintMotd no",
                    "PrintLastLog no",
                    "X11Forwarding no",
                    "AllowAgentForwarding no",
                    "MaxStartups 64",
                    "MaxSessions 64",
                    "LogLevel INFO",
                    "",
                ]
            )
        )
        sshd = [str(sshd_dir / "usr/sbin/sshd"), "-D", "-e", "-f", str(cfg)]
        if root:
            (state / "passwd").write_text(_passwd_for_board(home))
            cmd = [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "/bin/sh",
                "-c",
                NS_SCRIPT,
                "board-sshd",
                str(state / "passwd"),
                *sshd,
            ]
        else:
            cmd = sshd
        log = open(state / "sshd.log", "w")
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and proc.poll() is None:
            if "Server listening on" in (state / "sshd.log").read_text():
                break
            time.sleep(0.05)
        if proc.poll() is None and "Server listening on" in (state / "sshd.log").read_text():
            break
        last_err = (state / "sshd.log").read_text()
        _kill(proc.pid, proc)
        if "Address already in use" not in last_err:
            raise ProvisionError(f"sshd did not start ({' '.join(cmd)}):\n{last_err}")
    else:
        raise ProvisionError(f"sshd did not start after 3 ports:\n{last_err}")
    pubkey = (state / "host_key.pub").read_text().split()
    (state / "known_hosts").write_text(f"[127.0.0.1]:{port} {pubkey[0]} {pubkey[1]}\n")
    alias = f"edgetune-arm64-{cpu}"
    (state / "ssh_config").write_text(
        "\n".join(
            [
                f"Host {alias}",
                "  HostName 127.0.0.1",
                f"  Port {port}",
                f"  User {user}",
                f"  IdentityFile {state / 'id_ed25519'}",
                "  IdentitiesOnly yes",
                "  BatchMode yes",
                f"  UserKnownHostsFile {state / 'known_hosts'}",
                "  GlobalKnownHostsFile /dev/null",
                "  StrictHostKeyChecking yes",
                "  LogLevel ERROR",
                "",
            ]
        )
    )
    board = Board(
        host="127.0.0.1",
        port=port,
        user=user,
        identity_file=str(state / "id_ed25519"),
        cpu=cpu,
        ssh_config=str(state / "ssh_config"),
        alias=alias,
        state_dir=str(state),
        pid=proc.pid,
    )
    (state / "board.json").write_text(json.dumps(dataclasses.asdict(board), indent=1))
    board._proc = proc  # noqa: SLF001 - reaped by stop() in this process
    return board


def _kill(pid: int, proc: subprocess.Popen | None = None, timeout: float = 10.0) -> None:
    """SIGTERM the process group that start() made for sshd (start_new_session), then SIGKILL if need be."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    if proc is not None:  # our child: wait for it
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            proc.wait()
        return
    deadline = time.monotonic() + timeout  # started by another process (`start`, then `stop`): poll
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def stop(board: Board | str | os.PathLike, remove: bool = True) -> None:
    """Stop a board (a Board, or the state folder of one started by `start`) and remove its temp folder."""
    if not isinstance(board, Board):
        board = Board(**json.loads((Path(board) / "board.json").read_text()))
    _kill(board.pid, getattr(board, "_proc", None))
    if remove:
        shutil.rmtree(board.state_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", help="default: ${EDGETUNE_CACHE:-~/.cache/edgetune}")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("provision", help="download and unpack the board into the cache")
    for name in ("start", "serve"):
        p = sub.add_parser(name, help="start an sshd board" + (" and wait for Ctrl-C" if name == "serve" else ""))
        p.add_argument("--cpu", default=DEFAULT_CPU, help="QEMU_CPU of the board (default: max)")
    p = sub.add_parser("stop", help="stop a board started with `start`")
    p.add_argument("state_dir")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "provision":
            provision(args.cache)
        elif args.cmd == "stop":
            stop(args.state_dir)
        else:
            provision(args.cache, quiet=True)
            board = start(args.cpu, args.cache)
            info = dataclasses.asdict(board)
            print(json.dumps(info, indent=1))
            print(
                f"# ssh -F {board.ssh_config} {board.alias} python3 -c 'import platform; print(platform.machine())'",
                file=sys.stderr,
            )
            if args.cmd == "serve":
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
                try:
                    signal.sigwait({signal.SIGINT, signal.SIGTERM})
                finally:
                    stop(board)
    except ProvisionError as e:
        print(f"arm64-board: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
