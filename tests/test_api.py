"""API tests in-process, on SQLite and PostgreSQL, with no engine (jobs stay queued)."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from engine.db.tables import Job

ROOT = Path(__file__).resolve().parents[1]
Headers = dict[str, str]
TXT = {"prompt": "a red cube", "width": 64, "height": 64, "steps": 2}


def png(w: int = 16, h: int = 16, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 30, 30)).save(buf, format=fmt)
    return buf.getvalue()


def noisy_png() -> bytes:
    import os

    buf = io.BytesIO()
    Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3)).save(buf, format="PNG")
    return buf.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def assert_problem(r: object, status: int, kind: str) -> dict[str, object]:
    resp = r  # httpx.Response
    assert resp.status_code == status, resp.text  # type: ignore[attr-defined]
    assert resp.headers["content-type"].startswith("application/problem+json")  # type: ignore[attr-defined]
    body: dict[str, object] = resp.json()  # type: ignore[attr-defined]
    assert body["type"] == f"https://stencil.dev/problems/{kind}"
    assert body["status"] == status
    assert isinstance(body["title"], str) and isinstance(body["detail"], str)
    return body


def fields_of(body: dict[str, object]) -> set[str]:
    return {e["field"] for e in body["errors"]}  # type: ignore[index,union-attr]


def test_health_needs_no_auth(api: TestClient) -> None:
    r = api.get("/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_missing_and_wrong_keys_are_401(api: TestClient, new_key: Callable[[str], Headers]) -> None:
    assert_problem(api.get("/v1/jobs"), 401, "unauthorized")
    assert_problem(
        api.get("/v1/jobs", headers={"Authorization": "Bearer sk_nope"}), 401, "unauthorized"
    )
    assert_problem(
        api.post("/v1/txt2img", json=TXT, headers={"Authorization": "Basic abc"}),
        401,
        "unauthorized",
    )
    ok = new_key("acme")
    assert api.get("/v1/jobs", headers=ok).status_code == 200


def test_revoked_key_is_401(api: TestClient, new_key: Callable[[str], Headers]) -> None:
    from engine.tenants.keys import list_keys, revoke_key

    h = new_key("acme")
    db = api.app.state.services.db  # type: ignore[attr-defined]
    with db.session() as s:
        ((key, _),) = list_keys(s, "acme")
        assert revoke_key(s, key.id)
    assert_problem(api.get("/v1/jobs", headers=h), 401, "unauthorized")


def test_submit_txt2img_returns_job_with_seed(
    api: TestClient, new_key: Callable[[str], Headers]
) -> None:
    h = new_key("acme")
    r = api.post("/v1/txt2img", json=TXT, headers=h)
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued" and job["template"] == "txt2img"
    assert job["template_version"] == "1.1.0"
    assert isinstance(job["params"]["seed"], int) and 0 <= job["params"]["seed"] <= 2**32 - 1
    assert job["params"]["sampler"] == "euler" and job["params"]["batch_size"] == 1
    assert len(job["graph_hash"]) == 64
    again = api.get(f"/v1/jobs/{job['id']}", headers=h).json()
    assert again["params"] == job["params"] and again["status"] == "queued"


def test_explicit_seed_gives_same_graph_hash(
    api: TestClient, new_key: Callable[[str], Headers]
) -> None:
    h = new_key("acme")
    a = api.post("/v1/txt2img", json={**TXT, "seed": 7}, headers=h).json()
    b = api.post("/v1/txt2img", json={**TXT, "seed": 7}, headers=h).json()
    c = api.post("/v1/txt2img", json={**TXT, "seed": 8}, headers=h).json()
    assert a["graph_hash"] == b["graph_hash"] != c["graph_hash"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**TXT, "width": 65}, "width"),  # not a multiple of 8
        ({**TXT, "width": 4096}, "width"),  # above maximum
        ({**TXT, "steps": 0}, "steps"),  # below minimum
        ({**TXT, "steps": "many"}, "steps"),  # wrong type
        ({**TXT, "sampler": "magic"}, "sampler"),  # not in the enum
        ({**TXT, "prompt": "x" * 2001}, "prompt"),  # too long
        ({**TXT, "prompt": ""}, "prompt"),  # too short
        ({k: v for k, v in TXT.items() if k != "prompt"}, "prompt"),  # required
        ({**TXT, "batch_size": 5}, "batch_size"),  # above the batch cap
        ({**TXT, "seed": -1}, "seed"),
        ({**TXT, "cfg": 31.5}, "cfg"),
        ({**TXT, "colour": "red"}, "colour"),  # unknown field
    ],
)
def test_bad_params_are_422_naming_the_field(
    api: TestClient, new_key: Callable[[str], Headers], body: dict[str, object], field: str
) -> None:
    h = new_key("acme")
    body_ = assert_problem(api.post("/v1/txt2img", json=body, headers=h), 422, "validation_error")
    assert fields_of(body_) == {field}
    assert field in str(body_["detail"])
    # Nothing was stored.
    assert api.get("/v1/jobs", headers=h).json()["data"] == []


def test_bad_json_and_content_types(api: TestClient, new_key: Callable[[str], Headers]) -> None:
    h = new_key("acme")
    assert_problem(
        api.post(
            "/v1/txt2img", content=b"{nope", headers={**h, "Content-Type": "application/json"}
        ),
        400,
        "invalid_request",
    )
    assert_problem(
        api.post("/v1/txt2img", content=b"prompt=x", headers={**h, "Content-Type": "text/plain"}),
        415,
        "unsupported_media_type",
    )
    b = assert_problem(api.post("/v1/txt2img", json=[1, 2], headers=h), 422, "validation_error")
    assert fields_of(b) == {"body"}


def test_body_over_cap_is_413(make_settings: Callable[..., object], new_key: object) -> None:
    from api.app import create_app
    from engine.tenants.keys import create_key

    app = create_app(make_settings(max_body_bytes=4096), start_engine=False)  # type: ignore[operator]
    with TestClient(app) as client:
        with app.state.services.db.session() as s:
            token, _ = create_key(s, "acme")
        h = {"Authorization": f"Bearer {token}"}
        r = client.post("/v1/txt2img", json={**TXT, "prompt": "x" * 5000}, headers=h)
        assert_problem(r, 413, "payload_too_large")

        def chunks():  # no Content-Length: the cap applies while streaming
            for _ in range(10):
                yield b"x" * 1000

        r = client.post(
            "/v1/txt2img", content=chunks(), headers={**h, "Content-Type": "application/json"}
        )
        assert_problem(r, 413, "payload_too_large")


def test_upscale_accepts_data_url_and_multipart(
    api: TestClient, new_key: Callable[[str], Headers]
) -> None:
    h = new_key("acme")
    img = png(20, 10)
    r = api.post("/v1/upscale", json={"image": data_url(img), "scale": 2}, headers=h)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["inputs"]["image"]["width"] == 20 and job["inputs"]["image"]["bytes"] == len(img)
    assert "base64" not in json.dumps(job)  # no media bytes on the job
    r2 = api.post(
        "/v1/upscale",
        data={"scale": "3", "method": "bicubic"},
        files={"image": ("in.png", img, "image/png")},
        headers=h,
    )
    assert r2.status_code == 202, r2.text
    assert r2.json()["params"]["scale"] == 3.0 and r2.json()["params"]["method"] == "bicubic"
    db = api.app.state.services.db  # type: ignore[attr-defined]
    with db.session() as s:
        row = s.get(Job, job["id"])
        assert row is not None
        assert len(json.dumps(row.params)) + len(json.dumps(row.inputs)) < 2000
        storage = api.app.state.services.storage  # type: ignore[attr-defined]
        assert storage.get(row.inputs["image"]["key"]) == img


def test_a_multipart_body_that_breaks_the_schema_is_a_422_naming_the_field(
    api: TestClient, new_key: Callable[[str], Headers]
) -> None:
    """Multipart fields are text: each is parsed as its param's type and held to its bounds,
    as a JSON body is (the fuzz tests leave multipart refusals to this test)."""
    h = new_key("acme")
    img = ("in.png", png(20, 10), "image/png")
    cases: list[tuple[dict[str, str], dict[str, Any], str]] = [
        ({"scale": "9"}, {"image": img}, "scale"),
        ({"scale": "two"}, {"image": img}, "scale"),
        ({"scale": "2", "method": "sideways"}, {"image": img}, "method"),
        ({"scale": "2", "bogus": "1"}, {"image": img}, "bogus"),
        ({"scale": "2"}, {"image": img, "method": img}, "method"),
    ]
    for data, files, field in cases:
        r = api.post("/v1/upscale", data=data, files=files, headers=h)
        assert r.status_code == 422, (data, r.text)
        assert field in fields_of(r.json()), (data, r.json())
    assert api.get("/v1/jobs", headers=h).json()["data"] == []  # nothing stored


@pytest.mark.parametrize(
    ("make", "msg"),
    [
        (lambda: data_url(b"not an image"), "not a decodable image"),
        (lambda: data_url(png(16, 16, "GIF"), "image/gif"), "format GIF"),
        (lambda: data_url(png(2100, 2100)), "pixels"),
        (lambda: "data:image/png;base64,@@@", "base64"),
        (lambda: "ftp://203.0.113.9/a.png", "scheme 'ftp'"),
        (lambda: "iVBORw0KGgo=", "data URL"),
        (lambda: data_url(noisy_png()[:3000]), "corrupt"),
    ],
)
def test_bad_images_are_422(
    api: TestClient, new_key: Callable[[str], Headers], make: Callable[[], str], msg: str
) -> None:
    h = new_key("acme")
    body = assert_problem(
        api.post("/v1/upscale", json={"image": make()}, headers=h), 422, "invalid_media"
    )
    assert fields_of(body) == {"image"} and msg in str(body["detail"])
    assert api.get("/v1/jobs", headers=h).json()["data"] == []


def test_decompression_bomb_refused_before_decoding(
    api: TestClient, new_key: Callable[[str], Headers]
) -> None:
    h = new_key("acme")
    # A tiny file that claims 30000x30000 pixels.
    bomb = _bomb_png()
    body = assert_problem(
        api.post("/v1/upscale", json={"image": data_url(bomb)}, headers=h), 422, "invalid_media"
    )
    assert "pixels" in str(body["detail"]) or "decodable" in str(body["detail"])


def _bomb_png() -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 30001 * 8)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_upscale_output_cap_is_enforced_at_submit(
    api: TestClient, new_key: Callable[[str], Headers]
) -> None:
    h = new_key("acme")
    body = assert_problem(
        api.post("/v1/upscale", json={"image": data_url(png(2000, 2000)), "scale": 4}, headers=h),
        422,
        "invalid_media",
    )
    assert fields_of(body) == {"scale"}


def test_upscale_requires_image(api: TestClient, new_key: Callable[[str], Headers]) -> None:
    h = new_key("acme")
    body = assert_problem(
        api.post("/v1/upscale", json={"scale": 2}, headers=h), 422, "validation_error"
    )
    assert fields_of(body) == {"image"}


def test_quota_burst_of_eight_accepts_five(
    api: TestClient, new_key: Callable[[str], Headers]
) -> None:
    h = new_key("acme")
    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(
                lambda i: api.post("/v1/txt2img", json={**TXT, "seed": i}, headers=h), range(8)
            )
        )
    codes = sorted(r.status_code for r in results)
    assert codes == [202] * 5 + [429] * 3
    for r in results:
        if r.status_code == 429:
            assert_problem(r, 429, "quota_exceeded")
            assert int(r.headers["retry-after"]) > 0
    assert len(api.get("/v1/jobs", headers=h).json()["data"]) == 5
    # Another tenant is not affected by acme's quota.
    assert api.post("/v1/txt2img", json=TXT, headers=new_key("other")).status_code == 202


def test_a_tenant_s_kept_count_of_active_jobs_follows_every_way_a_job_ends(
    db_url: str,
) -> None:
    """Admission reads `tenants.active_jobs` instead of counting jobs: every insert and every
    move to a terminal state keeps it equal to the count, a lost race changes nothing, and the
    quota frees as jobs end."""
    from engine.db.database import Database, new_id, utcnow
    from engine.errors import QuotaExceeded
    from engine.jobs import lifecycle
    from engine.jobs.states import FAILED, QUEUED, RUNNING, SUCCEEDED
    from engine.jobs.store import count_active, end_running, transition
    from engine.tenants.keys import ensure_tenant

    db = Database(db_url)
    db.migrate()
    with db.session() as s:
        tid = ensure_tenant(s, "acme").id
        other = ensure_tenant(s, "globex").id

    def submit(tenant: str, quota: int = 100) -> str:
        job = Job(
            id=new_id("job"), tenant_id=tenant, template="txt2img", template_version="1.0.0",
            status=QUEUED, params={}, inputs={}, graph={}, graph_hash="0" * 64, progress=0.0,
            outputs=[], attempts=0, cancel_requested=False, metering={}, runner="local",
            created_at=utcnow(),
        )  # fmt: skip
        return db.call(lifecycle.create, job, quota).id

    def kept() -> int:
        with db.engine.connect() as c:
            assert count_active(c) == {}  # every tenant's kept count equals its count
        with db.session() as s:
            from engine.db.tables import Tenant

            t = s.get(Tenant, tid)
            assert t is not None
            return t.active_jobs

    ids = [submit(tid) for _ in range(6)]
    submit(other)
    assert kept() == 6
    with db.session() as s:  # a queued job cancelled
        assert lifecycle.cancel(s, tid, ids[0])[1] == QUEUED
    assert kept() == 5
    with db.session() as s:  # claimed (still active), then finished
        job = lifecycle.claim(s, "w1", "local")
        assert job is not None and job.id == ids[1]
    assert kept() == 5
    with db.session() as s:
        assert end_running(s, ids[1], SUCCEEDED, finished_at=utcnow()) is not None
    assert kept() == 4
    with db.session() as s:  # re-queued after a fault: active all along
        assert lifecycle.claim(s, "w1", "local") is not None
        assert transition(s, ids[2], [RUNNING], QUEUED, worker_id=None)
    assert kept() == 4
    with db.session() as s:  # timed out in the queue, then a running one cancelled
        assert lifecycle.expire(s, ids[2], QUEUED, {"type": "timeout"}, utcnow())
        assert lifecycle.claim(s, "w1", "local") is not None
        assert lifecycle.cancel(s, tid, ids[3])[1] == RUNNING
    assert kept() == 2
    with db.session() as s:  # a lost race: the job already ended, nothing changes
        assert end_running(s, ids[3], FAILED, finished_at=utcnow()) is None
        assert not lifecycle.expire(s, ids[1], RUNNING, {"type": "timeout"}, utcnow())
    assert kept() == 2
    with pytest.raises(QuotaExceeded):  # a quota of 2 is full: refused, and counted out again
        submit(tid, quota=2)
    assert kept() == 2
    with db.session() as s:
        assert lifecycle.cancel(s, tid, ids[4])[1] == QUEUED
    assert kept() == 1
    submit(tid, quota=2)  # room again
    assert kept() == 2
    db.dispose()


def test_the_migration_counts_each_tenant_s_active_jobs(db_url: str) -> None:
    """0006 -> 0007 fills `tenants.active_jobs` from the jobs already stored."""
    from alembic import command
    from sqlalchemy import text

    from engine.db.database import Database, utcnow
    from engine.db.migrate import alembic_config
    from engine.db.tables import Tenant

    db = Database(db_url)
    cfg = alembic_config(db)
    command.upgrade(cfg, "0006")
    now = utcnow()
    with db.engine.begin() as conn:
        for tid in ("ten_1", "ten_2"):
            conn.execute(
                Tenant.__table__.insert().values(id=tid, name=tid, created_at=now, submit_seq=0)
            )
        for i, (tid, status) in enumerate(
            [("ten_1", "queued"), ("ten_1", "running"), ("ten_1", "succeeded"), ("ten_2", "failed")]
        ):
            conn.execute(
                Job.__table__.insert().values(
                    id=f"job_{i}",
                    tenant_id=tid,
                    template="txt2img",
                    template_version="1.0.0",
                    status=status,
                    params={},
                    inputs={},
                    graph={},
                    graph_hash="0" * 64,
                    progress=0.0,
                    outputs=[],
                    attempts=0,
                    cancel_requested=False,
                    created_at=now,
                    metering={},
                )  # fmt: skip
            )
    command.upgrade(cfg, "head")
    with db.engine.connect() as c:
        got = {r[0]: r[1] for r in c.execute(text("SELECT id, active_jobs FROM tenants"))}
    assert got == {"ten_1": 2, "ten_2": 0}
    command.downgrade(cfg, "0006")
    command.upgrade(cfg, "head")
    db.dispose()


def test_tenant_isolation(api: TestClient, new_key: Callable[[str], Headers]) -> None:
    a, b = new_key("acme"), new_key("globex")
    job = api.post("/v1/txt2img", json=TXT, headers=a).json()
    assert_problem(api.get(f"/v1/jobs/{job['id']}", headers=b), 404, "not_found")
    assert_problem(api.delete(f"/v1/jobs/{job['id']}", headers=b), 404, "not_found")
    assert api.get("/v1/jobs", headers=b).json()["data"] == []
    assert [j["id"] for j in api.get("/v1/jobs", headers=a).json()["data"]] == [job["id"]]
    # b's failed cancel changed nothing.
    assert api.get(f"/v1/jobs/{job['id']}", headers=a).json()["status"] == "queued"


def test_cancel_queued_job_and_cancel_is_idempotent(
    api: TestClient, new_key: Callable[[str], Headers]
) -> None:
    h = new_key("acme")
    job = api.post("/v1/txt2img", json=TXT, headers=h).json()
    r = api.delete(f"/v1/jobs/{job['id']}", headers=h)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert r.json()["finished_at"] is not None
    assert api.delete(f"/v1/jobs/{job['id']}", headers=h).json()["status"] == "cancelled"
    assert_problem(api.get("/v1/jobs/job_missing", headers=h), 404, "not_found")


def test_list_pagination_and_filters(api: TestClient, new_key: Callable[[str], Headers]) -> None:
    h = new_key("acme")
    ids = [
        api.post("/v1/txt2img", json={**TXT, "seed": i}, headers=h).json()["id"] for i in range(5)
    ]
    api.delete(f"/v1/jobs/{ids[0]}", headers=h)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, object] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = api.get("/v1/jobs", params=params, headers=h).json()
        seen += [j["id"] for j in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(ids))  # newest first, each once
    cancelled = api.get("/v1/jobs", params={"status": "cancelled"}, headers=h).json()["data"]
    assert [j["id"] for j in cancelled] == [ids[0]]
    assert api.get("/v1/jobs", params={"template": "upscale"}, headers=h).json()["data"] == []
    assert_problem(
        api.get("/v1/jobs", params={"status": "bogus"}, headers=h), 422, "validation_error"
    )
    assert_problem(api.get("/v1/jobs", params={"cursor": "!!"}, headers=h), 400, "invalid_request")


def test_templates_endpoints(api: TestClient, new_key: Callable[[str], Headers]) -> None:
    h = new_key("acme")
    data = api.get("/v1/templates", headers=h).json()["data"]
    by = {t["route"]: t for t in data}
    assert set(by) == {"/v1/txt2img", "/v1/img2img", "/v1/inpaint", "/v1/upscale", "/v2/upscale"}
    t = by["/v1/txt2img"]
    assert t["version"] == "1.1.0" and t["name"] == "txt2img" and t["gpu_class"] == "l4"
    assert t["params"]["properties"]["width"]["multipleOf"] == 8
    assert t["params"]["required"] == ["prompt"]
    assert by["/v1/upscale"]["params"]["properties"]["scale"]["maximum"] == 4
    one = api.get("/v1/templates/upscale", headers=h).json()  # the newest major
    assert one["route"] == "/v2/upscale" and one["version"] == "2.0.0"
    assert set(one["params"]["properties"]) == {"image", "output_format", "quality", "webhook_url"}
    assert_problem(api.get("/v1/templates/nope", headers=h), 404, "not_found")


def test_unknown_route_and_method_are_problems(api: TestClient) -> None:
    assert_problem(api.get("/v1/nothing"), 404, "not_found")
    assert_problem(api.put("/health"), 405, "method_not_allowed")


def test_committed_openapi_matches_served(api: TestClient) -> None:
    served = api.get("/openapi.json").json()
    committed = json.loads((ROOT / "openapi.json").read_text())
    assert served == committed, "openapi.json is stale: run `stencil openapi` and review the diff"


def test_openapi_is_sdk_ready(api: TestClient) -> None:
    doc = api.get("/openapi.json").json()
    ops = {op["operationId"] for path in doc["paths"].values() for op in path.values()}
    assert {
        "run_txt2img_v1",
        "run_upscale_v1",
        "get_job",
        "list_jobs",
        "cancel_job",
        "list_templates",
        "get_template",
        "health",
        "ready",
    } <= ops
    schemas = doc["components"]["schemas"]
    for name in ("Txt2imgV1Request", "UpscaleV1Request"):
        for fname, prop in schemas[name]["properties"].items():
            assert prop.get("description"), f"{name}.{fname} has no description"
            assert prop.get("examples"), f"{name}.{fname} has no example"
    for name in ("Job", "Output", "Timings", "JobList", "TemplateInfo"):
        for fname, prop in schemas[name]["properties"].items():
            assert prop.get("description"), f"{name}.{fname} has no description"
    body = doc["paths"]["/v1/upscale"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}


def test_apps_in_one_process_serve_first_requests_concurrently(
    make_settings: Callable[..., object],
) -> None:
    """Route analysis happens when an app is built, not racing on its first requests."""
    import threading
    from contextlib import ExitStack

    from api.app import create_app

    with ExitStack() as stack:
        clients = [
            stack.enter_context(
                TestClient(create_app(make_settings(), start_engine=False))  # type: ignore[arg-type]
            )
            for _ in range(4)
        ]
        barrier = threading.Barrier(len(clients))
        codes: list[int] = []

        def first_request(c: TestClient) -> None:
            barrier.wait()
            codes.append(c.get("/v1/jobs", params={"cursor": "x"}).status_code)

        threads = [threading.Thread(target=first_request, args=(c,)) for c in clients]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    assert codes == [401] * len(clients)


def test_what_startup_built_is_left_out_of_collections_while_the_app_serves(
    make_settings: Callable[..., Any],
) -> None:
    """Once the app has started, the objects it was built from are frozen out of the
    collector's full passes (each would stop the event loop for tens of milliseconds); when
    it stops, they are collectable again."""
    import gc

    from api.app import create_app

    app = create_app(make_settings(), start_engine=False)
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
        assert gc.get_freeze_count() > 10_000
    assert gc.get_freeze_count() == 0
