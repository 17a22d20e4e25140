"""Device bundles for Linux boards and `edgetune bench --ssh`: the bundle and its runner, the ssh flow against a
real sshd, each way a board can be unusable (one line, exit 2), a golden case that fails on the device (exit 1),
and the result in the run's report.

The board comes from one fixture, `board`: by default the emulated arm64 board of tests/board with QEMU_CPU=max
(SshBoard.from_emulated); EDGETUNE_TEST_SSH_BOARD=arm64-cortex-a53 picks the other CPU, =local an OpenSSH sshd on
127.0.0.1 (a throw-away host key and user key, started in a mount namespace whose /etc/passwd gives root a home in
tmp_path, so nothing under /root is touched) whose Python is this venv's. The golden check of the classifier also
runs on a cortex-a53 board in every run.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from board import arm64_boards  # noqa: F401  (fixture)
from board import sshd as board_sshd
from click.testing import CliRunner
from conftest import tiny_classifier_recipe

from edgetune import runner
from edgetune.cli import cli
from edgetune.device.bundle import bundle_sha256, read_bundle

# one worker under pytest-xdist (-n N) boots the emulated boards and runs every test that uses them
pytestmark = pytest.mark.xdist_group("arm64-board")


@dataclass(frozen=True)
class SshBoard:
    """How `edgetune bench --ssh` reaches a board, and what it is."""

    host: str
    port: int
    user: str
    identity: Path
    known_hosts: Path
    python: str  # the board's Python with numpy and onnxruntime
    target: str  # the bundle target the board runs: linux-x86_64 | linux-arm64
    arch: str  # what its Python's platform.machine() says
    home: Path | None = None  # the login directory, when it is on this machine

    @classmethod
    def from_emulated(cls, b) -> SshBoard:
        """tests/board's emulated arm64 Board (its sessions find the aarch64 python3 first on PATH)."""
        return cls(
            b.host,
            b.port,
            b.user,
            Path(b.identity_file),
            Path(b.state_dir) / "known_hosts",
            "python3",
            "linux-arm64",
            "aarch64",
            Path(b.state_dir) / "home",
        )

    def args(self, python: str | None = None) -> list[str]:
        return [
            "--ssh",
            f"{self.user}@{self.host}",
            "--port",
            str(self.port),
            "--identity",
            str(self.identity),
            "--python",
            python or self.python,
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
        ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


NAMESPACE = (
    'mount -t tmpfs tmpfs /run && mkdir -m 0755 /run/sshd && mount --bind "$1" /etc/passwd && shift && exec "$@"'
)


@contextlib.contextmanager
def local_sshd(d: Path, sftp: bool = True):
    """An sshd on 127.0.0.1 whose sessions log in as this user into a home in `d`, with this venv's Python. The
    server is always the OpenSSH that tests/board unpacks, never a system sshd: the same on every machine, and a
    fresh machine needs no openssh-server."""
    server = board_sshd()
    home = d / "home"
    home.mkdir()
    for key in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    (d / "authorized_keys").write_text((d / "user_key.pub").read_text())
    root = os.geteuid() == 0
    user = "root" if root else os.environ.get("USER") or subprocess.check_output(["id", "-un"], text=True).strip()
    port = _free_port()
    (d / "sshd_config").write_text(
        "\n".join(
            [
                "ListenAddress 127.0.0.1",
                f"Port {port}",
                f"HostKey {d / 'host_key'}",
                "PidFile none",
                f"AuthorizedKeysFile {d / 'authorized_keys'}",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "PermitRootLogin prohibit-password",
                "StrictModes no",  # the keys live under /tmp, which is world-writable
                *([f"Subsystem sftp {server.sftp_server}"] if sftp else []),
                "PrintMotd no",
                "LogLevel INFO",
                "",
            ]
        )
    )
    cmd = [server.sshd, "-D", "-e", "-f", str(d / "sshd_config")]
    if root:  # root's home is this test's folder, in sshd's own mount namespace: /root and /run stay untouched
        passwd = [
            ln if not ln.startswith("root:") else ":".join(ln.split(":")[:5] + [str(home), "/bin/sh"])
            for ln in Path("/etc/passwd").read_text().splitlines()
        ]
        if not any(ln.startswith("sshd:") for ln in passwd):
            passwd.append("sshd:x:65534:65534::/run/sshd:/usr/sbin/nologin")
        (d / "passwd").write_text("\n".join(passwd) + "\n")
        cmd = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "/bin/sh",
            "-c",
            NAMESPACE,
            "sshd-ns",
            str(d / "passwd"),
            *cmd,
        ]
    with open(d / "sshd.log", "w") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=server.env)
    try:
        deadline = time.monotonic() + 15
        while "Server listening" not in (d / "sshd.log").read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"sshd did not start: {(d / 'sshd.log').read_text()}", pytrace=False)
            time.sleep(0.05)
        yield SshBoard(
            "127.0.0.1",
            port,
            user,
            d / "user_key",
            d / "known_hosts",
            sys.executable,
            "linux-x86_64",
            "x86_64",
            home if root else Path.home(),
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def board(tmp_path_factory):
    """The board every ssh test uses: the emulated arm64 board (cortex-a53 or max: EDGETUNE_TEST_SSH_BOARD, default
    arm64-max), or with EDGETUNE_TEST_SSH_BOARD=local a local sshd running this venv's Python (faster)."""
    which = os.environ.get("EDGETUNE_TEST_SSH_BOARD", "arm64-max")
    if which.startswith("arm64-"):
        from board import running_board

        with running_board(which.removeprefix("arm64-")) as b:
            yield SshBoard.from_emulated(b)
    else:
        with local_sshd(tmp_path_factory.mktemp("sshd")) as b:
            yield b


def _edit_golden(bundle: Path, golden: dict) -> None:
    """Write new expected outputs into a bundle, and their hash into its manifest (which the runner checks)."""
    from edgetune.core.data import file_sha256

    (bundle / "golden.json").write_text(json.dumps(golden))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["bundle"]["files"]["golden.json"] = file_sha256(bundle / "golden.json")
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def _bench(target: Path, *args: str):
    return CliRunner().invoke(cli, ["bench", str(target), *args])


def _one_line_error(result, code: int, *words: str) -> str:
    err = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert result.exit_code == code, result.output
    assert len(err) == 1 and "Traceback" not in result.output, result.output
    for w in words:
        assert w in err[0], err[0]
    return err[0]


# -- the bundle ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_bert):
    """A tiny BERT run packaged for the Android app and for both Linux targets: the run dir."""
    tmp = tmp_path_factory.mktemp("dev")
    (tmp / "android" / "app").mkdir(parents=True)
    (tmp / "android" / "app" / "build.gradle.kts").write_text("// stand-in\n")
    recipe = tiny_classifier_recipe(
        tmp,
        tiny_bert,
        name="tiny-dev",
        package={"android": "android", "golden": 8, "linux": ["x86_64", "arm64"]},
        benchmark={"threads": 1, "sequence_lengths": [8, 16], "warmup": 1, "runs": 5, "rounds": 1},
    )
    r = CliRunner().invoke(cli, ["build", str(recipe), "--out", str(tmp / "run"), "--no-progress"])
    assert r.exit_code == 0, r.output
    return tmp / "run"


def test_bundle_holds_the_package_and_the_runner(run):
    pkg = run / "package"
    for target, files in (("linux-arm64", {"model.onnx", "model.ort"}), ("linux-x86_64", {"model.onnx"})):
        b = pkg / target
        manifest = read_bundle(b)
        info = manifest.bundle
        assert info["target"] == target and info["requires"] == ["numpy", "onnxruntime", "onnxruntime-extensions"]
        assert {m["file"] for m in info["models"]} == files
        assert set(info["files"]) == files | {"golden.json", "run_device.py"}
        for name in files:  # exactly the package stage's files
            assert (b / name).read_bytes() == (pkg / name).read_bytes()
        assert json.loads((b / "golden.json").read_text()) == json.loads((pkg / "golden.json").read_text())
        assert (b / "run_device.py").read_text() == Path(runner.__file__).read_text()
        assert info["defaults"] == {
            "threads": 1,
            "warmup": 1,
            "runs": 5,
            "sequence_lengths": [8, 16],
            "new_tokens": 64,
            "rounds": 1,
        }
        assert info["special_tokens"] == 2 and info["max_length"] == 16 and "lights" in info["bench_words"]
    # the Android app got the package without the bundles
    assets = run.parent / "android" / "app" / "src" / "main" / "assets" / "edgetune"
    assert (assets / "model.onnx").is_file() and not any(p.name.startswith("linux-") for p in assets.iterdir())


def test_runner_needs_only_python39_numpy_and_onnxruntime():
    """No torch, no edgetune, no transformers: the runner imports the stdlib and the runtime packages only, and
    parses as Python 3.9."""
    source = Path(runner.__file__).read_text()
    tree = ast.parse(source, feature_version=(3, 9))
    modules = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
    allowed = {"numpy", "onnxruntime", "onnxruntime_genai", "__future__"}
    assert modules - allowed <= set(sys.stdlib_module_names), modules - allowed - set(sys.stdlib_module_names)


def test_runner_on_this_machine(run, tmp_path):
    """run_device.py by itself: one JSON document, the golden cases pass, the host benchmark's statistics."""
    b = shutil.copytree(run / "package" / "linux-x86_64", tmp_path / "b")
    proc = subprocess.run(
        [sys.executable, str(b / "run_device.py"), "--runs", "4", "--seq", "8", "--seq", "12"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["status"] == "ok" and doc["error"] is None and doc["schema_version"] == 1
    assert doc["device"]["arch"] == "x86_64" and doc["device"]["emulated"] is False
    assert doc["device"]["onnxruntime"] and doc["device"]["cores"] >= 1 and doc["device"]["ram_mb"] > 0
    assert doc["settings"]["runs"] == 4 and doc["settings"]["threads"] == 1
    g = doc["golden"]["models"]["model.onnx"]
    assert g["passed"] and g["cases"] == 8 and g["max_abs_diff"] <= doc["golden"]["max_abs_diff_limit"]
    assert [r["seq_len"] for r in doc["results"]] == [8, 12]
    for r in doc["results"]:
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] and r["throughput_per_s"] > 0
    assert doc["models"]["device_int8"]["peak_rss_mb"] > 0
    # the arm64 bundle refuses this machine, with exit 2
    proc = subprocess.run(
        [sys.executable, str(run / "package" / "linux-arm64" / "run_device.py")], capture_output=True, text=True
    )
    doc = json.loads(proc.stdout)
    assert (
        proc.returncode == 2
        and doc["error"]["kind"] == "abi"
        and "the bundle is for linux-arm64" in doc["error"]["message"]
    )


def test_runner_refuses_a_damaged_file(run, tmp_path):
    b = shutil.copytree(run / "package" / "linux-x86_64", tmp_path / "b")
    with open(b / "model.onnx", "r+b") as f:
        f.seek(100)
        f.write(b"\0" * 8)
    proc = subprocess.run([sys.executable, str(b / "run_device.py")], capture_output=True, text=True)
    doc = json.loads(proc.stdout)
    assert proc.returncode == 2 and doc["error"] == {
        "kind": "corrupt",
        "message": "model.onnx differs from the bundle (sha256 mismatch)",
        "file": "model.onnx",
    }


def test_package_target_and_dest(run, tmp_path):
    r = CliRunner().invoke(cli, ["package", str(run), "--target", "linux-x86_64", "--dest", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    assert f"device bundle copied to: {tmp_path / 'b'}" in r.output
    assert bundle_sha256(tmp_path / "b") == bundle_sha256(run / "package" / "linux-x86_64")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    r = CliRunner().invoke(cli, ["package", str(run), "--target", "linux-x86_64", "--dest", str(tmp_path / "other")])
    _one_line_error(r, 2, "is not an edgetune device bundle")
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


# -- emulation ----------------------------------------------------------------------------------------------
def _proc(tmp_path: Path, self_exe: str, thread_exe: str) -> str:
    for name, exe in (("self", self_exe), ("thread-self", thread_exe)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "exe").symlink_to(exe)
    return str(tmp_path)


def test_emulation_from_the_thread_exe(tmp_path):
    """qemu-user fakes /proc/self/exe (the guest python) but not /proc/thread-self/exe (the emulator)."""
    arm = {"cpu implementer": "0x41", "features": "fp asimd"}
    proc = _proc(tmp_path, "/usr/bin/python3.11", "/opt/qemu/qemu-aarch64")
    emulated, why = runner.detect_emulation("aarch64", arm, proc)
    assert emulated is True and "qemu-user" in why and "/opt/qemu/qemu-aarch64" in why


def test_native_and_unknown(tmp_path):
    arm = {"cpu implementer": "0x41", "features": "fp asimd"}
    proc = _proc(tmp_path, "/usr/bin/python3.11", "/usr/bin/python3.11")
    assert runner.detect_emulation("aarch64", arm, proc)[0] is False
    # older qemu passes the host's /proc/cpuinfo through: an x86 CPU under an aarch64 Python
    x86 = {"vendor_id": "GenuineIntel", "model name": "Intel Xeon", "flags": "avx2"}
    emulated, why = runner.detect_emulation("aarch64", x86, proc)
    assert emulated is True and "x86 CPU (Intel Xeon)" in why
    assert runner.detect_emulation("aarch64", arm, str(tmp_path / "nothing"))[0] is None


def test_this_machine_is_not_emulated():
    import platform

    fields = runner.cpuinfo_fields(Path("/proc/cpuinfo").read_text())
    assert runner.detect_emulation(platform.machine(), fields)[0] is False


def test_abi_problems():
    assert runner.abi_problem("linux-arm64", "aarch64", 64) is None
    assert runner.abi_problem("linux-x86_64", "x86_64", 64) is None
    assert "32-bit ARM" in runner.abi_problem("linux-arm64", "armv7l", 32)
    assert "32-bit OS or Python" in runner.abi_problem("linux-arm64", "aarch64", 32)
    assert "--target linux-x86_64" in runner.abi_problem("linux-arm64", "x86_64", 64)
    assert "--target linux-arm64" in runner.abi_problem("linux-x86_64", "aarch64", 64)


def test_probe_checks():
    """What the probe of the board decides before anything is copied (the probe itself runs in the ssh tests)."""
    from edgetune.core.errors import RecipeError
    from edgetune.device.probe import check_probe
    from edgetune.device.transport import remote_exe

    ok = {"python": "3.11.2", "machine": "aarch64", "bits": 64, "modules": {"numpy": True, "onnxruntime": True}}
    check_probe(ok, "linux-arm64", ["numpy", "onnxruntime"], "python3", "pi@pi")
    with pytest.raises(RecipeError, match=r"is Python 3\.7\.3; the runner needs 3\.9\+"):
        check_probe({**ok, "python": "3.7.3"}, "linux-arm64", ["numpy"], "python3", "pi@pi")
    with pytest.raises(RecipeError, match="armv7l \\(32-bit ARM\\)"):
        check_probe({**ok, "machine": "armv7l", "bits": 32}, "linux-arm64", ["numpy"], "python3", "pi@pi")
    assert remote_exe("python3") == "python3"
    assert remote_exe("~/venv/bin/python") == remote_exe("venv/bin/python") == '"$HOME"/venv/bin/python'
    assert remote_exe("/opt/py 3/python") == "'/opt/py 3/python'"


# -- edgetune bench --ssh -----------------------------------------------------------------------------------
def test_bench_ssh_checks_benchmarks_and_reports(run, board):
    r = _bench(run, *board.args(), "--runs", "5")
    assert r.exit_code == 0, r.output
    assert "device_int8" in r.output and "p50 ms" in r.output and "items/s" in r.output
    assert "golden model.onnx: 8/8 cases within tolerance" in r.output and ": pass" in r.output
    assert "copying the bundle" in r.output
    saved = list((run / "devices").glob("*.json"))
    assert len(saved) == 1
    doc = json.loads(saved[0].read_text())
    assert doc["ssh"] == f"{board.user}@{board.host}:{board.port}" and doc["bundle"]["target"] == board.target
    assert doc["bundle"]["sha256"] == bundle_sha256(run / "package" / board.target)
    report = json.loads((run / "report" / "report.json").read_text())
    assert [d["ssh"] for d in report["devices"]] == [doc["ssh"]]
    md = (run / "report" / "report.md").read_text()
    assert "## On devices" in md and "golden `model.onnx`: 8/8 cases within tolerance" in md
    # the report's files are what the manifest records, so `build` does not see them as changed
    from edgetune.core.rundir import RunDir

    rd = RunDir(run)
    assert rd.hash_outputs("report") == rd.entry("report").outputs
    # the same bundle again: not copied
    r = _bench(run, *board.args(), "--runs", "3")
    assert r.exit_code == 0, r.output
    assert "not copied again" in r.output and "copying the bundle" not in r.output
    if board.home is not None:  # the hash file on the device is the bundle's
        remote = board.home / ".cache" / "edgetune" / f"tiny-dev-{board.target}"
        assert (remote / ".edgetune-bundle.sha256").read_text().strip() == doc["bundle"]["sha256"]
        # a file damaged on the device since: the runner notices, the bundle is copied again and runs
        with open(remote / "model.onnx", "r+b") as f:
            f.seek(200)
            f.write(b"\xff" * 4)
        r = _bench(run, *board.args(), "--runs", "2")
        assert r.exit_code == 0, r.output
        assert (
            "model.onnx differs from the bundle (sha256 mismatch)" in r.output
            and "copying the bundle again" in r.output
        )


def test_golden_cases_pass_on_a_cortex_a53_board(run, arm64_boards, tmp_path):  # noqa: F811 (fixture)
    """The other ARM CPU generation (plain NEON, no dot product: other int8 kernels than on `max`), end to end:
    golden cases within verify's tolerances, the device marked emulated in the report."""
    b = SshBoard.from_emulated(arm64_boards("cortex-a53"))
    r = _bench(run, *b.args(), "--runs", "2", "--seq", "8")
    assert r.exit_code == 0, r.output
    assert "golden model.onnx: 8/8 cases within tolerance" in r.output and "golden model.ort: 8/8" in r.output
    report = json.loads((run / "report" / "report.json").read_text())
    mine = [d for d in report["devices"] if d["ssh"].endswith(f":{b.port}")]
    assert mine and mine[0]["device"]["emulated"] is True and mine[0]["device"]["arch"] == "aarch64"
    assert "asimddp" not in mine[0]["device"]["ml_features"]


def test_golden_failure_on_the_device(run, board, tmp_path):
    """A golden case the device does not reproduce: exit 1, naming the case and by how much. (The expected logits
    are shifted, which is how a device computing other logits looks from the host.) Also: a bundle whose hash
    changed is copied again."""
    b = shutil.copytree(run / "package" / board.target, tmp_path / "bundle")
    golden = json.loads((b / "golden.json").read_text())
    golden["cases"][2]["pytorch_logits"] = [x + 0.5 for x in golden["cases"][2]["pytorch_logits"]]
    _edit_golden(b, golden)
    r = _bench(b, *board.args(), "--runs", "2")
    err = _one_line_error(
        r, 1, "golden check failed on", "(model.onnx): 1/8 cases; case 2", "max|diff| 0.5", "(<= 0.05)"
    )
    assert f"'{golden['cases'][2]['text'][:20]}" in err
    assert "copying the bundle" in r.output


def test_bench_ssh_without_ssh_client(run, board, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    _one_line_error(_bench(run, *board.args()), 2, "ssh and scp not found on PATH", "openssh-client")


def test_bench_ssh_unreachable(run, board):
    args = board.args()
    args[args.index("--port") + 1] = str(_free_port())  # nothing listens there
    _one_line_error(_bench(run, *args), 2, "is unreachable", "Connection refused")


def test_bench_ssh_authentication_refused(run, board, tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "stranger")], check=True)
    args = board.args()
    args[args.index("--identity") + 1] = str(tmp_path / "stranger")
    _one_line_error(_bench(run, *args), 2, "refused authentication", "ssh-copy-id", "Permission denied")


def test_bench_ssh_changed_host_key(run, board, tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "impostor")], check=True)
    (tmp_path / "known_hosts").write_text(f"[{board.host}]:{board.port} {(tmp_path / 'impostor.pub').read_text()}")
    args = [
        a if not a.startswith("UserKnownHostsFile=") else f"UserKnownHostsFile={tmp_path / 'known_hosts'}"
        for a in board.args()
    ]
    _one_line_error(_bench(run, *args), 2, "host key differs", "ssh-keygen -R")


def test_bench_ssh_no_python(run, board):
    _one_line_error(_bench(run, *board.args(python="/opt/no/python3")), 2, "no Python at '/opt/no/python3'", "--python")


def test_bench_ssh_python_without_packages(run, board, tmp_path):
    """A Python with none of the runtime packages."""
    py = _python_without(tmp_path, board, "numpy", "onnxruntime", "onnxruntime_extensions")
    _one_line_error(
        _bench(run, *board.args(python=py)),
        2,
        "numpy, onnxruntime, onnxruntime-extensions not installed",
        f"`{py} -m pip install numpy onnxruntime onnxruntime-extensions` on the device",
    )


def _python_without(tmp_path: Path, board: SshBoard, *modules: str) -> str:
    """The board's Python, but the given top-level modules cannot be found (as when they are not installed): a
    launcher that hides them, then runs the script (or stdin) it is given as that Python would."""
    (tmp_path / "hide.py").write_text(
        "import runpy, sys\n"
        "class _Hidden:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {modules!r}:\n"
        "            raise ModuleNotFoundError('No module named %r' % name, name=name)\n"
        "sys.meta_path.insert(0, _Hidden())\n"
        "sys.argv = sys.argv[1:]\n"
        "if sys.argv[0] == '-':\n"
        "    exec(compile(sys.stdin.read(), '<stdin>', 'exec'), {'__name__': '__main__'})\n"
        "else:\n"
        "    runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    exe = tmp_path / "python"
    exe.write_text(f'#!/bin/sh\nexec {board.python} {tmp_path / "hide.py"} "$@"\n')
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return str(exe)


def test_bench_ssh_missing_extensions(run, board, tmp_path):
    py = _python_without(tmp_path, board, "onnxruntime_extensions")
    _one_line_error(
        _bench(run, *board.args(python=py)),
        2,
        "onnxruntime-extensions not installed",
        f"`{py} -m pip install onnxruntime-extensions`",
    )


def test_bench_ssh_wrong_architecture(run, board, tmp_path):
    """The other architecture's bundle on the board, and (x86_64) a 32-bit personality: what an armv7l board is
    to an arm64 bundle."""
    other = "linux-arm64" if board.target == "linux-x86_64" else "linux-x86_64"
    b = shutil.copytree(run / "package" / other, tmp_path / "other")
    _one_line_error(
        _bench(b, *board.args()),
        2,
        f"the device is {board.arch}; the bundle is for {other}",
        f"--target {board.target}",
    )
    if board.target != "linux-x86_64":
        return
    linux32 = tmp_path / "python32"
    linux32.write_text(f'#!/bin/sh\nexec setarch linux32 {board.python} "$@"\n')
    linux32.chmod(0o755)
    _one_line_error(
        _bench(run / "package" / "linux-x86_64", *board.args(python=str(linux32))),
        2,
        "the device is i686; the bundle is for linux-x86_64",
    )


def test_bench_ssh_picks_the_bundle_of_the_board(run, board):
    """The run has bundles for both architectures: the board's is used. A --python under ~ is the board's."""
    python = board.python
    if board.home is not None:  # a Python under the login directory, named from it
        (board.home / "bin").mkdir(exist_ok=True)
        (board.home / "bin" / "py").write_text(f'#!/bin/sh\nexec {board.python} "$@"\n')
        (board.home / "bin" / "py").chmod(0o755)
        python = "~/bin/py"
    r = _bench(run, *board.args(python=python), "--runs", "2")
    assert r.exit_code == 0, r.output
    assert f"tiny-dev-{board.target}" in r.output


def test_copy_to_a_board_without_sftp(run, tmp_path):
    """scp speaks SFTP; an sshd without the sftp subsystem (dropbear, a trimmed sshd_config) gets scp -O."""
    with local_sshd(tmp_path, sftp=False) as b:
        r = _bench(run / "package" / "linux-x86_64", *b.args(), "--runs", "2")
    assert r.exit_code == 0, r.output
    assert "copying the bundle" in r.output and "golden model.onnx: 8/8" in r.output


def test_ssh_options_need_ssh(run):
    _one_line_error(_bench(run, "--port", "2222"), 2, "--port needs --ssh USER@HOST")
    _one_line_error(_bench(run, "--ssh", "pi@board", "--adb"), 2, "choose one device")
    _one_line_error(_bench(run, "--ssh", "-oProxyCommand=x"), 2, "expected USER@HOST")


def test_run_without_bundle(tmp_path):
    (tmp_path / "run").mkdir()
    _one_line_error(_bench(tmp_path / "run", "--ssh", "pi@board"), 2, "no device bundle", "--target linux-arm64")


# -- causal LM ----------------------------------------------------------------------------------------------
def test_chat_model_greedy_tokens_equal_the_hosts(tiny_chat_recipe, board, tmp_path):
    from conftest import edit_recipe

    edit_recipe(tiny_chat_recipe, package={"golden": 3}, quantize={"precisions": ["int4"]})
    run = tmp_path / "run"  # stages up to package only: no host benchmark, no report
    r = CliRunner().invoke(cli, ["package", str(tiny_chat_recipe), "--out", str(run), "--target", board.target])
    assert r.exit_code == 0, r.output
    b = run / "package" / board.target
    info = read_bundle(b).bundle
    assert info["requires"] == ["numpy", "onnxruntime", "onnxruntime-genai"]
    assert {"genai_config.json", "model.onnx", "tokenizer.json"} <= set(info["files"])
    golden = json.loads((b / "golden.json").read_text())
    assert golden["greedy_tokens"] == 8 and golden["top_k"] == 5
    # the tolerance is the classifier's rule: 1.5x how far this host's int4 model is from PyTorch
    assert golden["host_max_abs_diff"] > 0
    assert golden["max_abs_diff"] == round(max(0.05, 1.5 * golden["host_max_abs_diff"]), 4)
    assert all(len(c["host_tokens"]) == 8 and c["prompt_ids"] for c in golden["cases"])
    assert all(
        len(c["top_ids"]) == len(c["top_logits"]) == len(c["pytorch_logits"]) == 8
        and c["top_ids"][k][0] == c["host_tokens"][k]
        for c in golden["cases"]
        for k in range(8)
    )
    r = _bench(run, *board.args())
    assert r.exit_code == 0, r.output
    assert (
        "of PyTorch's at every token on 3/3 prompts" in r.output
        and "greedy tokens equal to the host's on 3/3" in r.output
    )
    assert "decode t/s" in r.output
    assert "it goes into the report when the run's report is written" in r.output
    (saved,) = (run / "devices").glob("*.json")
    dev = json.loads(saved.read_text())
    assert dev["golden"]["models"]["model.onnx"]["agreement"] == 1.0 and dev["results"][0]["decode_tokens_per_s"] > 0
    # the device must also not need onnxruntime-genai's absence to go unnoticed
    py = _python_without(tmp_path, board, "onnxruntime_genai")
    _one_line_error(_bench(run, *board.args(python=py)), 2, "onnxruntime-genai not installed")
    # logits that moved further than the tolerance: exit 1, which prompt, which token and by how much
    case = golden["cases"][1]
    case["pytorch_logits"][3] = [v + 3 * golden["max_abs_diff"] for v in case["pytorch_logits"][3]]
    _edit_golden(b, golden)
    _one_line_error(
        _bench(b, *board.args()), 1, "1/3 prompts; case 1", "token 3: max|diff|", f"(<= {golden['max_abs_diff']:g})"
    )
    # a host token the device would not even rank among its top ones
    case["pytorch_logits"][3] = [v - 3 * golden["max_abs_diff"] for v in case["pytorch_logits"][3]]
    case["top_ids"][3] = [(i + 7) % 100 + 5 for i in case["top_ids"][3]]
    _edit_golden(b, golden)
    _one_line_error(_bench(b, *board.args()), 1, "case 1", "not among the host's top tokens")


def test_a_bundle_of_a_base_with_adapters_checks_each_adapter_on_the_board(tiny_chat_recipe, board, tmp_path):
    """A recipe with adapters: the bundle carries the int4 base and each .onnx_adapter; each golden case runs on
    the board with its adapter active, against PyTorch's base + that adapter."""
    from conftest import edit_recipe
    from test_adapter_build import _adapters_recipe

    edit_recipe(tiny_chat_recipe, package={"golden": 4}, quantize={"precisions": ["int4"]})
    _adapters_recipe(tiny_chat_recipe, tiny_chat_recipe.parent)
    run = tmp_path / "run"
    r = CliRunner().invoke(cli, ["package", str(tiny_chat_recipe), "--out", str(run), "--target", board.target])
    assert r.exit_code == 0, r.output
    b = run / "package" / board.target
    assert {"home.onnx_adapter", "timers.onnx_adapter"} <= set(read_bundle(b).bundle["files"])
    golden = json.loads((b / "golden.json").read_text())
    assert [c["adapter"] for c in golden["cases"]] == ["home", "home", "timers", "timers"], golden["cases"]
    r = _bench(run, *board.args())
    assert r.exit_code == 0, r.output
    assert "of PyTorch's at every token on 4/4 prompts" in r.output, r.output
    assert "greedy tokens equal to the host's on 4/4" in r.output, r.output
    # the cases run with the other adapter: the board's logits leave PyTorch's for that case's adapter
    for c in golden["cases"]:
        c["adapter"] = {"home": "timers", "timers": "home"}[c["adapter"]]
    _edit_golden(b, golden)
    _one_line_error(_bench(b, *board.args()), 1, "prompts; case")
