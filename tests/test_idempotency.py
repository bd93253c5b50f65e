"""Idempotency-Key: retries return the original job; reuse with another body is a 422."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select, update

from engine.db.database import utcnow
from engine.db.tables import IdempotencyKey, Job

Headers = dict[str, str]
TXT = {"prompt": "a red cube", "width": 64, "height": 64, "steps": 2}


def _count_jobs(api: TestClient) -> int:
    db = api.app.state.services.db  # type: ignore[attr-defined]
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(Job)) or 0)


def test_same_key_and_body_returns_the_original_job(
    api: TestClient, new_key: Callable[[str], Headers]
) -> None:
    h = {**new_key("acme"), "Idempotency-Key": "order-1234"}
    first = api.post("/v1/txt2img", json=TXT, headers=h)
    assert first.status_code == 202 and "idempotent-replayed" not in first.headers
    again = api.post("/v1/txt2img", json=TXT, headers=h)
    assert again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["params"]["seed"] == first.json()["params"]["seed"]  # not re-drawn
    # Defaults spelled out are the same request.
    same = api.post("/v1/txt2img", json={**TXT, "cfg": 7.0}, headers=h)
    assert same.json()["id"] == first.json()["id"]
    assert _count_jobs(api) == 1
    # The replay shows the job as it is now.
    api.delete(f"/v1/jobs/{first.json()['id']}", headers=h)
    assert api.post("/v1/txt2img", json=TXT, headers=h).json()["status"] == "cancelled"


def test_same_key_with_another_body_is_422(
    api: TestClient, new_key: Callable[[str], Headers]
) -> None:
    h = {**new_key("acme"), "Idempotency-Key": "k1"}
    assert api.post("/v1/txt2img", json=TXT, headers=h).status_code == 202
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    upscale = {"image": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()}
    for body, path in (({**TXT, "prompt": "a blue cube"}, "/v1/txt2img"), (upscale, "/v1/upscale")):
        r = api.post(path, json=body, headers=h)
        assert r.status_code == 422, r.text
        problem = r.json()
        assert problem["type"].endswith("/idempotency_key_reused")
        assert problem["errors"][0]["field"] == "Idempotency-Key"
    assert _count_jobs(api) == 1


def test_keys_are_per_tenant_and_absent_keys_never_dedupe(
    api: TestClient, new_key: Callable[[str], Headers]
) -> None:
    a, b = new_key("acme"), new_key("globex")
    ja = api.post("/v1/txt2img", json=TXT, headers={**a, "Idempotency-Key": "same"}).json()
    jb = api.post("/v1/txt2img", json=TXT, headers={**b, "Idempotency-Key": "same"}).json()
    assert ja["id"] != jb["id"]
    api.post("/v1/txt2img", json=TXT, headers=a)
    api.post("/v1/txt2img", json=TXT, headers=a)
    assert _count_jobs(api) == 4


def test_key_expires_after_the_ttl(api: TestClient, new_key: Callable[[str], Headers]) -> None:
    h = {**new_key("acme"), "Idempotency-Key": "old"}
    first = api.post("/v1/txt2img", json=TXT, headers=h).json()
    db = api.app.state.services.db  # type: ignore[attr-defined]
    with db.session() as s:
        s.execute(update(IdempotencyKey).values(created_at=utcnow() - timedelta(hours=25)))
    second = api.post("/v1/txt2img", json={**TXT, "prompt": "new"}, headers=h)
    assert second.status_code == 202 and second.json()["id"] != first["id"]
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(IdempotencyKey)) == 1


def test_concurrent_requests_with_one_key_create_one_job(
    api: TestClient, new_key: Callable[[str], Headers]
) -> None:
    h = {**new_key("acme"), "Idempotency-Key": "burst"}
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: api.post("/v1/txt2img", json=TXT, headers=h), range(8)))
    assert [r.status_code for r in results] == [202] * 8, [r.text for r in results]
    assert len({r.json()["id"] for r in results}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in results) == 7
    assert _count_jobs(api) == 1


def test_multipart_retry_with_a_new_boundary_is_the_same_request(
    api: TestClient, new_key: Callable[[str], Headers]
) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    h = {**new_key("acme"), "Idempotency-Key": "upload-1"}
    files = {"image": ("a.png", buf.getvalue(), "image/png")}
    a = api.post("/v1/upscale", files=files, data={"scale": "2"}, headers=h).json()
    b = api.post("/v1/upscale", files=files, data={"scale": "2"}, headers=h).json()
    assert a["id"] == b["id"]
    # The same image as a data URL is the same request too.
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    c = api.post("/v1/upscale", json={"image": url, "scale": 2}, headers=h).json()
    assert c["id"] == a["id"]


def test_malformed_keys_are_422_naming_the_header(
    api: TestClient, new_key: Callable[[str], Headers]
) -> None:
    h = new_key("acme")
    for bad in ("x" * 256, "has space", ""):
        r = api.post("/v1/txt2img", json=TXT, headers={**h, "Idempotency-Key": bad})
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["errors"][0]["field"] == "Idempotency-Key"
    assert _count_jobs(api) == 0
