"""Install a package into the Android demo app's assets, each task's package in its own slot."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from edgetune.core.errors import EdgetuneError, RecipeError
from edgetune.core.rundir import replace_dir

# Where the app looks for each task's package, under app/src/main/assets/edgetune/ (PackageInstaller.kt's CLASSIFIER_ASSETS and CHAT_ASSETS).
APP_SLOTS = {"classification": "", "causal-lm": "llm"}


def assets_dir(android_dir: Path, task_name: str) -> Path:
    """Where the app reads a task's package: assets/edgetune (classifier) or assets/edgetune/llm (causal LM)."""
    return Path(android_dir) / "app" / "src" / "main" / "assets" / "edgetune" / APP_SLOTS[task_name]


def install(package_dir: Path, android_dir: Path, task_name: str) -> Path:
    """Copy the package into the app's assets (assets/edgetune, or assets/edgetune/llm for a causal LM),
    replacing the previous one in a single rename; the other task's package is kept."""
    android_dir = Path(android_dir)
    if not (android_dir / "app" / "build.gradle.kts").is_file():
        raise RecipeError(f"package.android: {android_dir} is not the edgetune Android demo (no app/build.gradle.kts)")
    final = assets_dir(android_dir, task_name)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".edgetune-", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the build tools that read the assets run as the user anyway
    try:
        for f in package_dir.iterdir():
            if f.name.startswith("linux-") and f.is_dir() and not f.is_symlink():
                continue  # a device bundle for Linux boards (edgetune/device), not for the app
            if f.is_symlink() or not f.is_file():
                raise EdgetuneError(f"package: {f} is not a regular file; refusing to copy it")
            shutil.copy2(f, tmp / f.name)
        for slot in APP_SLOTS.values():  # the other tasks' packages live inside this one's folder: keep them
            if slot and not APP_SLOTS[task_name] and (final / slot).is_dir():
                os.replace(final / slot, tmp / slot)
        replace_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
