"""Server-Sent Events for job progress: tenancy, framing, and a real job followed to the end."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from engine.store import create_key

TXT = {"prompt": "a red cube", "width": 64, "height": 64, "steps": 2}


def read_events(client: TestClient, url: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    """Every `job` event of a stream, parsed, until the server ends it."""
    events: list[dict[str, Any]] = []
    with client.stream("GET", url, headers=headers) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        name, data = None, []
        for line in r.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data.append(line.split(":", 1)[1].strip())
            elif line == "" and data:
                assert name == "job"
                events.append(json.loads("\n".join(data)))
                name, data = None, []
    return events


def test_stream_of_a_finished_job_sends_it_once_and_ends(
    api: TestClient, new_key: Callable[[str], dict[str, str]]
) -> None:
    h = new_key("acme")
    job = api.post("/v1/txt2img", json=TXT, headers=h).json()
    api.delete(f"/v1/jobs/{job['id']}", headers=h)
    events = read_events(api, f"/v1/jobs/{job['id']}/events", h)
    assert [e["status"] for e in events] == ["cancelled"]
    assert events[0]["id"] == job["id"] and events[0]["params"] == job["params"]


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
    events = read_events(client, f"/v1/jobs/{job['id']}/events", h)
    statuses = [e["status"] for e in events]
    assert statuses[-1] == "succeeded" and statuses.count("succeeded") == 1
    assert set(statuses) <= {"queued", "running", "succeeded"}
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress)  # never goes backwards
    assert any(0 < p < 1 for p in progress), "no intermediate progress was streamed"
    final = events[-1]
    assert final["outputs"] and final["outputs"][0]["url"]
    assert client.get(final["outputs"][0]["url"]).status_code == 200
