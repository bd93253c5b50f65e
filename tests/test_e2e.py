"""End to end against a real ComfyUI on the CPU: the battery the service is validated with."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.app import create_app
from api.settings import Settings
from engine.tenants.keys import create_key
from tests.helpers import finished, wait_for

pytestmark = pytest.mark.comfy

Headers = dict[str, str]
SMALL = {"prompt": "a red cube on a table", "width": 64, "height": 64, "steps": 2}


def png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (10, 120, 200)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def live(
    make_settings: Callable[..., Settings], comfy_url: str
) -> Iterator[tuple[TestClient, Headers]]:
    """The app with the local runner on the shared real ComfyUI."""
    settings = make_settings(comfyui_url=comfy_url, worker_concurrency=2, active_job_quota=10)
    app = create_app(settings)
    with TestClient(app) as client:
        with app.state.services.db.session() as s:
            token, _ = create_key(s, "acme")
        yield client, {"Authorization": f"Bearer {token}"}


def fetch_png(client: TestClient, url: str) -> Image.Image:
    r = client.get(url)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    img = Image.open(io.BytesIO(r.content))
    img.load()
    assert img.format == "PNG"
    return img


def test_ready_reports_engine(live: tuple[TestClient, Headers]) -> None:
    client, _ = live
    r = client.get("/ready")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "ready" and r.json()["engine"]["runner"] == "local"


def test_txt2img_end_to_end(live: tuple[TestClient, Headers]) -> None:
    client, h = live
    r = client.post("/v1/txt2img", json={**SMALL, "batch_size": 2}, headers=h)
    assert r.status_code == 202, r.text
    job = wait_for(client, h, r.json()["id"], finished)
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"] == 1.0
    assert len(job["outputs"]) == 2
    for out in job["outputs"]:
        assert (out["width"], out["height"]) == (64, 64) and out["content_type"] == "image/png"
        img = fetch_png(client, out["url"])
        assert img.size == (64, 64)
        assert out["bytes"] > 0
    t = job["timings"]
    assert t["queue_seconds"] >= 0 and t["run_seconds"] > 0
    assert abs(t["total_seconds"] - t["queue_seconds"] - t["run_seconds"]) < 0.01
    assert job["comfyui_version"]
    # URLs are signed afresh on each read; a tampered one is refused.
    again = client.get(f"/v1/jobs/{job['id']}", headers=h).json()
    assert again["outputs"][0]["url"].split("?")[0] == job["outputs"][0]["url"].split("?")[0]
    bad = job["outputs"][0]["url"].replace("signature=", "signature=0")
    assert client.get(bad).status_code == 404


def test_upscale_end_to_end_multipart(live: tuple[TestClient, Headers]) -> None:
    client, h = live
    r = client.post(
        "/v1/upscale",
        data={"scale": "2", "method": "bilinear"},
        files={"image": ("in.png", png(24, 16), "image/png")},
        headers=h,
    )
    assert r.status_code == 202, r.text
    job = wait_for(client, h, r.json()["id"], finished)
    assert job["status"] == "succeeded", job["error"]
    (out,) = job["outputs"]
    assert (out["width"], out["height"]) == (48, 32)
    assert fetch_png(client, out["url"]).size == (48, 32)


def test_cancel_running_job_interrupts_comfyui(
    live: tuple[TestClient, Headers], comfy_url: str
) -> None:
    client, h = live
    r = client.post("/v1/txt2img", json={**SMALL, "steps": 100}, headers=h)
    job_id = r.json()["id"]
    wait_for(
        client, h, job_id, lambda j: j["status"] == "running" and j["progress"] > 0, timeout=120
    )
    r = client.delete(f"/v1/jobs/{job_id}", headers=h)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    q = httpx.get(f"{comfy_url}/queue").json()
    assert q["queue_running"] == [] and q["queue_pending"] == []
    job = client.get(f"/v1/jobs/{job_id}", headers=h).json()
    assert job["status"] == "cancelled" and job["outputs"] == []
    storage = client.app.state.services.storage  # type: ignore[attr-defined]
    assert not any(storage.exists(f"jobs/{job_id}/{i}.png") for i in range(4))
    time.sleep(1.0)  # a late worker write must not resurrect it
    assert client.get(f"/v1/jobs/{job_id}", headers=h).json()["status"] == "cancelled"
    # The engine is free for the next job.
    nxt = client.post("/v1/txt2img", json=SMALL, headers=h).json()
    assert wait_for(client, h, nxt["id"], finished)["status"] == "succeeded"


def test_three_concurrent_jobs_succeed_with_timings(live: tuple[TestClient, Headers]) -> None:
    client, h = live
    ids = [
        client.post("/v1/txt2img", json={**SMALL, "seed": i}, headers=h).json()["id"]
        for i in range(3)
    ]
    jobs = [wait_for(client, h, i, finished) for i in ids]
    for job in jobs:
        assert job["status"] == "succeeded", job["error"]
        t = job["timings"]
        assert t["queue_seconds"] is not None and t["run_seconds"] > 0 and t["total_seconds"] > 0
    assert len({j["params"]["seed"] for j in jobs}) == 3


def test_comfyui_validation_error_maps_to_param(comfy_url: str) -> None:
    """A real ComfyUI refusal on a bound input is reported under the public param name."""
    import asyncio
    from pathlib import Path

    from engine.catalog.catalog import load_catalog
    from engine.catalog.render import TemplateGraphs, example_params
    from engine.comfy import ComfyClient, ComfyValidationError
    from engine.runners.worker import node_errors_to_fields

    cat = load_catalog(Path(__file__).resolve().parents[1] / "catalog.yaml")
    t = cat.get("txt2img")
    assert t is not None
    graphs = TemplateGraphs(cat)
    graph = graphs.render(t, {**example_params(t), "sampler": "no_such_sampler"}).graph

    async def go() -> dict[str, Any]:
        try:
            await ComfyClient(comfy_url).submit(graph, "test")
        except ComfyValidationError as e:
            return e.node_errors
        raise AssertionError("ComfyUI accepted a bad sampler")

    errors = asyncio.run(go())
    fields = node_errors_to_fields(t, graphs.bindings(t), errors)
    assert {"field": "sampler"}.items() <= fields[0].items()
