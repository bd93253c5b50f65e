"""Stencil's overhead over raw ComfyUI: the same small txt2img run both ways.

    .venv/bin/python bench/overhead.py [--jobs 10] [--steps 2] [--size 64]

Starts one ComfyUI (CPU) on the synthetic checkpoint, then times N prompts sent straight to
ComfyUI and N jobs through the API (submit, worker, storage, poll until succeeded). Seeds vary,
since ComfyUI caches an identical graph. Prints medians and the per-job overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.app import create_app  # noqa: E402
from api.settings import Settings  # noqa: E402
from engine.catalog import load_catalog  # noqa: E402
from engine.comfy import ComfyClient, ComfyProcess  # noqa: E402
from engine.render import TemplateGraphs, example_params  # noqa: E402
from engine.store import create_key  # noqa: E402


async def raw_runs(url: str, n: int, steps: int, size: int) -> list[float]:
    """Wall time of n prompts sent straight to ComfyUI, one after another."""
    cat = load_catalog(ROOT / "catalog.yaml")
    t = cat.get("txt2img")
    assert t is not None
    graphs = TemplateGraphs(cat)
    client = ComfyClient(url)
    times = []
    for i in range(n + 1):
        params = {
            **example_params(t),
            "width": size,
            "height": size,
            "steps": steps,
            "seed": 10_000 + i,
        }
        t0 = time.perf_counter()
        await client.run(graphs.render(t, params).graph, timeout=300)
        if i:  # the first run loads the model
            times.append(time.perf_counter() - t0)
    await client.aclose()
    return times


def api_runs(
    url: str, n: int, steps: int, size: int, home: Path
) -> tuple[list[float], list[float]]:
    """Wall time (submit to succeeded, as a client sees it) and worker run time of n jobs."""
    settings = Settings(
        _env_file=None,
        home=home,
        comfyui_url=url,  # type: ignore[call-arg]
        catalog=ROOT / "catalog.yaml",
        active_job_quota=100,
    )
    app = create_app(settings)
    walls, runs = [], []
    with TestClient(app) as c:
        with app.state.services.db.session() as s:
            token, _ = create_key(s, "bench")
        h = {"Authorization": f"Bearer {token}"}
        for i in range(n):
            body = {
                "prompt": "a lighthouse",
                "width": size,
                "height": size,
                "steps": steps,
                "seed": 20_000 + i,
            }
            t0 = time.perf_counter()
            job = c.post("/v1/txt2img", json=body, headers=h).json()
            while job["status"] not in ("succeeded", "failed", "cancelled"):
                time.sleep(0.005)
                job = c.get(f"/v1/jobs/{job['id']}", headers=h).json()
            walls.append(time.perf_counter() - t0)
            assert job["status"] == "succeeded", job
            runs.append(job["timings"]["run_seconds"])
    return walls, runs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=10)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--size", type=int, default=64)
    a = ap.parse_args()
    comfy = ROOT / ".stencil" / "comfyui"
    models = ROOT / ".stencil" / "models"
    with tempfile.TemporaryDirectory() as tmp:
        proc = ComfyProcess(comfy, models_dir=models, log_path=Path(tmp) / "comfy.log")

        async def start() -> None:
            await proc.start()
            await proc.wait_ready(timeout=120)

        asyncio.run(start())
        try:
            raw = asyncio.run(raw_runs(proc.base_url, a.jobs, a.steps, a.size))
            walls, runs = api_runs(proc.base_url, a.jobs, a.steps, a.size, Path(tmp) / "home")
        finally:
            proc.close()
    med = statistics.median
    print(f"txt2img {a.size}x{a.size}, {a.steps} steps, {a.jobs} runs each (medians)")
    print(f"  raw ComfyUI prompt:            {med(raw) * 1000:8.1f} ms")
    print(f"  through Stencil, client wall:  {med(walls) * 1000:8.1f} ms")
    print(f"  through Stencil, worker run:   {med(runs) * 1000:8.1f} ms")
    print(f"  overhead per job (wall - raw): {(med(walls) - med(raw)) * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
