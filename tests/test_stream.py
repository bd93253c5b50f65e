"""Server-Sent Events for job progress: tenancy, framing, ids and resume, and a real job
followed to the end."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from engine.tenants.keys import create_key

TXT = {"prompt": "a red cube", "width": 64, "height": 64, "steps": 2}


def read_stream(
    client: TestClient, url: str, headers: dict[str, str]
) -> list[tuple[str, int, dict[str, Any]]]:
    """Every event of a stream as (name, id, data), until the server ends it."""
    events: list[tuple[str, int, dict[str, Any]]] = []
    with client.stream("GET", url, headers=headers) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        name, ident, data = None, None, []
        for line in r.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("id:"):
                ident = int(line.split(":", 1)[1].strip())
            elif line.startswith("data:"):
                data.append(line.split(":", 1)[1].strip())
            elif line == "" and data:
                assert name is not None and ident is not None
                events.append((name, ident, json.loads("\n".join(data))))
                name, ident, data = None, None, []
    return events


def read_events(client: TestClient, url: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    """The jobs the events of a stream carry, checking each event's framing."""
    out = []
    for name, ident, data in read_stream(client, url, headers):
        assert data["type"] == name and data["id"] == ident
        out.append(data["job"])
    return out


def test_stream_of_a_finished_job_sends_it_once_and_ends(
    api: TestClient, new_key: Callable[[str], dict[str, str]]
) -> None:
    h = new_key("acme")
    job = api.post("/v1/txt2img", json=TXT, headers=h).json()
    api.delete(f"/v1/jobs/{job['id']}", headers=h)
    stream = read_stream(api, f"/v1/jobs/{job['id']}/events", h)
    assert [name for name, _, _ in stream] == ["job.cancelled"]
    events = read_events(api, f"/v1/jobs/{job['id']}/events", h)
    assert [e["status"] for e in events] == ["cancelled"]
    assert events[0]["id"] == job["id"] and events[0]["params"] == job["params"]


def test_last_event_id_resumes_after_it(
    api: TestClient, new_key: Callable[[str], dict[str, str]]
) -> None:
    h = new_key("acme")
    job = api.post("/v1/txt2img", json=TXT, headers=h).json()
    api.delete(f"/v1/jobs/{job['id']}", headers=h)
    url = f"/v1/jobs/{job['id']}/events"
    ((_, last, _),) = read_stream(api, url, h)
    # Resuming from before the end gets the end; from the end, 204: nothing more, ever.
    assert [n for n, _, _ in read_stream(api, url, {**h, "Last-Event-ID": str(last - 1)})] == [
        "job.cancelled"
    ]
    assert api.get(url, headers={**h, "Last-Event-ID": str(last)}).status_code == 204
    r = api.get(url, headers={**h, "Last-Event-ID": "not-a-number"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "Last-Event-ID"


def test_event_ids_only_grow_over_a_job_s_life() -> None:
    """Queued, running with progress, queued again for a retry, running, terminal: the
    position of each state is above the one before."""
    from api.routes.stream import position
    from engine.db.tables import Job

    def at(status: str, attempts: int, progress: float = 0.0) -> int:
        return position(Job(status=status, attempts=attempts, progress=progress))

    life = [
        at("queued", 0),
        at("running", 1),
        at("running", 1, 0.5),
        at("queued", 1),  # the worker was lost; a retry
        at("running", 2),
        at("running", 2, 0.999),
        at("succeeded", 2, 1.0),
    ]
    assert life == sorted(set(life))
    assert at("cancelled", 0) > at("queued", 0)


def test_stream_is_tenant_scoped_and_authenticated(
    api: TestClient, new_key: Callable[[str], dict[str, str]]
) -> None:
    a, b = new_key("acme"), new_key("globex")
    job = api.post("/v1/txt2img", json=TXT, headers=a).json()
    r = api.get(f"/v1/jobs/{job['id']}/events", headers=b)
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
    assert api.get(f"/v1/jobs/{job['id']}/events").status_code == 401


@pytest.fixture
def live(
    make_settings: Callable[..., Settings], comfy_url: str
) -> Iterator[tuple[TestClient, dict[str, str]]]:
    app = create_app(make_settings(comfyui_url=comfy_url))
    with TestClient(app) as client:
        with app.state.services.db.session() as s:
            token, _ = create_key(s, "acme")
        yield client, {"Authorization": f"Bearer {token}"}


@pytest.mark.comfy
def test_stream_follows_a_real_job_to_success(live: tuple[TestClient, dict[str, str]]) -> None:
    client, h = live
    job = client.post("/v1/txt2img", json={**TXT, "steps": 30}, headers=h).json()
    stream = read_stream(client, f"/v1/jobs/{job['id']}/events", h)
    ids = [i for _, i, _ in stream]
    assert ids == sorted(set(ids)), "event ids must only grow"
    names = [n for n, _, _ in stream]
    assert names[-1] == "job.succeeded" and "job.progress" in names
    events = [data["job"] for _, _, data in stream]
    statuses = [e["status"] for e in events]
    assert statuses[-1] == "succeeded" and statuses.count("succeeded") == 1
    assert set(statuses) <= {"queued", "running", "succeeded"}
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress)  # never goes backwards
    assert any(0 < p < 1 for p in progress), "no intermediate progress was streamed"
    final = events[-1]
    assert final["outputs"] and final["outputs"][0]["url"]
    assert client.get(final["outputs"][0]["url"]).status_code == 200
