"""Micro-batching: the same set of waiting txt2img jobs three ways, interleaved.

    .venv/bin/python bench/batching.py [--jobs 8] [--steps 2] [--size 64] [--rounds 3] [--gpu]

Starts one ComfyUI (CPU unless --gpu) with Stencil's batching nodes on the catalog's
checkpoint (the random-weight stand-in from `stencil models synth`, or the real file). Each
round takes `--jobs` jobs of one shape, each with its own prompt and a fresh seed (ComfyUI
caches a prompt it has run), and runs them

1. through ComfyUI's own queue: every rendered graph queued at once, straight to ComfyUI;
2. through Stencil with STENCIL_BATCHING=off: every job submitted at once, one prompt each;
3. through Stencil with STENCIL_BATCHING=force: the same, batched (`--jobs` per batch).

plus one lone job straight to ComfyUI (the latency a job has with the engine to itself).
Latency is per job, from the moment the round's jobs were sent to that job's end (Stencil:
the job record's acceptance to terminal state). Throughput is jobs per minute over the round.
Rounds interleave so background load hits every path alike. Prints a Markdown table whose
ratios are against ComfyUI's queue measured in the same run, and each batched image's mean
absolute difference from the same job's lone image.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from fastapi.testclient import TestClient
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.app import create_app  # noqa: E402
from api.settings import Settings  # noqa: E402
from engine.catalog.catalog import load_catalog  # noqa: E402
from engine.catalog.params import build_request_model, resolve_params, validate_params  # noqa: E402
from engine.catalog.render import TemplateGraphs  # noqa: E402
from engine.comfy import ComfyClient, ComfyProcess  # noqa: E402
from engine.db.tables import Job  # noqa: E402
from engine.tenants.keys import create_key  # noqa: E402

PROMPTS = [
    "a lighthouse on a cliff at dawn",
    "a red cube on a wooden table, studio light",
    "a watercolour fox in the snow",
    "an astronaut riding a horse on the moon, highly detailed, cinematic lighting, 35 mm",
    "a bowl of ramen",
    "a city street at night in the rain, neon signs reflected in puddles",
    "a blue sphere",
    "an oil painting of a harbour with fishing boats",
]


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    return s[max(0, min(len(s) - 1, round(q * len(s) + 0.5) - 1))]


def bench_catalog(home: Path, max_jobs: int, wait_ms: int) -> Path:
    """The shipped catalog with txt2img's batch sized for the benchmark."""
    data = yaml.safe_load((ROOT / "catalog.yaml").read_text())
    t = next(t for t in data["templates"] if t["name"] == "txt2img")
    t["batching"].update(max_jobs=max_jobs, max_wait_ms=wait_ms)
    home.mkdir(parents=True, exist_ok=True)
    (home / "templates").symlink_to(ROOT / "templates")
    path = home / "catalog.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class Stencil:
    """An app on the shared ComfyUI with one STENCIL_BATCHING mode, and an API key."""

    def __init__(self, url: str, home: Path, catalog: Path, mode: str) -> None:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            home=home,
            comfyui_url=url,
            catalog=catalog,
            batching=mode,
            active_job_quota=1000,
            rate_limit_write="100000/minute",
            rate_limit_read="100000/minute",
            trusted_hosts="testserver",
        )
        self.app = create_app(settings)
        self.client = TestClient(self.app)
        self.client.__enter__()
        with self.app.state.services.db.session() as s:
            token, _ = create_key(s, "bench")
        self.h = {"Authorization": f"Bearer {token}"}

    def close(self) -> None:
        self.client.__exit__(None, None, None)

    def round(self, bodies: list[dict[str, Any]]) -> tuple[list[float], float, list[Job]]:
        ids = []
        for body in bodies:
            r = self.client.post("/v1/txt2img", json=body, headers=self.h)
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
        services = self.app.state.services
        while True:
            with services.db.session() as s:
                jobs = [s.get(Job, i) for i in ids]
            if all(j is not None and j.finished_at is not None for j in jobs):
                break
            time.sleep(0.02)
        done = [j for j in jobs if j is not None]
        for j in done:
            assert j.status == "succeeded", j.error
        latencies = [(j.finished_at - j.created_at).total_seconds() for j in done]  # type: ignore[operator]
        span = (
            max(j.finished_at for j in done) - min(j.created_at for j in done)  # type: ignore[type-var]
        ).total_seconds()
        return latencies, span, done


async def comfy_queue(url: str, graphs: list[dict[str, Any]]) -> tuple[list[float], float]:
    """Every graph queued on ComfyUI at once; each one's latency and the round's span."""
    t0 = time.perf_counter()

    async def one(g: dict[str, Any]) -> float:
        async with ComfyClient(url) as c:
            await c.run(g, timeout=900)
            return time.perf_counter() - t0

    ends = await asyncio.gather(*(one(g) for g in graphs))
    return list(ends), max(ends)


async def images(url: str, graph: dict[str, Any]) -> list[np.ndarray]:
    async with ComfyClient(url) as c:
        result = await c.run(graph, timeout=900)
        return [
            np.asarray(Image.open(io.BytesIO(await c.view(r))).convert("RGB"), dtype=np.float64)
            for r in result.outputs
        ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--wait-ms", type=int, default=2000, help="batching window (all jobs wait)")
    ap.add_argument("--gpu", action="store_true", help="run ComfyUI on the GPU")
    ap.add_argument("--comfyui", type=Path, default=ROOT / ".stencil" / "comfyui")
    ap.add_argument("--models", type=Path, default=ROOT / ".stencil" / "models")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "nodes").mkdir()
        (work / "nodes" / "stencil_batch").symlink_to(ROOT / "nodes" / "stencil_batch")
        proc = ComfyProcess(
            a.comfyui,
            cpu=not a.gpu,
            models_dir=a.models,
            input_dir=work / "input",
            output_dir=work / "output",
            log_path=work / "comfy.log",
            custom_nodes=[work / "nodes"],
        )

        async def start() -> None:
            await proc.start()
            await proc.wait_ready(timeout=300)

        asyncio.run(start())
        try:
            run(proc.base_url, a, work)
        finally:
            proc.close()


def run(url: str, a: argparse.Namespace, work: Path) -> None:
    catalog_path = bench_catalog(work / "cat", a.jobs, a.wait_ms)
    catalog = load_catalog(catalog_path)
    t = catalog.get("txt2img")
    assert t is not None
    graphs = TemplateGraphs(catalog)
    model = build_request_model(t)
    alone = Stencil(url, work / "off", catalog_path, "off")
    batched = Stencil(url, work / "force", catalog_path, "force")
    rnd = random.Random()
    shape = {"width": a.size, "height": a.size, "steps": a.steps, "sampler": "euler"}

    def bodies() -> list[dict[str, Any]]:
        return [
            {**shape, "prompt": PROMPTS[i % len(PROMPTS)], "seed": rnd.randrange(2**32)}
            for i in range(a.jobs)
        ]

    def render(body: dict[str, Any]) -> dict[str, Any]:
        params = resolve_params(t, validate_params(model, body))
        return graphs.render(t, params).graph

    # Warm up: models loaded, every path run once.
    asyncio.run(comfy_queue(url, [render(b) for b in bodies()[:2]]))
    alone.round(bodies()[:2])
    batched.round(bodies()[:2])

    lat: dict[str, list[float]] = {"lone": [], "queue": [], "off": [], "force": []}
    rate: dict[str, list[float]] = {"queue": [], "off": [], "force": []}
    mads: list[float] = []
    sizes: list[int] = []
    prompt_s: list[float] = []
    for _ in range(a.rounds):
        ends, _span = asyncio.run(comfy_queue(url, [render(bodies()[0])]))
        lat["lone"] += ends
        ends, span = asyncio.run(comfy_queue(url, [render(b) for b in bodies()]))
        lat["queue"] += ends
        rate["queue"].append(a.jobs / span * 60)
        for name, app in (("off", alone), ("force", batched)):
            ends, span, done = app.round(bodies())
            lat[name] += ends
            rate[name].append(a.jobs / span * 60)
            if name == "force":
                sizes += [j.batch_size or 1 for j in done]
                prompt_s += sorted({j.execution_s or 0.0 for j in done})
                storage = app.app.state.services.storage
                for j in done[:2]:  # two jobs a round against their lone images
                    lone = asyncio.run(images(url, j.graph))
                    mine = [
                        np.asarray(
                            Image.open(io.BytesIO(storage.get(o["key"]))).convert("RGB"),
                            dtype=np.float64,
                        )
                        for o in j.outputs
                    ]
                    mads += [float(np.abs(x - y).mean()) for x, y in zip(lone, mine, strict=True)]
    alone.close()
    batched.close()

    q = statistics.median(rate["queue"])
    lone_p50 = statistics.median(lat["lone"])
    print(
        f"\n{a.jobs} jobs a round, {a.rounds} rounds, txt2img {a.size}x{a.size}, {a.steps} steps, "
        f"{'GPU' if a.gpu else 'CPU'}; lone job p50 {lone_p50 * 1000:.0f} ms; "
        f"batch sizes seen: {sorted(set(sizes))}\n"
    )
    print(
        "| path | jobs/min (median) | vs ComfyUI queue | p50 latency | p95 latency | p50 vs lone |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for name, label in (
        ("queue", "ComfyUI's own queue"),
        ("off", "Stencil, batching off"),
        ("force", "Stencil, batching on"),
    ):
        r = statistics.median(rate[name])
        p50, p95 = statistics.median(lat[name]), pct(lat[name], 0.95)
        print(
            f"| {label} | {r:.1f} | {r / q:.2f}x | {p50 * 1000:.0f} ms | {p95 * 1000:.0f} ms "
            f"| {p50 / lone_p50:.2f}x |"
        )
    if prompt_s:
        print(
            f"\nbatched prompts, ComfyUI execution: median {statistics.median(prompt_s):.2f} s "
            f"over {len(prompt_s)} prompts"
        )
    if mads:
        print(f"batched vs lone image, mean absolute difference: max {max(mads):.3f}/255")


if __name__ == "__main__":
    main()
