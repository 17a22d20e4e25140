"""The Android demo app's source is complete: Gradle files, pinned versions, wrapper, manifest classes, tests.

No Android SDK is needed: these checks read the files only (stdlib + pytest, well under a second).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1] / "android_demo"
APP = ROOT / "app"
CATALOG = ROOT / "gradle" / "libs.versions.toml"
WRAPPER_PROPERTIES = ROOT / "gradle" / "wrapper" / "gradle-wrapper.properties"
WRAPPER_JAR = ROOT / "gradle" / "wrapper" / "gradle-wrapper.jar"
MANIFEST = APP / "src" / "main" / "AndroidManifest.xml"
APP_BUILD = APP / "build.gradle.kts"
ANDROID_NS = "{http://schemas.android.com/apk/res/android}"
SOURCE_SUFFIXES = {".kt", ".kts", ".java", ".xml", ".toml", ".properties", ".pro"}
# A version is a literal such as 8.13.2, 1.0.0-rc01 or 2.3.0-Beta1: digits first, no ranges or dynamic parts.
PINNED = re.compile(r"^\d+(\.\d+)*([-.][0-9A-Za-z]+)*$")
UNPINNED = re.compile(r"\+|latest|SNAPSHOT|[\[\](),]", re.IGNORECASE)


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT.parent))


def kts_files() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.kts") if "build" not in p.relative_to(ROOT).parts)


def source_files() -> list[Path]:
    skip = {"build", ".gradle", "assets"}
    return sorted(
        p
        for p in ROOT.rglob("*")
        if p.is_file() and p.suffix in SOURCE_SUFFIXES and not skip & set(p.relative_to(ROOT).parts)
    )


def catalog() -> dict:
    assert CATALOG.is_file(), f"{rel(CATALOG)} is missing"
    return tomllib.loads(CATALOG.read_text(encoding="utf-8"))


def accessor(alias: str) -> str:
    """Gradle turns '-', '_' and '.' in catalog aliases into '.' in the generated `libs` accessors."""
    return re.sub(r"[-_.]", ".", alias)


def test_project_files_exist():
    for name in [
        "settings.gradle.kts",
        "build.gradle.kts",
        "gradle.properties",
        "gradlew",
        "gradlew.bat",
        "gradle/libs.versions.toml",
        "gradle/wrapper/gradle-wrapper.properties",
        "gradle/wrapper/gradle-wrapper.jar",
        "app/build.gradle.kts",
        "app/src/main/AndroidManifest.xml",
        "README.md",
        ".gitignore",
    ]:
        assert (ROOT / name).is_file(), f"{rel(ROOT / name)} is missing"


def test_settings_include_app_module():
    settings = ROOT / "settings.gradle.kts"
    assert re.search(r'include\(\s*"(:app)"\s*\)', settings.read_text(encoding="utf-8")), (
        f'{rel(settings)} does not include(":app")'
    )


def test_every_libs_alias_used_in_kts_is_in_the_catalog():
    toml = catalog()
    known = {
        "plugins": {accessor(a) for a in toml.get("plugins", {})},
        "versions": {accessor(a) for a in toml.get("versions", {})},
        "bundles": {accessor(a) for a in toml.get("bundles", {})},
        "libraries": {accessor(a) for a in toml.get("libraries", {})},
    }
    missing = []
    for path in kts_files():
        # Comments may name the catalog file itself ("gradle/libs.versions.toml"): only code counts.
        text = re.sub(r"/\*.*?\*/", "", path.read_text(encoding="utf-8"), flags=re.S)
        text = re.sub(r"//[^\n]*", "", text)
        for m in re.finditer(r"(?<![\w/.])libs\.([A-Za-z][A-Za-z0-9_.]*)", text):
            parts = m.group(1).rstrip(".").split(".")
            if text[m.end() : m.end() + 1] == "(":  # libs.foo.bar.get(): the last part is a method call
                parts = parts[:-1]
            kind = parts[0] if parts[0] in ("plugins", "versions", "bundles") else "libraries"
            name = ".".join(parts[1:] if kind != "libraries" else parts)
            if name not in known[kind]:
                missing.append(f"{rel(path)}: libs.{m.group(1)} ({kind} alias '{name}')")
    assert not missing, "aliases not in gradle/libs.versions.toml:\n" + "\n".join(missing)


def test_every_catalog_version_is_pinned():
    toml = catalog()
    problems = []
    versions = toml.get("versions", {})
    for alias, v in versions.items():
        if not isinstance(v, str) or UNPINNED.search(v) or not PINNED.match(v):
            problems.append(f"[versions] {alias} = {v!r}")
    for table in ("libraries", "plugins"):
        for alias, entry in toml.get(table, {}).items():
            if isinstance(entry, str):  # "group:name:version" or "id:version"
                v = entry.rsplit(":", 1)[-1] if entry.count(":") >= (2 if table == "libraries" else 1) else None
            else:
                version = entry.get("version")
                if isinstance(version, dict):
                    if "ref" in version:
                        if version["ref"] not in versions:
                            problems.append(f"[{table}] {alias}: version.ref {version['ref']!r} is not in [versions]")
                        continue
                    v = version.get("strictly") or version.get("require")
                else:
                    v = version
            if v is None:
                problems.append(f"[{table}] {alias} has no version")
            elif not isinstance(v, str) or UNPINNED.search(v) or not PINNED.match(v):
                problems.append(f"[{table}] {alias} version {v!r}")
    assert not problems, f"{rel(CATALOG)} has unpinned versions:\n" + "\n".join(problems)


def test_onnxruntime_android_libraries_are_in_the_catalog():
    modules = {}
    for entry in catalog().get("libraries", {}).values():
        if isinstance(entry, str):
            module = ":".join(entry.split(":")[:2])
        else:
            module = entry.get("module") or f"{entry.get('group')}:{entry.get('name')}"
        modules[module] = entry
    for module in (
        "com.microsoft.onnxruntime:onnxruntime-android",
        "com.microsoft.onnxruntime:onnxruntime-extensions-android",
    ):
        assert module in modules, f"{rel(CATALOG)} has no {module}"


def test_build_files_use_no_inline_unpinned_versions():
    problems = []
    for path in kts_files():
        for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for coord in re.findall(r'"([\w.-]+:[\w.-]+:[^"$]*)"', line):
                if UNPINNED.search(coord.rsplit(":", 1)[-1]):
                    problems.append(f"{rel(path)}:{line_no}: {coord}")
    assert not problems, "unpinned dependency versions:\n" + "\n".join(problems)


def test_wrapper_properties_pin_a_distribution():
    assert WRAPPER_PROPERTIES.is_file(), f"{rel(WRAPPER_PROPERTIES)} is missing"
    props = dict(
        line.split("=", 1)
        for line in WRAPPER_PROPERTIES.read_text(encoding="utf-8").splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    )
    url = props.get("distributionUrl", "").replace("\\:", ":")
    m = re.fullmatch(r"https://services\.gradle\.org/distributions/gradle-(\d+\.\d+(?:\.\d+)?)-(bin|all)\.zip", url)
    assert m, f"{rel(WRAPPER_PROPERTIES)}: distributionUrl {url!r} does not name a pinned Gradle release"
    sha = props.get("distributionSha256Sum", "")
    assert re.fullmatch(r"[0-9a-f]{64}", sha), f"{rel(WRAPPER_PROPERTIES)}: distributionSha256Sum is not a SHA-256"


def test_wrapper_jar_is_the_gradle_wrapper():
    assert WRAPPER_JAR.is_file(), f"{rel(WRAPPER_JAR)} is missing"
    assert zipfile.is_zipfile(WRAPPER_JAR), f"{rel(WRAPPER_JAR)} is not a zip/jar"
    with zipfile.ZipFile(WRAPPER_JAR) as jar:
        assert "org/gradle/wrapper/GradleWrapperMain.class" in jar.namelist(), (
            f"{rel(WRAPPER_JAR)} has no org/gradle/wrapper/GradleWrapperMain.class"
        )


def test_gradlew_runs_the_wrapper_main_class():
    for name in ("gradlew", "gradlew.bat"):
        text = (ROOT / name).read_text(encoding="utf-8")
        assert "org.gradle.wrapper.GradleWrapperMain" in text and "gradle-wrapper.jar" in text, (
            f"{rel(ROOT / name)} does not launch gradle/wrapper/gradle-wrapper.jar"
        )
    assert (ROOT / "gradlew").stat().st_mode & 0o111, f"{rel(ROOT / 'gradlew')} is not executable"


def test_every_manifest_component_has_a_kotlin_class():
    assert MANIFEST.is_file(), f"{rel(MANIFEST)} is missing"
    namespace = re.search(r'namespace\s*=\s*"([\w.]+)"', APP_BUILD.read_text(encoding="utf-8"))
    assert namespace, f"{rel(APP_BUILD)} sets no namespace"
    package = namespace.group(1)
    app = ET.parse(MANIFEST).getroot().find("application")
    assert app is not None, f"{rel(MANIFEST)} has no <application>"
    names = [
        (el.tag, el.get(f"{ANDROID_NS}name"))
        for el in app
        if el.tag in ("activity", "service", "receiver", "provider", "activity-alias")
    ]
    if app.get(f"{ANDROID_NS}name"):
        names.append(("application", app.get(f"{ANDROID_NS}name")))
    assert any(tag == "activity" for tag, _ in names), f"{rel(MANIFEST)} declares no activity"
    sources = [(p, p.read_text(encoding="utf-8")) for p in (APP / "src" / "main").rglob("*.kt")]
    missing = []
    for tag, name in names:
        if tag == "activity-alias":
            continue
        full = package + name if name.startswith(".") else name
        pkg, _, cls = full.rpartition(".")
        declared = [
            p
            for p, text in sources
            if re.search(rf"^package\s+{re.escape(pkg)}\s*$", text, re.M)
            and re.search(rf"^\s*(?:(?:public|internal|open|abstract|final)\s+)*class\s+{cls}\b", text, re.M)
        ]
        if not declared:
            missing.append(f'<{tag} android:name="{name}"> ({full})')
    assert not missing, f"{rel(MANIFEST)} names classes with no Kotlin source in app/src/main:\n" + "\n".join(missing)


def test_application_id_and_namespace():
    text = APP_BUILD.read_text(encoding="utf-8")
    for key in ("namespace", "applicationId"):
        m = re.search(rf'\b{key}\s*=\s*"([\w.]+)"', text)
        assert m and m.group(1) == "ai.edgetune.demo", f"{rel(APP_BUILD)}: {key} must be ai.edgetune.demo"


def test_min_sdk_is_at_least_24():
    m = re.search(r"\bminSdk\s*=\s*(\d+)", APP_BUILD.read_text(encoding="utf-8"))
    assert m, f"{rel(APP_BUILD)} sets no minSdk"
    assert int(m.group(1)) >= 24, f"{rel(APP_BUILD)}: minSdk {m.group(1)} < 24"


def test_abi_filters_include_arm64_and_x86_64():
    text = APP_BUILD.read_text(encoding="utf-8")
    m = re.search(r"abiFilters\s*(?:\+=|\.addAll\()\s*(?:listOf|setOf)?\(([^)]*)\)", text)
    assert m, f"{rel(APP_BUILD)} sets no ndk abiFilters"
    abis = set(re.findall(r'"([\w-]+)"', m.group(1)))
    assert {"arm64-v8a", "x86_64"} <= abis, f"{rel(APP_BUILD)}: abiFilters {sorted(abis)} lack arm64-v8a or x86_64"


def test_models_are_stored_uncompressed():
    m = re.search(r"noCompress\s*\+=\s*listOf\(([^)]*)\)", APP_BUILD.read_text(encoding="utf-8"))
    assert m, f"{rel(APP_BUILD)} has no androidResources.noCompress"
    exts = set(re.findall(r'"(\w+)"', m.group(1)))
    assert {"onnx", "ort", "data"} <= exts, f"{rel(APP_BUILD)}: noCompress {sorted(exts)} lacks onnx, ort or data"


@pytest.mark.parametrize("marker", ["TODO", "FIXME", "NotImplementedError", "TODO()"])
def test_no_placeholders_in_sources(marker):
    pattern = re.compile(re.escape(marker) if marker.endswith(")") else rf"\b{marker}\b")
    hits = [
        f"{rel(p)}:{n}: {line.strip()}"
        for p in source_files()
        for n, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        if pattern.search(line)
    ]
    assert not hits, f"'{marker}' found in the app source:\n" + "\n".join(hits)


@pytest.mark.parametrize("folder", ["test", "androidTest"])
def test_test_folders_have_tests(folder):
    path = APP / "src" / folder
    assert path.is_dir(), f"{rel(path)} is missing"
    files = [p for p in path.rglob("*") if p.suffix in (".kt", ".java")]
    with_tests = [p for p in files if "@Test" in p.read_text(encoding="utf-8")]
    assert with_tests, f"{rel(path)} has no file with an @Test"


def test_generated_assets_are_ignored():
    text = (ROOT / ".gitignore").read_text(encoding="utf-8")
    for entry in ("app/src/main/assets/edgetune/", "local.properties", ".gradle/", "build/"):
        assert entry in text.splitlines(), f"{rel(ROOT / '.gitignore')} does not ignore {entry}"
