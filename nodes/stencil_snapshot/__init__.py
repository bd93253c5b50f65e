"""Stencil's ComfyUI extension, one entry point: the snapshot gate's routes and status node.

Routes (served by ComfyUI's own server):

* ``GET /stencil/snapshot/status``: whether the device gate is installed and deferred, the
  torch device ComfyUI would use, loaded models, pending ``/free`` flags;
* ``POST /stencil/snapshot/restore``: after a memory snapshot is restored, make the GPU
  visible and let ComfyUI use it; answers 503 (and keeps the CPU) when CUDA cannot start.

The node ``StencilSnapshotStatus`` reports the same status as a string; its presence in
``/object_info`` shows the package loaded.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from .snapshot_patch import GATE_NAME

log = logging.getLogger("stencil.snapshot")


def _model_management() -> Any:
    import comfy.model_management as mm  # ComfyUI's module; imported late, inside ComfyUI

    return mm


def snapshot_status() -> dict[str, Any]:
    """The gate's state and the device ComfyUI would pick now."""
    mm = _model_management()
    gate = getattr(mm, GATE_NAME, None)
    out: dict[str, Any] = {
        "patched": bool(gate is not None and gate.patched),
        "deferred": bool(gate is not None and gate.deferred),
        "loaded_models": len(getattr(mm, "current_loaded_models", [])),
        "pending_flags": False,
    }
    try:
        out["device"] = str(mm.get_torch_device())
    except Exception as e:  # no CUDA here: report it, the status must still answer
        out["device"] = f"error: {e}"
    try:
        from server import PromptServer

        queue = getattr(PromptServer.instance, "prompt_queue", None)
        out["pending_flags"] = bool(getattr(queue, "flags", {}))
    except Exception:
        pass
    return out


def enable_device(cuda_visible_devices: str | None) -> dict[str, Any]:
    """Make the GPU visible to this process and let ComfyUI use it; reverts on failure."""
    mm = _model_management()
    gate = getattr(mm, GATE_NAME, None)
    if gate is None:
        return {"ok": False, "error": "the snapshot gate is not installed"}
    # ComfyUI inherited the environment of the snapshot phase, where the GPU may be hidden.
    if cuda_visible_devices:
        os.environ["CUDA_VISIBLE_DEVICES"] = cuda_visible_devices
    elif os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        del os.environ["CUDA_VISIBLE_DEVICES"]
    gate.enable()
    try:
        device = mm.get_torch_device()
        # ComfyUI sized "VRAM" from system RAM while deferred; size it from the GPU now.
        mm.total_vram = mm.get_total_memory(device) / (1024 * 1024)
    except Exception as e:
        gate.defer()
        log.error("[stencil] enabling the GPU after restore failed: %s", e)
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}
    log.info("[stencil] device enabled after restore: %s", device)
    return {"ok": True, "device": str(device), "total_vram_mb": round(mm.total_vram)}


class StencilSnapshotStatus:
    """Outputs the snapshot gate's status as JSON text."""

    CATEGORY = "stencil"
    DESCRIPTION = "Reports whether Stencil's memory-snapshot device gate is active."
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("status",)
    OUTPUT_TOOLTIPS = ("JSON: patched, deferred, device, loaded_models.",)
    FUNCTION = "report"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # ComfyUI requires this name
        """No inputs."""
        return {"required": {}}

    def report(self) -> tuple[str]:
        """The status as one JSON string."""
        return (json.dumps(snapshot_status(), sort_keys=True),)


NODE_CLASS_MAPPINGS = {"StencilSnapshotStatus": StencilSnapshotStatus}
NODE_DISPLAY_NAME_MAPPINGS = {"StencilSnapshotStatus": "Stencil Snapshot Status"}


def _register_routes() -> None:
    try:
        from aiohttp import web
        from server import PromptServer
    except ImportError:  # imported outside ComfyUI (tests): nodes only
        return
    if getattr(PromptServer, "instance", None) is None:
        return
    routes = PromptServer.instance.routes

    @routes.get("/stencil/snapshot/status")
    async def _status(request: web.Request) -> web.Response:
        return web.json_response(snapshot_status())

    @routes.post("/stencil/snapshot/restore")
    async def _restore(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = {}
        value = body.get("cuda_visible_devices") if isinstance(body, dict) else None
        result = enable_device(value if isinstance(value, str) else None)
        return web.json_response(result, status=200 if result["ok"] else 503)


_register_routes()
