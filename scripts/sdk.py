"""Generate, check and lint the SDKs from the committed `openapi.json`.

    python scripts/sdk.py generate  # sdk/python/stencil_client, sdk/typescript/src/schema.ts
    python scripts/sdk.py check     # regenerate elsewhere and fail on any difference
    python scripts/sdk.py lint      # Redocly (recommended), Spectral (oas): no error, no warning

The tools are pinned: openapi-python-client and its ruff in `sdk/requirements-gen.txt` (its own
virtual environment, `SDKGEN_VENV`, since its pins clash with the server's), and the npm tools
in `sdk/package.json` with `sdk/package-lock.json` (`make sdk-tools` installs both).
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SDK = ROOT / "sdk"
DOC = ROOT / "openapi.json"
PY_PACKAGE = "stencil_client"
TS_SCHEMA = Path("typescript") / "src" / "schema.ts"
SDKGEN_VENV = (ROOT / os.environ.get("SDKGEN_VENV", ".venv-sdkgen")).resolve()
NODE_BIN = SDK / "node_modules" / ".bin"
QUIET_NODE = {
    "REDOCLY_TELEMETRY": "off",
    "REDOCLY_SUPPRESS_UPDATE_NOTICE": "true",
    "SCARF_ANALYTICS": "false",
    "NO_UPDATE_NOTIFIER": "1",
}


class ToolMissing(RuntimeError):
    """A pinned tool is not installed: run `make sdk-tools`."""


def _tool(path: Path) -> str:
    if not path.exists():
        raise ToolMissing(f"{path} is missing: run `make sdk-tools`")
    return str(path)


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    r = subprocess.run(
        cmd, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True
    )
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")


def generate_python(doc: Path, project_dir: Path, package: str = PY_PACKAGE) -> Path:
    """Generate the Python client package into `project_dir/package` (openapi-python-client,
    default options but the package name). `project_dir` must hold the SDK's pyproject.toml,
    whose ruff settings the generator's formatting post-hooks read."""
    gen = _tool(SDKGEN_VENV / "bin" / "openapi-python-client")
    out = project_dir / package
    cmd = [gen, "generate", "--path", str(doc), "--meta", "none", "--output-path", str(out)]
    cmd.append("--overwrite")
    with tempfile.TemporaryDirectory() as tmp:
        if package != PY_PACKAGE:
            config = Path(tmp) / "config.json"
            config.write_text(json.dumps({"package_name_override": package}))
            cmd += ["--config", str(config)]
        path = f"{SDKGEN_VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
        _run(cmd, project_dir, {"PATH": path})
    shutil.rmtree(out / ".ruff_cache", ignore_errors=True)
    (out / "py.typed").write_text("")  # PEP 561: the package ships its types
    return out


def generate_typescript(doc: Path, out: Path) -> Path:
    """Generate the TypeScript types (openapi-typescript, default options)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    _run([_tool(NODE_BIN / "openapi-typescript"), str(doc), "-o", str(out)], SDK, QUIET_NODE)
    return out


def generate(into: Path = SDK, doc: Path = DOC) -> None:
    """Both clients, from `doc`, into `into` (the repository's sdk/ by default)."""
    generate_python(doc, into / "python")
    generate_typescript(doc, into / TS_SCHEMA)


def _differences(a: Path, b: Path) -> list[str]:
    cmp = filecmp.dircmp(a, b, ignore=["__pycache__", ".ruff_cache", ".mypy_cache"])
    out: list[str] = []

    def walk(c: filecmp.dircmp[str], rel: Path) -> None:
        out.extend(str(rel / n) for n in c.left_only + c.right_only)
        _, mismatch, errors = filecmp.cmpfiles(c.left, c.right, c.common_files, shallow=False)
        out.extend(str(rel / n) for n in mismatch + errors)
        for name, sub in c.subdirs.items():
            walk(sub, rel / name)

    walk(cmp, Path(a.name))
    return out


def check() -> int:
    """Regenerate into a temporary tree and compare with the committed clients."""
    with tempfile.TemporaryDirectory() as tmp:
        into = Path(tmp)
        (into / "python").mkdir()
        shutil.copy(SDK / "python" / "pyproject.toml", into / "python" / "pyproject.toml")
        generate(into)
        stale = _differences(SDK / "python" / PY_PACKAGE, into / "python" / PY_PACKAGE)
        if not filecmp.cmp(SDK / TS_SCHEMA, into / TS_SCHEMA, shallow=False):
            stale.append(str(TS_SCHEMA))
    if stale:
        print("The generated SDK code is stale (run `make sdk` and commit):", file=sys.stderr)
        for name in stale:
            print(f"  {name}", file=sys.stderr)
        return 1
    print("sdk: generated clients match openapi.json")
    return 0


def lint(doc: Path = DOC) -> int:
    """Redocly's recommended rules and Spectral's oas ruleset: zero errors, zero warnings."""
    failed = 0
    r = subprocess.run(
        [_tool(NODE_BIN / "redocly"), "lint", str(doc), "--config", "redocly.yaml"]
        + ["--format", "json"],
        cwd=SDK,
        env={**os.environ, **QUIET_NODE},
        capture_output=True,
        text=True,
    )
    start = r.stdout.find("{")
    problems = json.loads(r.stdout[start:])["problems"] if start >= 0 else None
    if problems is None:
        print(f"redocly lint gave no report:\n{r.stdout}\n{r.stderr}", file=sys.stderr)
        failed = 1
    elif problems:
        failed = 1
        for p in problems:
            where = p["location"][0]["pointer"] if p.get("location") else ""
            print(f"redocly {p['severity']} {p['ruleId']}: {p['message']} {where}", file=sys.stderr)
    r = subprocess.run(
        [_tool(NODE_BIN / "spectral"), "lint", str(doc), "--ruleset", ".spectral.yaml"]
        + ["--fail-severity", "hint", "--format", "text"],
        cwd=SDK,
        env={**os.environ, **QUIET_NODE},
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        failed = 1
        print(f"spectral:\n{r.stdout}{r.stderr}", file=sys.stderr)
    if not failed:
        print("sdk: openapi.json passes Redocly (recommended) and Spectral (oas) with no problem")
    return failed


def main(argv: list[str]) -> int:
    if argv[1:] == ["generate"]:
        generate()
        print(f"wrote sdk/python/{PY_PACKAGE} and sdk/{TS_SCHEMA}")
        return 0
    if argv[1:] == ["check"]:
        return check()
    if argv[1:] == ["lint"]:
        return lint()
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
