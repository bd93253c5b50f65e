"""Cross-request micro-batching: the catalog declaration, the switches, and batched jobs on a
real ComfyUI on the CPU with STENCIL_BATCHING=force.

Each job of a batch must get what it gets alone (its image within 1/255 mean absolute
difference, its outputs, its share of the seconds); cancelling one job or one job breaking the
prompt must leave its neighbours' results as if it had not been there.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from api.app import create_app
from api.settings import Settings
from engine.catalog.catalog import CatalogError, load_catalog
from engine.comfy import ComfyClient
from engine.db.tables import Job, LedgerEntry
from engine.runners.batch import batch_terms
from engine.runners.local import LocalRunner
from engine.runners.worker import WorkerContext
from engine.tenants.keys import create_key
from tests.helpers import finished, wait_for
from tests.netfixtures import Listener, listener, respond

ROOT = Path(__file__).resolve().parents[1]
LONG = ", ".join(["a lighthouse on a rocky cliff above a stormy sea at dawn"] * 12)  # >75 tokens
SMALL = {"width": 64, "height": 64, "steps": 2, "sampler": "euler_ancestral"}
# Fresh seeds per run: ComfyUI caches a prompt it has run, which would hide the work.
_rnd = random.Random()


def seed() -> int:
    return _rnd.randrange(2**32)


Headers = dict[str, str]


def catalog_copy(tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """The shipped catalog with `edit` applied to its txt2img entry, graphs alongside."""
    data = yaml.safe_load((ROOT / "catalog.yaml").read_text())
    edit(next(t for t in data["templates"] if t["name"] == "txt2img"))
    (tmp_path / "templates").symlink_to(ROOT / "templates")
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# ---- the declaration and the switches ------------------------------------------------------


def test_shipped_txt2img_declares_batching() -> None:
    t = load_catalog(ROOT / "catalog.yaml").get("txt2img")
    assert t is not None and t.batching is not None and t.batching.enabled
    assert {"width", "height", "steps", "cfg", "sampler", "scheduler", "style"} <= set(
        t.batching.key
    )
    assert "prompt" not in t.batching.key and "seed" not in t.batching.key


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda b: b.update(key=["width", "height", "cfg", "sampler", "scheduler", "style"]),
            "param 'steps' changes the graph's shape",
        ),
        (
            lambda b: b.update(key=["width", "height", "steps", "cfg", "sampler", "scheduler"]),
            "param 'style' changes the graph's shape",
        ),
        (lambda b: b.update(max_jobs=17), "above the 16 jobs"),
        (lambda b: b["key"].append("colour"), "unknown params: colour"),
        (lambda b: b.update(gpu_classes=["h100"]), "unknown classes: h100"),
        (lambda b: b.update(shape="square"), "batching.shape"),
    ],
)
def test_catalog_check_refuses_what_the_engine_cannot_honour(
    tmp_path: Path, edit: Callable[[dict[str, Any]], None], message: str
) -> None:
    path = catalog_copy(tmp_path, lambda t: edit(t["batching"]))
    with pytest.raises(CatalogError, match=message):
        load_catalog(path)


def test_catalog_check_refuses_a_sampler_without_per_job_noise(tmp_path: Path) -> None:
    def edit(t: dict[str, Any]) -> None:
        t["params"]["sampler"]["values"].append("euler_cfg_pp")

    with pytest.raises(CatalogError, match="sampler='euler_cfg_pp'.*keeps no per-job noise"):
        load_catalog(catalog_copy(tmp_path, edit))


def test_catalog_check_refuses_a_graph_that_cannot_be_batched(tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "catalog.yaml").read_text())
    up = next(t for t in data["templates"] if t["name"] == "upscale")
    up["batching"] = {"enabled": True, "key": ["scale", "method"]}
    (tmp_path / "templates").symlink_to(ROOT / "templates")
    (tmp_path / "catalog.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(CatalogError, match="'upscale', field batching.*exactly one KSampler"):
        load_catalog(tmp_path / "catalog.yaml")


def test_switches() -> None:
    t = load_catalog(ROOT / "catalog.yaml").get("txt2img")
    up = load_catalog(ROOT / "catalog.yaml").get("upscale")
    assert t is not None and up is not None
    assert batch_terms(t, "auto", None) is None  # never on the local CPU runner
    assert batch_terms(t, "auto", "l4") is t.batching
    assert batch_terms(t, "off", "l4") is None
    assert batch_terms(t, "force", None) is t.batching
    assert batch_terms(up, "force", None) is None  # declares no batching
    narrowed = t.model_copy(
        update={"batching": t.batching.model_copy(update={"gpu_classes": ["a10g"]})}  # type: ignore[union-attr]
    )
    assert batch_terms(narrowed, "auto", "l4") is None
    assert batch_terms(narrowed, "auto", "a10g") is narrowed.batching
    off = t.model_copy(update={"batching": t.batching.model_copy(update={"enabled": False})})  # type: ignore[union-attr]
    assert batch_terms(off, "auto", "l4") is None and batch_terms(off, "force", None) is not None
    with pytest.raises(ValueError):
        Settings(_env_file=None, batching="sometimes")  # type: ignore[call-arg]


# ---- batched jobs on a real ComfyUI ----------------------------------------------------------


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64)


def lone_images(comfy_url: str, graph: dict[str, Any]) -> list[np.ndarray]:
    """The job's graph run alone, as `execute_job` would run it."""

    async def go() -> list[np.ndarray]:
        async with ComfyClient(comfy_url) as client:
            result = await client.run(graph, timeout=300)
            return [_pixels(await client.view(ref)) for ref in result.outputs]

    return asyncio.run(go())


def rows(services: Any, *ids: str) -> dict[str, Job]:
    with services.db.session() as s:
        return {j.id: j for j in s.scalars(select(Job).where(Job.id.in_(ids)))}


def ledger(services: Any, job_id: str) -> list[tuple[int, str, str]]:
    with services.db.session() as s:
        q = select(LedgerEntry).where(LedgerEntry.job_id == job_id).order_by(LedgerEntry.attempt)
        return [(e.attempt, e.payer, e.outcome) for e in s.scalars(q)]


@pytest.fixture
def batching_live(
    make_settings: Callable[..., Settings], comfy_url: str, tmp_path: Path
) -> Iterator[tuple[TestClient, Headers]]:
    """The app on the shared ComfyUI with STENCIL_BATCHING=force; a batch of 3 waits 20 s."""

    def edit(t: dict[str, Any]) -> None:
        t["batching"].update(max_jobs=3, max_wait_ms=10_000)

    settings = make_settings(
        comfyui_url=comfy_url,
        batching="force",
        active_job_quota=10,
        catalog=catalog_copy(tmp_path, edit),
    )
    app = create_app(settings)
    with TestClient(app) as client:
        with app.state.services.db.session() as s:
            token, _ = create_key(s, "acme")
        yield client, {"Authorization": f"Bearer {token}"}


@pytest.mark.comfy
def test_jobs_submitted_together_run_as_one_prompt(
    batching_live: tuple[TestClient, Headers], comfy_url: str
) -> None:
    client, h = batching_live
    services = client.app.state.services  # type: ignore[attr-defined]
    bodies = [
        {**SMALL, "prompt": "a red cube", "seed": seed()},
        {**SMALL, "prompt": LONG, "seed": seed(), "batch_size": 2, "negative_prompt": "blurry"},
        {**SMALL, "prompt": "a blue sphere", "seed": seed()},
    ]
    ids = []
    for body in bodies:
        r = client.post("/v1/txt2img", json=body, headers=h)
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    jobs = [wait_for(client, h, i, finished, timeout=180) for i in ids]
    for job in jobs:
        assert job["status"] == "succeeded", job["error"]
    # One prompt: the same batch and the same ComfyUI prompt id on every record.
    assert {j["batch"]["id"] for j in jobs} == {jobs[0]["batch"]["id"]}
    assert [j["batch"]["size"] for j in jobs] == [3, 3, 3]
    stored = rows(services, *ids)
    assert len({stored[i].comfy_prompt_id for i in ids}) == 1
    assert [len(j["outputs"]) for j in jobs] == [1, 2, 1]
    # Each job's images are the ones its graph gives alone.
    for job_id in ids:
        alone = lone_images(comfy_url, stored[job_id].graph)
        mine = [_pixels(services.storage.get(o["key"])) for o in stored[job_id].outputs]
        assert len(mine) == len(alone)
        for a, b in zip(alone, mine, strict=True):
            assert np.abs(a - b).mean() < 1.0, job_id  # mean absolute, in 1/255 units
    first, second = (_pixels(services.storage.get(stored[i].outputs[0]["key"])) for i in ids[::2])
    assert np.abs(first - second).mean() > 5  # neighbours got their own images
    # The batch's seconds are split by images: the two-image job pays half of them.
    m = [stored[i].metering for i in ids]
    assert all(x["batch_size"] == 3 for x in m)
    total = sum(x["billable_seconds"] for x in m)
    assert total > 0
    assert m[1]["billable_seconds"] == pytest.approx(total / 2, rel=1e-9)
    assert m[0]["billable_seconds"] == pytest.approx(total / 4, rel=1e-9)
    for job_id in ids:
        assert ledger(services, job_id) == [(1, "tenant", "succeeded")]


@pytest.mark.comfy
def test_cancel_one_job_mid_batch(
    batching_live: tuple[TestClient, Headers], comfy_url: str
) -> None:
    client, h = batching_live
    services = client.app.state.services  # type: ignore[attr-defined]
    ids = [
        client.post(
            "/v1/txt2img",
            json={**SMALL, "steps": 40, "prompt": f"job {i}", "seed": seed()},
            headers=h,
        ).json()["id"]
        for i in range(3)
    ]
    wait_for(client, h, ids[1], lambda j: j["status"] == "running" and j["progress"] > 0)
    r = client.delete(f"/v1/jobs/{ids[1]}", headers=h)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    # The cancel answered at once; the prompt runs on for the neighbours.
    assert client.get(f"/v1/jobs/{ids[0]}", headers=h).json()["status"] == "running"
    jobs = [wait_for(client, h, i, finished, timeout=180) for i in ids]
    assert [j["status"] for j in jobs] == ["succeeded", "cancelled", "succeeded"]
    assert jobs[1]["outputs"] == []
    assert not any(services.storage.exists(f"jobs/{ids[1]}/{i}.png") for i in range(4))
    assert all(len(jobs[i]["outputs"]) == 1 for i in (0, 2))
    assert {j["batch"]["id"] for j in jobs} == {jobs[0]["batch"]["id"]}
    # The cancelled job pays its share of what ran; nobody is charged twice.
    assert ledger(services, ids[1]) == [(1, "tenant", "cancelled")]
    assert ledger(services, ids[0]) == [(1, "tenant", "succeeded")]


def _runner_on(services: Any, comfy_url: str) -> tuple[LocalRunner, ComfyClient]:
    comfy = ComfyClient(comfy_url)
    ctx = WorkerContext(
        db=services.db,
        storage=services.storage,
        catalog=services.catalog,
        graphs=services.graphs,
        comfy=comfy,
        worker_id="test-worker",
        comfy_version="test",
    )
    return LocalRunner(ctx, batching="force", poll_interval_s=0.1), comfy


def _run_queued(services: Any, comfy_url: str, ids: list[str]) -> dict[str, Job]:
    """Start a batching runner on jobs already queued; return their records once finished."""

    async def go() -> None:
        runner, comfy = _runner_on(services, comfy_url)
        await runner.start()
        try:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                found = await asyncio.to_thread(rows, services, *ids)
                if all(j.status in ("succeeded", "failed", "cancelled") for j in found.values()):
                    return
                await asyncio.sleep(0.2)
            raise AssertionError("the jobs did not finish")
        finally:
            await runner.stop()
            await comfy.aclose()

    asyncio.run(go())
    return rows(services, *ids)


@pytest.fixture
def receiver() -> Iterator[Listener]:
    """A webhook endpoint on loopback that records what it is sent."""
    with listener("127.0.0.1") as lst:
        lst.routes["/hook"] = respond(204, b"", "text/plain")
        yield lst


@pytest.fixture
def queued(
    make_settings: Callable[..., Settings], receiver: Listener
) -> Iterator[tuple[TestClient, Headers]]:
    """An API-only app: jobs stay queued until a test starts a runner on them.

    Its webhook dispatcher runs, and may deliver to `receiver`.
    """
    settings = make_settings(
        active_job_quota=10,
        url_allow_http=True,
        url_allow=f"127.0.0.1:{receiver.port}",
        webhook_poll_interval_s=0.1,
    )
    app = create_app(settings, start_engine=False)
    with TestClient(app) as client:
        with app.state.services.db.session() as s:
            token, _ = create_key(s, "acme")
        yield client, {"Authorization": f"Bearer {token}"}


def _submit(client: TestClient, h: Headers, n: int, **extra: Any) -> list[str]:
    return [
        client.post(
            "/v1/txt2img", json={**SMALL, "prompt": f"job {i}", "seed": seed(), **extra}, headers=h
        ).json()["id"]
        for i in range(n)
    ]


def _deliveries(receiver: Listener, n: int) -> dict[str, dict[str, Any]]:
    """The webhook bodies `receiver` got, by job id, once there are `n` (each job once)."""
    deadline = time.monotonic() + 20
    while len(receiver.requests) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # a duplicate would arrive about now
    bodies = [json.loads(r["body"]) for r in receiver.requests]
    by_job = {b["data"]["id"]: b for b in bodies}
    assert len(bodies) == len(by_job) == n, bodies
    assert all(
        r["headers"].get("webhook-signature", "").startswith("v1,") for r in receiver.requests
    )
    return by_job


def _edit_graph(services: Any, job_id: str, edit: Callable[[dict[str, Any]], None]) -> None:
    """Fault injection: change a queued job's stored graph as a bad input would."""
    with services.db.session() as s:
        job = s.get(Job, job_id)
        assert job is not None
        graph = dict(job.graph)
        edit(graph)
        job.graph = graph


@pytest.mark.comfy
def test_a_job_that_breaks_its_batch_fails_alone(
    queued: tuple[TestClient, Headers], comfy_url: str, receiver: Listener
) -> None:
    client, h = queued
    services = client.app.state.services  # type: ignore[attr-defined]
    ids = _submit(client, h, 3, webhook_url=f"{receiver.base}/hook")

    def bad_prompt(g: dict[str, Any]) -> None:  # the job's text encoder is fed a CLIP, not text
        g["positive"] = {
            **g["positive"],
            "inputs": {**g["positive"]["inputs"], "text": ["style", 1]},
        }

    _edit_graph(services, ids[1], bad_prompt)
    got = _run_queued(services, comfy_url, ids)
    assert [got[i].status for i in ids] == ["succeeded", "failed", "succeeded"]
    err = got[ids[1]].error
    assert err is not None
    if httpx.get(f"{comfy_url}/system_stats").json().get("system", {}).get("comfyui_version"):
        # Current ComfyUI validates the optional socket the job's encoder feeds: a 400 naming
        # the input, mapped back to the job's param.
        assert [e["field"] for e in err["errors"]] == ["prompt"]
    else:
        # The 2024 server validates only required inputs: the job's node fails as it runs,
        # and its error names that job's copy of the node.
        assert "positive.j1" in err["detail"]
    assert got[ids[1]].outputs == []
    # The neighbours' lost attempt is the platform's; they ran again, together, without it.
    for i in (ids[0], ids[2]):
        assert ledger(services, i) == [(1, "platform", "retried"), (2, "tenant", "succeeded")]
        assert got[i].attempts == 2 and got[i].batch_size == 2 and len(got[i].outputs) == 1
    assert got[ids[0]].batch_id == got[ids[2]].batch_id != got[ids[1]].batch_id
    assert ledger(services, ids[1]) == [(1, "tenant", "failed")]
    # Each job's own signed webhook, once, with its state and the batch it last ran in.
    hooks = _deliveries(receiver, 3)
    for i in ids:
        data = hooks[i]["data"]
        assert hooks[i]["type"] == f"job.{got[i].status}" and data["status"] == got[i].status
        assert data["batch"] == {"id": got[i].batch_id, "size": got[i].batch_size}
        assert len(data["outputs"]) == len(got[i].outputs)


@pytest.mark.comfy
def test_a_fault_no_job_is_named_for_reruns_each_job_alone(
    queued: tuple[TestClient, Headers], comfy_url: str
) -> None:
    client, h = queued
    services = client.app.state.services  # type: ignore[attr-defined]
    ids = _submit(client, h, 3)

    def bad_seed(g: dict[str, Any]) -> None:  # the shared sampler fails on it, in the batch
        g["sampler"] = {**g["sampler"], "inputs": {**g["sampler"]["inputs"], "seed": 2**64 + 5}}

    _edit_graph(services, ids[2], bad_seed)
    got = _run_queued(services, comfy_url, ids)
    assert [got[i].status for i in ids] == ["succeeded", "succeeded", "failed"]
    assert got[ids[2]].error is not None and got[ids[2]].outputs == []
    for i in ids[:2]:
        assert ledger(services, i) == [(1, "platform", "retried"), (2, "tenant", "succeeded")]
        assert len(got[i].outputs) == 1
    assert ledger(services, ids[2])[0] == (1, "platform", "retried")
    assert ledger(services, ids[2])[-1][2] == "failed"
