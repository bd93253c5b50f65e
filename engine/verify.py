"""Check that an engine can serve the catalog: ComfyUI, models, custom nodes, node types,
and that every template's values are ones the engine accepts (engine.compat)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from engine.catalog.catalog import Catalog
from engine.catalog.compat import check_template
from engine.catalog.models import model_status
from engine.catalog.render import TemplateGraphs
from engine.comfy import ComfyClient, ComfyError

# Node types the packages in nodes/ register (tests keep this in step with them).
STENCIL_NODE_TYPES: tuple[str, ...] = ("StencilSnapshotStatus",)
SNAPSHOT_STATUS_PATH = "/stencil/snapshot/status"


@dataclass(frozen=True)
class Check:
    """One verified fact."""

    name: str
    ok: bool
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class VerifyReport:
    """Every check of one verification run."""

    checks: list[Check]

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return all(c.ok for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        """Plain data, for JSON and for returning from a Modal method."""
        return {"ok": self.ok, "checks": [asdict(c) for c in self.checks]}


async def verify_engine(
    catalog: Catalog,
    graphs: TemplateGraphs,
    comfy: ComfyClient,
    models_dir: Path | None,
    *,
    custom_nodes: Sequence[str] = STENCIL_NODE_TYPES,
    require_custom_nodes: bool = False,
    installed_version: str | None = None,
    http: httpx.AsyncClient | None = None,
) -> VerifyReport:
    """Verify ComfyUI, every catalog model, Stencil's custom nodes and the templates' nodes.

    `http` reaches the Stencil extension's routes on the same server (default: a client on
    `comfy.base_url`); tests pass one over a mock transport.
    """
    checks: list[Check] = []
    try:
        stats = await comfy.system_stats()
        object_info = await comfy.object_info()
    except ComfyError as e:
        checks.append(Check("comfyui", False, f"ComfyUI at {comfy.base_url} does not answer: {e}"))
        checks.extend(await asyncio.to_thread(_model_checks, catalog, models_dir))
        return VerifyReport(checks)
    system = stats.get("system") or {}
    # Spring-2024 ComfyUI does not report its version; the installer's marker does.
    version = system.get("comfyui_version") or installed_version or "unknown"
    devices = [str(d.get("name") or d.get("type")) for d in stats.get("devices") or []]
    checks.append(
        Check(
            "comfyui",
            True,
            f"ComfyUI {version} answers at {comfy.base_url}",
            {"version": version, "devices": devices, "python": system.get("python_version")},
        )
    )
    checks.extend(await asyncio.to_thread(_model_checks, catalog, models_dir))
    checks.append(
        await _custom_node_check(comfy, http, object_info, custom_nodes, require_custom_nodes)
    )
    for t in catalog.templates:
        needed = sorted(graphs.allowlist(t))
        missing = [n for n in needed if n not in object_info]
        checks.append(
            Check(
                f"nodes:{t.name}@{t.version}",
                not missing,
                f"missing node types: {', '.join(missing)}"
                if missing
                else f"all {len(needed)} node types available",
                {"needed": needed, "missing": missing},
            )
        )
        problems = check_template(t, graphs, object_info)
        checks.append(
            Check(
                f"fits:{t.name}@{t.version}",
                not problems,
                "; ".join(str(p) for p in problems)
                if problems
                else "every input, enum value and model the template uses is accepted",
                {"problems": [str(p) for p in problems]},
            )
        )
    return VerifyReport(checks)


def _model_checks(catalog: Catalog, models_dir: Path | None) -> list[Check]:
    """Each model present with the catalog's sha256, or a synthetic stand-in (hashing is slow)."""
    out: list[Check] = []
    for m in catalog.all_models():
        name = f"model:{m.folder}/{m.name}"
        if models_dir is None:
            out.append(Check(name, False, "no models folder configured"))
            continue
        path = models_dir / m.folder / m.name
        status = model_status(path, m.sha256)
        size = path.stat().st_size if path.is_file() else None
        detail = {
            "ok": "sha256 matches the catalog",
            "synthetic": "random-weight stand-in (tests and local demo only)",
            "missing": f"not found at {path}",
            "mismatch": "sha256 differs from the catalog",
        }[status]
        out.append(
            Check(
                name,
                status in ("ok", "synthetic"),
                detail,
                {"path": str(path), "status": status, "bytes": size, "sha256": m.sha256},
            )
        )
    return out


async def _custom_node_check(
    comfy: ComfyClient,
    http: httpx.AsyncClient | None,
    object_info: dict[str, Any],
    expected: Sequence[str],
    required: bool,
) -> Check:
    missing = [n for n in expected if n not in object_info]
    data: dict[str, Any] = {"expected": list(expected), "missing": missing}
    if missing:
        detail = f"Stencil custom nodes not loaded: {', '.join(missing)}"
        if not required:
            detail += " (not required here)"
        return Check("custom_nodes", not required, detail, data)
    snapshot: dict[str, Any] | None = None
    try:
        if http is None:
            async with httpx.AsyncClient(base_url=comfy.base_url, timeout=10.0) as own:
                resp = await own.get(SNAPSHOT_STATUS_PATH)
        else:
            resp = await http.get(SNAPSHOT_STATUS_PATH)
        if resp.status_code == 200:
            snapshot = resp.json()
    except (httpx.HTTPError, ValueError):
        snapshot = None
    data["snapshot"] = snapshot
    if snapshot is None or not snapshot.get("patched"):
        return Check(
            "custom_nodes",
            not required,
            "nodes loaded, but the snapshot device gate is not active",
            data,
        )
    return Check(
        "custom_nodes",
        True,
        f"loaded: {', '.join(expected)}; snapshot gate active (device {snapshot.get('device')})",
        data,
    )
