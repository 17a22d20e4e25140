"""Probing a board before anything is copied (Python version, architecture, modules, the hash of the bundle
there) and deciding whether it can run a bundle."""

from __future__ import annotations

import json
import re
import shlex

from edgetune import runner
from edgetune.core.errors import RecipeError
from edgetune.device.bundle import HASH_FILE
from edgetune.device.transport import Ssh, _last_line, _sh, remote_exe

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
