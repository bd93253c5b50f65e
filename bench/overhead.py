"""Stencil's overhead over raw ComfyUI: the same small txt2img graph both ways, interleaved.

    .venv/bin/python bench/overhead.py [--jobs 10] [--steps 2] [--size 64]

Starts one ComfyUI (CPU) on the synthetic checkpoint. Each round sends the graph the API would
render straight to ComfyUI, then submits the same request through the API (submit, worker,
storage, poll every 50 ms until succeeded). Rounds interleave so background load hits both
alike; seeds vary, since ComfyUI caches an identical graph. Prints medians.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.app import create_app  # noqa: E402
from api.settings import Settings  # noqa: E402
from engine.catalog.params import resolve_params, validate_params  # noqa: E402
from engine.comfy import ComfyClient, ComfyProcess  # noqa: E402
from engine.tenants.keys import create_key  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=10)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--size", type=int, default=64)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc = ComfyProcess(
            ROOT / ".stencil" / "comfyui",
            models_dir=ROOT / ".stencil" / "models",
            log_path=Path(tmp) / "comfy.log",
        )

        async def start() -> None:
            await proc.start()
            await proc.wait_ready(timeout=120)

        asyncio.run(start())
        try:
            run(proc.base_url, a, Path(tmp) / "home")
        finally:
            proc.close()


async def raw_prompt(url: str, graph: dict[str, Any]) -> float:
    """Seconds for one prompt sent straight to ComfyUI (fresh client: each round owns a loop)."""
    async with ComfyClient(url) as comfy:
        t0 = time.perf_counter()
        await comfy.run(graph, timeout=300)
        return time.perf_counter() - t0


def run(url: str, a: argparse.Namespace, home: Path) -> None:
    """Interleaved rounds: one raw prompt, then one API job with the same params."""
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        home=home,
        comfyui_url=url,
        catalog=ROOT / "catalog.yaml",
        active_job_quota=1000,
        rate_limit_write="100000/minute",
        rate_limit_read="100000/minute",
        trusted_hosts="testserver",
    )
    app = create_app(settings)
    services = app.state.services
    t = services.catalog.get("txt2img")
    model = services.request_models[(t.name, t.major)]
    raw: list[float] = []
    walls: list[float] = []
    meters: list[dict[str, Any]] = []
    with TestClient(app) as c:
        with services.db.session() as s:
            token, _ = create_key(s, "bench")
        h = {"Authorization": f"Bearer {token}"}
        for i in range(a.jobs + 1):  # round 0 warms both paths (model load)
            body = {
                "prompt": "a lighthouse",
                "width": a.size,
                "height": a.size,
                "steps": a.steps,
                "seed": 1000 + 2 * i,
            }
            params = resolve_params(t, validate_params(model, {**body, "seed": 1001 + 2 * i}))
            graph = services.graphs.render(t, params).graph
            raw_s = asyncio.run(raw_prompt(url, graph))
            t0 = time.perf_counter()
            job = c.post("/v1/txt2img", json=body, headers=h).json()
            while job["status"] not in ("succeeded", "failed", "cancelled"):
                time.sleep(0.05)  # a client polling gently, as an SDK would
                job = c.get(f"/v1/jobs/{job['id']}", headers=h).json()
            wall_s = time.perf_counter() - t0
            assert job["status"] == "succeeded", job
            if i:
                raw.append(raw_s)
                walls.append(wall_s)
                meters.append(job.get("metering") or {})
    med = statistics.median
    print(f"txt2img {a.size}x{a.size}, {a.steps} steps, {a.jobs} interleaved rounds (medians)")
    print(f"  raw ComfyUI prompt (submit to outputs listed):  {med(raw) * 1000:8.1f} ms")
    print(f"  through Stencil (submit to succeeded, polled):  {med(walls) * 1000:8.1f} ms")
    for k in ("execution_seconds", "upload_seconds", "billable_seconds"):
        vals = [m[k] for m in meters if m.get(k) is not None]
        if vals:
            print(f"    worker {k:<38} {med(vals) * 1000:8.1f} ms")
    print(
        f"  overhead per job (median difference):           "
        f"{med([w - r for w, r in zip(walls, raw, strict=True)]) * 1000:8.1f} ms"
    )


if __name__ == "__main__":
    main()
