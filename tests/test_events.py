"""Jobs pushed, not polled: every committed change reaches its waiters (a long poll, an event
stream, the key cache) in this process at once and from other processes through PostgreSQL
LISTEN/NOTIFY (or the periodic check on SQLite), and the request path's database round trips
are counted so a regression shows."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, text

from api.app import create_app
from api.settings import Settings
from engine.db.database import Database
from engine.tenants.keys import create_key
from tests.test_stream import read_stream

ROOT = Path(__file__).resolve().parents[1]
TXT = {"prompt": "a red cube", "width": 64, "height": 64, "steps": 2}
Headers = dict[str, str]


def _key(client: TestClient, tenant: str = "acme") -> Headers:
    with client.app.state.services.db.session() as s:  # type: ignore[attr-defined]
        token, _ = create_key(s, tenant)
    return {"Authorization": f"Bearer {token}"}


def _other_process(db_url: str, code: str) -> None:
    """Run `code` in a separate Python process with `db` (a Database on `db_url`) in scope."""
    prog = (
        "from engine.db.database import Database, utcnow\n"
        "from engine.jobs.store import transition\n"
        "from engine.tenants.keys import revoke_key\n"
        f"db = Database({db_url!r})\n"
        "with db.session() as s:\n" + "".join(f"    {line}\n" for line in code.splitlines())
    )
    subprocess.run([sys.executable, "-c", prog], cwd=ROOT, check=True, timeout=60)


@pytest.fixture
def app_no_net(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    """An API-only app whose periodic check is off: only notifications can wake a waiter."""
    app = create_app(make_settings(webhook_dispatch=False), start_engine=False)
    services = app.state.services
    if not services.db.is_sqlite:
        services.db.events.check_interval_s = 3600.0
    with TestClient(app) as client:
        yield client


def _in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    th = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    th.start()
    return th, out


def test_a_long_poll_answers_when_another_process_finishes_the_job(
    app_no_net: TestClient, db_url: str
) -> None:
    api = app_no_net
    h = _key(api)
    job = api.post("/v1/txt2img", json=TXT, headers=h).json()
    th, out = _in_thread(lambda: api.get(f"/v1/jobs/{job['id']}?wait=50", headers=h))
    time.sleep(0.5)  # the long poll is waiting
    assert th.is_alive()
    _other_process(
        db_url,
        f"transition(s, {job['id']!r}, ['queued'], 'cancelled', finished_at=utcnow())",
    )
    th.join(40)  # far below the 50 s wait, and far above a notification's delay
    assert not th.is_alive(), "the long poll did not hear of the change"
    assert out[0].status_code == 200 and out[0].json()["status"] == "cancelled"


def test_an_event_stream_hears_another_process_move_the_job(
    app_no_net: TestClient, db_url: str
) -> None:
    api = app_no_net
    h = _key(api)
    job = api.post("/v1/txt2img", json=TXT, headers=h).json()
    th, out = _in_thread(lambda: read_stream(api, f"/v1/jobs/{job['id']}/events", h))
    time.sleep(0.5)
    _other_process(
        db_url,
        f"transition(s, {job['id']!r}, ['queued'], 'running', started_at=utcnow(), attempts=1)",
    )
    time.sleep(0.3)
    _other_process(
        db_url,
        f"transition(s, {job['id']!r}, ['running'], 'failed', finished_at=utcnow())",
    )
    th.join(40)
    assert not th.is_alive(), "the stream did not hear of the changes"
    names = [name for name, _, _ in out[0]]
    assert names[0] == "job.queued" and names[-1] == "job.failed"
    if not db_url.startswith("sqlite"):
        # Every change is notified; on SQLite the once-a-second check may see only the last.
        assert "job.running" in names
    ids = [ident for _, ident, _ in out[0]]
    assert ids == sorted(set(ids))


def test_postgres_changes_arrive_by_notification(app_no_net: TestClient, db_url: str) -> None:
    if db_url.startswith("sqlite"):
        pytest.skip("SQLite has no cross-process channel; its periodic check is tested above")
    services = app_no_net.app.state.services  # type: ignore[attr-defined]
    assert services.db.events.transport == "postgres"
    assert services.db.events.listening
    h = _key(app_no_net)
    job = app_no_net.post("/v1/txt2img", json=TXT, headers=h).json()
    with services.db.session() as s:
        s.execute(text("SELECT 1"))
    before = services.db.events.delivered
    _other_process(
        db_url, f"transition(s, {job['id']!r}, ['queued'], 'cancelled', finished_at=utcnow())"
    )
    deadline = time.monotonic() + 20
    while services.db.events.delivered == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert services.db.events.delivered > before


def test_wait_answers_with_the_current_state_when_nothing_happens(
    api: TestClient, new_key: Callable[[str], Headers]
) -> None:
    h = new_key("acme")
    job = api.post("/v1/txt2img", json=TXT, headers=h).json()
    r = api.get(f"/v1/jobs/{job['id']}?wait=1", headers=h)
    assert r.status_code == 200 and r.json()["status"] == "queued"
    done = api.delete(f"/v1/jobs/{job['id']}", headers=h).json()
    assert done["status"] == "cancelled"
    # A terminal job answers at once, whatever the wait.
    assert api.get(f"/v1/jobs/{job['id']}?wait=60", headers=h).json()["status"] == "cancelled"


@pytest.mark.parametrize("wait", ["61", "-1", "x", "1.5"])
def test_wait_out_of_range_is_a_422_naming_it(
    api: TestClient, new_key: Callable[[str], Headers], wait: str
) -> None:
    h = new_key("acme")
    job = api.post("/v1/txt2img", json=TXT, headers=h).json()
    r = api.get(f"/v1/jobs/{job['id']}?wait={wait}", headers=h)
    assert r.status_code == 422
    assert any(e["field"] == "wait" for e in r.json()["errors"])


def test_wait_never_shows_another_tenants_job(
    api: TestClient, new_key: Callable[[str], Headers]
) -> None:
    job = api.post("/v1/txt2img", json=TXT, headers=new_key("acme")).json()
    r = api.get(f"/v1/jobs/{job['id']}?wait=1", headers=new_key("globex"))
    assert r.status_code == 404


def test_a_finished_stream_tells_eventsource_to_stop_and_hints_its_retry(
    api: TestClient, new_key: Callable[[str], Headers]
) -> None:
    h = new_key("acme")
    job = api.post("/v1/txt2img", json=TXT, headers=h).json()
    api.delete(f"/v1/jobs/{job['id']}", headers=h)
    with api.stream("GET", f"/v1/jobs/{job['id']}/events", headers=h) as r:
        lines = list(r.iter_lines())
    assert "retry: 2000" in lines
    last_id = next(int(x.split(":", 1)[1]) for x in lines if x.startswith("id:"))
    # EventSource reconnects with the last id it saw: 204 ends it for good.
    r = api.get(f"/v1/jobs/{job['id']}/events", headers={**h, "Last-Event-ID": str(last_id)})
    assert r.status_code == 204 and r.content == b""
    # An older id still replays the terminal state once.
    again = read_stream(api, f"/v1/jobs/{job['id']}/events", {**h, "Last-Event-ID": "0"})
    assert [name for name, _, _ in again] == ["job.cancelled"]


def test_the_signed_events_url_needs_no_authorization_and_opens_only_its_job(
    api: TestClient, new_key: Callable[[str], Headers]
) -> None:
    h = new_key("acme")
    job = api.post("/v1/txt2img", json=TXT, headers=h).json()
    other = api.post("/v1/txt2img", json=TXT, headers=h).json()
    api.delete(f"/v1/jobs/{job['id']}", headers=h)
    url = job["events_url"]
    assert url.startswith("http://testserver/v1/jobs/") and "token=" in url
    path = url.removeprefix("http://testserver")
    events = read_stream(api, path, {})
    assert [name for name, _, _ in events] == ["job.cancelled"]
    token = path.split("token=", 1)[1]
    # The token opens its own job only, and a changed one opens nothing.
    assert api.get(f"/v1/jobs/{other['id']}/events?token={token}").status_code == 401
    bad = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert api.get(f"/v1/jobs/{job['id']}/events?token={bad}").status_code == 401
    # It is not an API key: other routes refuse it.
    assert api.get(f"/v1/jobs/{job['id']}?token={token}").status_code in (401, 422)


def test_an_expired_events_url_is_refused(
    make_settings: Callable[..., Settings],
) -> None:
    from engine.jobs.lifecycle import stream_token

    app = create_app(make_settings(), start_engine=False)
    with TestClient(app) as api:
        h = _key(api)
        job = api.post("/v1/txt2img", json=TXT, headers=h).json()
        secret = app.state.services.settings.signing_secret()
        old = stream_token(secret, job["id"], "x", "tenant", int(time.time()) - 1)
        assert api.get(f"/v1/jobs/{job['id']}/events?token={old}").status_code == 401


def test_a_revoked_key_stops_working_in_another_process_within_a_second_or_so(
    make_settings: Callable[..., Settings], db_url: str
) -> None:
    app = create_app(make_settings(), start_engine=False)
    with TestClient(app) as api:
        with app.state.services.db.session() as s:
            token, key = create_key(s, "acme")
        h = {"Authorization": f"Bearer {token}"}
        assert api.get("/v1/jobs", headers=h).status_code == 200  # now cached
        lookups = app.state.services.keys.lookups
        assert api.get("/v1/jobs", headers=h).status_code == 200
        assert app.state.services.keys.lookups == lookups  # served from the cache
        _other_process(db_url, f"revoke_key(s, {key.id!r})")
        deadline = time.monotonic() + 10  # the check runs every second on SQLite
        while api.get("/v1/jobs", headers=h).status_code == 200:
            assert time.monotonic() < deadline, "the revocation never reached this process"
            time.sleep(0.1)
        assert api.get("/v1/jobs", headers=h).status_code == 401


@contextmanager
def count_statements(db: Database, *, whole: bool = False) -> Iterator[list[str]]:
    """Every SQL statement `db` sends while the block runs (transaction control included):
    its first word, or (`whole`) all of it."""
    seen: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        verb = statement.split(None, 1)[0].upper()
        if verb != "BEGIN":  # SQLite's own BEGIN is the `begin` event below
            seen.append(" ".join(statement.split()) if whole else verb)

    def begin(conn: Any) -> None:
        seen.append("BEGIN")

    event.listen(db.engine, "before_cursor_execute", before)
    event.listen(db.engine, "begin", begin)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", before)
        event.remove(db.engine, "begin", begin)


def test_database_round_trips_of_the_hot_routes(
    api: TestClient, new_key: Callable[[str], Headers]
) -> None:
    """GET a job: one SELECT (the key comes from the cache, rate limits from memory). POST an
    upscale: the admission read and the insert transaction, nothing per request besides."""
    db: Database = api.app.state.services.db  # type: ignore[attr-defined]
    h = new_key("acme")
    from tests.test_api import data_url, png

    body = {"image": data_url(png(32, 32)), "scale": 2}
    job = api.post("/v1/upscale", json=body, headers=h).json()  # warms the key cache
    with count_statements(db) as get_sql:
        assert api.get(f"/v1/jobs/{job['id']}", headers=h).status_code == 200
    assert get_sql.count("SELECT") == 1, get_sql
    assert not {"INSERT", "UPDATE", "DELETE"} & set(get_sql), get_sql
    with count_statements(db, whole=True) as post_sql:
        assert api.post("/v1/upscale", json=body, headers=h).status_code == 202
    verbs = [x.split()[0] for x in post_sql]
    # The admission read (one statement, no transaction; the idempotency replay check is
    # skipped without a key), then the write: the tenant's row (its lock and its count of
    # active jobs) and the job row; nothing for the rate limit or the key.
    if db.is_sqlite:
        # A prepared transaction on SQLite's own handle (the engine's `begin` event does not
        # see its BEGIN).
        assert verbs == ["SELECT", "UPDATE", "INSERT"], post_sql
    else:
        # One statement, its own transaction, with the NOTIFY of the new job inside it.
        assert verbs == ["SELECT", "WITH"], post_sql
        write = post_sql[1]
        assert write.startswith("WITH counted AS (UPDATE tenants SET"), write
        assert "stored AS (INSERT INTO jobs" in write and "pg_notify(" in write, write

    # An event stream: one read of the job to start, one per change (here a cancel), none
    # on a timer; its watch is gone once it ends.
    queued = api.post("/v1/upscale", json=body, headers=h).json()
    with count_statements(db, whole=True) as stream_sql:
        th, out = _in_thread(lambda: read_stream(api, f"/v1/jobs/{queued['id']}/events", h))
        deadline = time.monotonic() + 10
        while queued["id"] not in db.events.watched_jobs() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)  # the stream has read the job and waits
        assert api.delete(f"/v1/jobs/{queued['id']}", headers=h).status_code == 200
        th.join(10)
    assert [name for name, _, _ in out[0]] == ["job.queued", "job.cancelled"]
    views = [q for q in stream_sql if q.startswith("SELECT jobs.id, jobs.tenant_id, ")]
    assert len([q for q in views if "jobs.graph," not in q]) == 2, stream_sql
    assert queued["id"] not in db.events.watched_jobs()


def test_a_claim_takes_the_job_from_its_own_update_and_progress_is_one_statement(
    api: TestClient, new_key: Callable[[str], Headers]
) -> None:
    """The worker's claim: the oldest queued job's id, then the compare-and-set `UPDATE`, whose
    `RETURNING` is the whole job (rendered graph included), equal to what the store holds; no
    read of the job after it. A progress write is one `UPDATE`, and none lands once the job has
    left `running`."""
    from sqlalchemy import inspect as sa_inspect

    from engine.db.tables import Job
    from engine.jobs import lifecycle
    from tests.test_api import data_url, png

    db: Database = api.app.state.services.db  # type: ignore[attr-defined]
    h = new_key("acme")
    job_id = api.post(
        "/v1/upscale", json={"image": data_url(png(32, 32)), "scale": 2}, headers=h
    ).json()["id"]
    with db.session() as s:
        queued = s.get(Job, job_id)
        assert queued is not None
        runner = queued.runner or "local"
    with count_statements(db, whole=True) as claim_sql, db.session() as s:
        claimed = lifecycle.claim(s, "w1", runner)
    # On PostgreSQL the change goes out with the commit (`pg_notify`), as for every write.
    notified = [q for q in claim_sql if q.startswith("SELECT pg_notify(")]
    assert len(notified) == (0 if db.is_sqlite else 1), claim_sql
    verbs = [q.split()[0] for q in claim_sql if q not in notified]
    assert verbs == ["BEGIN", "SELECT", "UPDATE"], claim_sql
    assert claimed is not None and claimed.id == job_id
    assert sa_inspect(claimed).transient  # built from the row, held by no session
    with db.session() as s:
        stored = s.get(Job, job_id)
        assert stored is not None
        for col in Job.__table__.columns:
            assert getattr(claimed, col.key) == getattr(stored, col.key), col.key
    assert claimed.status == "running" and claimed.attempts == 1 and claimed.graph

    with count_statements(db, whole=True) as progress_sql, db.session() as s:
        assert lifecycle.set_running(s, job_id, progress=0.5)
    writes = [q.split()[0] for q in progress_sql if not q.startswith("SELECT pg_notify(")]
    assert writes == ["BEGIN", "UPDATE"], progress_sql
    assert api.delete(f"/v1/jobs/{job_id}", headers=h).status_code == 200
    with db.session() as s:
        assert not lifecycle.set_running(s, job_id, progress=0.75)
    with db.session() as s:
        ended = s.get(Job, job_id)
        assert ended is not None and ended.status == "cancelled" and ended.progress == 0.5


def test_json_columns_keep_every_value_both_ways_of_reading(
    api: TestClient, new_key: Callable[[str], Headers]
) -> None:
    """JSON columns are written and read by pydantic-core: what is stored reads back equal
    through the ORM, through SQLAlchemy Core and through the hot reads' own way (`read_view`),
    text beyond ASCII, integers past 64 bits and floats included, and as `json` would write it
    (the text parses to the same value)."""
    import asyncio

    from sqlalchemy import select, update

    from engine.db.tables import Job
    from engine.jobs.store import read_view
    from tests.test_api import data_url, png

    db: Database = api.app.state.services.db  # type: ignore[attr-defined]
    h = new_key("acme")
    job = api.post("/v1/upscale", json={"image": data_url(png(32, 32)), "scale": 2}, headers=h)
    job_id = job.json()["id"]
    value = {
        "text": 'caf\u00e9 \u2603 \U0001f600 "quoted" \\ /',
        "big": 2**70,
        "negative": -(2**63) - 1,
        "float": 0.1,
        "tiny": 5e-324,
        "huge": 1e300,
        "nested": [1, {"a": None, "b": [True, False]}, []],
        "empty": {},
    }
    with db.session() as s:
        s.execute(update(Job).where(Job.id == job_id).values(metering=value))
        tenant_id = s.scalar(select(Job.tenant_id).where(Job.id == job_id))
    with db.session() as s:
        assert s.get(Job, job_id).metering == value  # type: ignore[union-attr]
    with db.engine.connect() as c:
        assert c.scalar(select(Job.metering).where(Job.id == job_id)) == value
        text_form = c.execute(text("SELECT metering FROM jobs WHERE id = :i"), {"i": job_id})
        raw = text_form.scalar()
    assert (json.loads(raw) if isinstance(raw, str) else raw) == value

    async def hot() -> Any:
        try:
            return (await read_view(db, tenant_id, job_id)).metering
        finally:
            await db.aclose()

    assert asyncio.run(hot()) == value


def _comparable(body: dict[str, Any]) -> dict[str, Any]:
    """A job's view without what is signed anew on every read."""
    return {k: v for k, v in body.items() if k not in ("events_url", "outputs")}


@pytest.fixture
def solved(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The path of every request FastAPI's dependency solver is run for."""
    import fastapi.routing

    paths: list[str] = []
    real = fastapi.routing.solve_dependencies

    async def counting(*args: Any, **kw: Any) -> Any:
        paths.append(kw["request"].url.path)
        return await real(*args, **kw)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counting)
    return paths


def test_the_plain_read_skips_the_dependency_solver_and_answers_as_the_full_route(
    api: TestClient, new_key: Callable[[str], Headers], solved: list[str]
) -> None:
    """`GET /v1/jobs/{id}` with no query string, or only `wait=N` within its bounds, takes the
    route's fast path; anything else (`wait` written otherwise, out of bounds or not a
    number, a malformed id) goes through FastAPI's full handler. Both give the same answers
    and the same errors."""
    h, other = new_key("acme"), new_key("globex")
    job = api.post("/v1/txt2img", json=TXT, headers=h).json()
    solved.clear()
    fast = api.get(f"/v1/jobs/{job['id']}", headers=h)
    fast_wait = api.get(f"/v1/jobs/{job['id']}?wait=0", headers=h)
    assert solved == [], "the plain read went through the dependency solver"
    full = api.get(f"/v1/jobs/{job['id']}?wait=00", headers=h)
    assert solved, "a read with a query string of another form should take the full route"
    assert _comparable(fast_wait.json()) == _comparable(full.json())
    for query, field in (
        ("wait=61", "wait"),
        ("wait=ab", "wait"),
        ("wait=-1", "wait"),
        ("x=1", "x"),
    ):
        solved.clear()
        refused = api.get(f"/v1/jobs/{job['id']}?{query}", headers=h)
        assert solved and refused.status_code == 422, query
        assert [e["field"] for e in refused.json()["errors"]] == [field]
    assert fast.status_code == full.status_code == 200
    assert _comparable(fast.json()) == _comparable(full.json())
    assert fast.headers["content-type"] == full.headers["content-type"]
    assert fast.headers["ratelimit-limit"] == full.headers["ratelimit-limit"]
    # The same refusals either way: another tenant's job, a missing key, an unknown key.
    for headers, status in ((other, 404), ({}, 401), ({"Authorization": "Bearer sk_nope"}, 401)):
        a = api.get(f"/v1/jobs/{job['id']}", headers=headers)
        b = api.get(f"/v1/jobs/{job['id']}?wait=00", headers=headers)
        assert a.status_code == b.status_code == status
        assert a.json() == b.json()
        assert a.headers.get("www-authenticate") == b.headers.get("www-authenticate")
    # An id the declaration refuses is refused by the full route, field named.
    solved.clear()
    bad = api.get("/v1/jobs/job_x%0A", headers=h)
    assert solved and bad.status_code == 422
    assert [e["field"] for e in bad.json()["errors"]] == ["job_id"]


def test_a_signed_download_skips_the_dependency_solver_and_answers_as_the_full_route(
    api: TestClient, solved: list[str]
) -> None:
    """`GET /v1/files/{key}` by the URL as it was signed takes the route's fast path; the same
    link written otherwise (parameters in another order) goes the full way with the same
    answer, and so does every refusal: a bad signature, an expired link, a missing file, a
    parameter out of bounds (422, field named)."""
    storage = api.app.state.services.storage  # type: ignore[attr-defined]
    storage.put("jobs/job_x/0.png", b"\x89PNG-bytes", "image/png")
    url, expires = storage.url("jobs/job_x/0.png", 60)
    sig = url.split("signature=")[1]
    solved.clear()
    fast = api.get(url)
    assert solved == [] and fast.status_code == 200 and fast.content == b"\x89PNG-bytes"
    full = api.get(f"/v1/files/jobs/job_x/0.png?signature={sig}&expires={expires}")
    assert solved and full.status_code == 200
    assert (fast.content, fast.headers["content-type"], fast.headers["cache-control"]) == (
        full.content, full.headers["content-type"], full.headers["cache-control"]
    )  # fmt: skip
    gone_url, _ = storage.url("jobs/job_x/1.png", 60)
    bad = "0" * 64
    for link, status in (
        (f"/v1/files/jobs/job_x/0.png?expires={expires}&signature={bad}", 404),
        (
            f"/v1/files/jobs/job_x/0.png?expires=1&signature={storage.sign('jobs/job_x/0.png', 1)}",
            404,
        ),
        (gone_url, 404),
    ):
        solved.clear()
        r = api.get(link)
        assert solved == [] and r.status_code == status, link
        back = link.split("?")[0] + "?" + "&".join(reversed(link.split("?")[1].split("&")))
        assert api.get(back).json() == r.json()
    solved.clear()
    over = api.get(f"/v1/files/jobs/job_x/0.png?expires={2**40 + 1}&signature={sig}")
    assert solved and over.status_code == 422
    assert [e["field"] for e in over.json()["errors"]] == ["expires"]


def test_a_plain_submit_skips_the_dependency_solver_and_answers_as_the_full_route(
    api: TestClient, new_key: Callable[[str], Headers], solved: list[str]
) -> None:
    """A template POST without a query string or an `Idempotency-Key` takes the fast path; one
    with a key (whose format the declaration checks) or a query string goes the full way."""
    h = new_key("acme")
    seeded = {**TXT, "seed": 7}
    fast = api.post("/v1/txt2img", json=seeded, headers=h)
    assert solved == [] and fast.status_code == 202
    full = api.post("/v1/txt2img", json=seeded, headers={**h, "Idempotency-Key": "k-1"})
    assert solved and full.status_code == 202
    a, b = fast.json(), full.json()
    assert fast.headers["location"] == f"/v1/jobs/{a['id']}"
    assert full.headers["location"] == f"/v1/jobs/{b['id']}"
    same = ("status", "template", "template_version", "params", "graph_hash", "inputs")
    assert {k: a[k] for k in same} == {k: b[k] for k in same}
    # The refusals of the full route: a malformed key, an unknown query parameter, no key.
    bad_key = api.post("/v1/txt2img", json=TXT, headers={**h, "Idempotency-Key": "a b"})
    assert bad_key.status_code == 422
    assert [e["field"] for e in bad_key.json()["errors"]] == ["Idempotency-Key"]
    unknown = api.post("/v1/txt2img?stepz=3", json=TXT, headers=h)
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "stepz"
    assert api.post("/v1/txt2img", json=TXT).status_code == 401
    # Bad params are refused on the fast path too, field named (the body is `submit`'s).
    solved.clear()
    worse = api.post("/v1/txt2img", json={**TXT, "steps": 0}, headers=h)
    assert solved == [] and worse.status_code == 422
    assert [e["field"] for e in worse.json()["errors"]] == ["steps"]


def test_a_connection_the_server_dropped_is_replaced_without_an_error(
    api: TestClient, new_key: Callable[[str], Headers], db_url: str
) -> None:
    if db_url.startswith("sqlite"):
        pytest.skip("SQLite connections are files; nothing drops them")
    h = new_key("acme")
    job = api.post("/v1/txt2img", json=TXT, headers=h).json()
    db: Database = api.app.state.services.db  # type: ignore[attr-defined]
    name = db.engine.url.database
    killer = Database(db_url.rsplit("/", 1)[0] + "/test")
    with killer.engine.connect() as c:
        c.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :n AND pid <> pg_backend_pid() AND query NOT ILIKE '%LISTEN%'"
            ),
            {"n": name},
        )
        c.commit()
    killer.dispose()
    for i in range(3):  # every pooled connection is dead; each submit still goes through
        r = api.post("/v1/txt2img", json={**TXT, "seed": i}, headers=h)
        assert r.status_code == 202, r.text
    for _ in range(3):  # and each read still answers
        r = api.get(f"/v1/jobs/{job['id']}", headers=h)
        assert r.status_code == 200, r.text
    assert json.loads(r.text)["id"] == job["id"]


@pytest.mark.parametrize(
    "base",
    [
        "http://127.0.0.1:8000/",
        "http://testserver/",
        "https://api.example.com/stencil/",
        "https://api.example.com/stencil",
        "https://api.example.com:8443",
    ],
)
@pytest.mark.parametrize(
    "path",
    [
        "/v1/jobs/job_1/events?token=a.b",
        "/files/outputs/a%20b.png?expires=1&signature=ff",
        "/files/outputs/./x.png?expires=1",
        "//other.example/x",
        "https://bucket.example/outputs/a.png?X-Amz-Signature=1",
    ],
)
def test_signed_urls_join_their_base_as_urljoin_does(base: str, path: str) -> None:
    from urllib.parse import urljoin

    from api.routes.jobs import _absolute

    assert _absolute(base, path) == urljoin(base, path)


def test_the_one_row_read_gives_what_sqlalchemy_gives_and_is_counted(
    api: TestClient, new_key: Callable[[str], Headers]
) -> None:
    """`OneRow` (the job view's read: the raw sqlite3 handle on SQLite) returns the values
    SQLAlchemy's own execution returns, column for column, shows its statement to the
    engine's listeners, and raises driver errors as SQLAlchemy's."""
    from sqlalchemy.exc import DBAPIError

    from engine.db.database import OneRow
    from engine.jobs.store import _VIEW, _VIEW_ROW

    db: Database = api.app.state.services.db  # type: ignore[attr-defined]
    h = new_key("acme")
    job = api.post("/v1/txt2img", json=TXT, headers=h).json()
    api.delete(f"/v1/jobs/{job['id']}", headers=h)  # terminal: finished_at, error-free
    tenant = db.call_fetch(
        lambda c: c.execute(
            text("SELECT tenant_id FROM jobs WHERE id = :i"), {"i": job["id"]}
        ).scalar()
    )
    params = {"job_id": job["id"], "tenant_id": tenant}
    with db._fetch_engine.connect() as c:
        expected = c.execute(_VIEW, params).first()
        with count_statements(db) as seen:
            got = _VIEW_ROW(c, params)
        assert seen == ["SELECT"]
        assert got is not None and expected is not None
        assert tuple(got) == tuple(expected)
        assert got.created_at == expected.created_at and got.created_at.tzinfo is not None
        assert got.params == job["params"] and got.status == "cancelled"
        assert _VIEW_ROW(c, {**params, "tenant_id": "ten_other"}) is None
        broken = OneRow(_VIEW.where(text("no_such_column = 1")))
        with pytest.raises(DBAPIError):
            broken(c, params)
        # A value fixed in the statement is sent with the caller's; an expanding IN is refused.
        jobs = _VIEW.selected_columns
        fixed = OneRow(_VIEW.where(jobs.status == "cancelled"))
        assert tuple(fixed(c, params)) == tuple(expected)
        assert OneRow(_VIEW.where(jobs.status == "queued"))(c, params) is None
        with pytest.raises(TypeError):
            OneRow(_VIEW.where(jobs.status.in_(["queued", "running"])))

    # From async code (`Database.one`: psycopg's async connection on PostgreSQL), the same.
    async def from_async() -> tuple[Any, Any, list[str]]:
        other = Database(db.url)
        try:
            with count_statements(other) as seen:
                got = await other.one(_VIEW_ROW, params)
            missing = await other.one(_VIEW_ROW, {**params, "tenant_id": "ten_other"})
            with pytest.raises(DBAPIError):
                await other.one(OneRow(_VIEW.where(text("no_such_column = 1"))), params)
            return got, missing, seen
        finally:
            await other.aclose()

    import asyncio

    got, missing, seen = asyncio.run(from_async())
    assert tuple(got) == tuple(expected) and missing is None
    assert got.created_at == expected.created_at and got.outputs == expected.outputs
    assert seen == ["SELECT"]


def test_concurrent_job_reads_share_statements_and_stay_within_their_tenant(
    api: TestClient, new_key: Callable[[str], Headers]
) -> None:
    """`read_view` (the GET, the long poll, the event stream): on PostgreSQL, reads that come
    while two statements run are answered by one more statement, each reader its own job,
    once, with another tenant's job a 404 as when read alone. A failed or cancelled read
    leaves the rest standing. On SQLite every read is its own statement."""
    import asyncio

    from engine.db.database import _AsyncReads
    from engine.errors import NotFound
    from engine.jobs.store import read_view

    db: Database = api.app.state.services.db  # type: ignore[attr-defined]
    acme, other = new_key("acme"), new_key("other")
    mine = []
    for i in range(6):
        mine.append(api.post("/v1/txt2img", json=TXT, headers=acme).json()["id"])
        if i < 3:  # within the active-job quota
            api.delete(f"/v1/jobs/{mine[-1]}", headers=acme)
    theirs = api.post("/v1/txt2img", json=TXT, headers=other).json()["id"]
    tenant_of = dict(
        db.call_fetch(lambda c: list(c.execute(text("SELECT id, tenant_id FROM jobs"))))
    )
    acme_tenant = tenant_of[mine[0]]
    # Each of acme's jobs twice, another tenant's job, and a missing one: 15 readers at once.
    asks = [*mine, *mine, theirs, "job_missing", mine[1]]

    async def read(job_id: str) -> Any:
        try:
            return await read_view(reader, acme_tenant, job_id)
        except NotFound:
            return None

    async def closing(work: Callable[[], Any]) -> Any:
        # The reader's async connections belong to this loop: closed in it.
        try:
            return await work()
        finally:
            await reader.aclose()

    async def run() -> tuple[list[Any], list[str]]:
        with count_statements(reader, whole=True) as seen:
            got = await asyncio.gather(*(read(j) for j in asks))
        return got, seen

    reader = Database(db.url)
    got, seen = asyncio.run(closing(run))
    assert [None if g is None else g.id for g in got] == [
        *mine, *mine, None, None, mine[1]
    ]  # fmt: skip
    assert [g.status for g in got[:6]] == ["cancelled"] * 3 + ["queued"] * 3
    if db.is_sqlite:
        assert len(seen) == len(asks)
        return
    # Two reads run alone; the other 13 wait and share the third statement, which asks for
    # each of their 7 jobs once (their ids in one array).
    assert len(seen) == 3, seen
    assert sum("= any(" in q for q in seen) == 1

    # A statement that fails fails each reader waiting on it, and nothing else; a reader
    # that gives up does not take the others' answers with it.
    async def faults() -> tuple[list[Any], Any]:
        real = _AsyncReads.all
        calls = 0

        async def failing_once(self: _AsyncReads, stmt: Any, params: dict[str, Any]) -> Any:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("injected")
            return await real(self, stmt, params)

        _AsyncReads.all = failing_once  # type: ignore[method-assign]
        try:
            first = await asyncio.gather(*(read(j) for j in mine), return_exceptions=True)
            tasks = [asyncio.create_task(read(j)) for j in mine]
            await asyncio.sleep(0)
            tasks[3].cancel()
            second = await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            _AsyncReads.all = real  # type: ignore[method-assign]
        return first, second

    reader = Database(db.url)
    first, second = asyncio.run(closing(faults))
    assert [getattr(r, "id", None) for r in first[:2]] == mine[:2]
    assert all(isinstance(r, RuntimeError) for r in first[2:])
    assert isinstance(second[3], asyncio.CancelledError)
    answered = [r.id for i, r in enumerate(second) if i != 3]
    assert answered == [j for i, j in enumerate(mine) if i != 3]


def test_concurrent_admission_reads_share_statements_tenant_by_tenant(
    api: TestClient, new_key: Callable[[str], Headers]
) -> None:
    """The submit's admission read (quota, kept count of active jobs, whether a budget is set)
    shares statements as the job view's does: concurrent submits of several tenants, one of
    them budgeted and one with a quota of its own, each get their own tenant's row, the same
    row a lone read gives."""
    import asyncio

    from engine.db.database import utcnow
    from engine.db.tables import Tenant, TenantBudget
    from engine.jobs.lifecycle import _ADMISSION

    db: Database = api.app.state.services.db  # type: ignore[attr-defined]
    names = ["plain", "budgeted", "quota"]
    for n in names:
        new_key(n)
        api.post("/v1/txt2img", json=TXT, headers=new_key(n))
    with db.session() as s:
        ids = {t.name: t.id for t in s.query(Tenant)}
        s.add(TenantBudget(tenant_id=ids["budgeted"], monthly_usd_micros=5, updated_at=utcnow()))
        s.get(Tenant, ids["quota"]).active_job_quota = 9  # type: ignore[union-attr]
    asks = [ids[n] for n in names * 4] + ["ten_missing"]

    async def run() -> tuple[list[Any], list[Any], list[str]]:
        reader = Database(db.url)
        try:
            alone = [await reader.shared(_ADMISSION, t) for t in asks]
            with count_statements(reader) as seen:
                together = await asyncio.gather(*(reader.shared(_ADMISSION, t) for t in asks))
            return alone, list(together), seen
        finally:
            await reader.aclose()

    alone, together, seen = asyncio.run(run())
    assert [tuple(r) if r else None for r in together] == [tuple(r) if r else None for r in alone]
    shown = {r.id: (r.active_job_quota, r.active_jobs, r.budgeted) for r in alone if r}
    assert shown == {
        ids["plain"]: (None, 1, False),
        ids["budgeted"]: (None, 1, True),
        ids["quota"]: (9, 1, False),
    }
    assert alone[-1] is None
    assert len(seen) == (len(asks) if db.is_sqlite else 3)


def test_a_short_write_runs_on_the_loop_unless_another_writer_holds_sqlite(tmp_path: Path) -> None:
    """`Database.write` on SQLite: inline on the event loop when the write lock is free at
    once; on a worker thread, waiting its turn there, when this process's writer or another
    process's holds it, with the event loop free meanwhile. What it commits is announced as
    a transaction on a thread announces it."""
    import asyncio
    import sqlite3
    import threading

    from engine.jobs.events import JOB, Change, record

    db = Database(f"sqlite:///{tmp_path / 'w.db'}")
    db.migrate()

    def tx(s: Any, key: str) -> int:
        record(s, Change(JOB, key, "queued"))
        s.execute(text("CREATE TABLE IF NOT EXISTS t (k TEXT)"))
        s.execute(text("INSERT INTO t VALUES (:k)"), {"k": key})
        return threading.get_ident()

    async def scenario() -> tuple[int, int, int, int, list[str], int]:
        loop_thread = threading.get_ident()
        with db.events.watch(JOB) as w:
            inline = await db.write(tx, "a")
            await asyncio.wait_for(w.wait(1), 1)
            announced = [c.id for c in w.drain()]
        # Another process's writer (a second connection holding SQLite's write lock).
        other = sqlite3.connect(str(tmp_path / "w.db"), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.create_task(tick())
        waiting = asyncio.create_task(db.write(tx, "b"))
        await asyncio.sleep(0.3)
        assert not waiting.done()  # waiting for the lock, on a thread
        other.execute("COMMIT")
        other.close()
        behind_other = await waiting
        ticker.cancel()
        # This process's own writer on a thread holds the in-process lock.
        held, release = threading.Event(), threading.Event()

        def hold() -> None:
            with db.session() as s:
                s.execute(text("INSERT INTO t VALUES ('held')"))
                held.set()
                release.wait(5)

        holder = asyncio.get_running_loop().run_in_executor(None, hold)
        await asyncio.get_running_loop().run_in_executor(None, held.wait, 5)
        waiting = asyncio.create_task(db.write(tx, "c"))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        release.set()
        behind_own = await waiting
        await holder
        return loop_thread, inline, behind_other, behind_own, announced, ticks

    loop_thread, inline, behind_other, behind_own, announced, ticks = asyncio.run(scenario())
    assert inline == loop_thread
    assert behind_other != loop_thread and behind_own != loop_thread
    assert announced == ["a"]
    assert ticks >= 10  # the loop ran while the write waited
    with db.engine.connect() as c:
        assert [r[0] for r in c.execute(text("SELECT k FROM t ORDER BY rowid"))] == [
            "a", "b", "held", "c"
        ]  # fmt: skip
    db.dispose()


@pytest.mark.parametrize("drop", ["before_it_ran", "after_it_committed", "while_a_copy_ran"])
def test_a_submit_whose_connection_drops_is_stored_once(db_url: str, drop: str) -> None:
    """PostgreSQL: the plain submit is one statement; when its connection drops (injected at
    psycopg's execution), the job's row says whether it committed. Not run: it is sent again.
    Committed before the connection went: it is not sent again. A copy still running when
    the connection went, committed after the check: the second one fails on the job's key and
    the job stands. Each way the job is stored once, counted in once, and announced once."""
    import asyncio

    import psycopg

    from engine.db import database as dbmod
    from engine.jobs import lifecycle
    from engine.jobs.events import JOB
    from engine.jobs.store import count_active
    from engine.tenants.keys import ensure_tenant

    if db_url.startswith("sqlite"):
        pytest.skip("SQLite's submit is a transaction on the process's own file handle")
    db = Database(db_url)
    db.migrate()
    with db.session() as s:
        tid = ensure_tenant(s, "acme").id
    values = _new_job(tid, "job_dropped")
    real = dbmod._pg_one
    sent: list[str] = []

    async def faulty(db_: Database, conn: Any, stmt: Any, params: dict[str, Any], **kw: Any) -> Any:
        sql = stmt.pg_sql(db_.engine.dialect)
        kind = "submit" if sql.startswith("WITH counted") else "check" if "jobs.id" in sql else ""
        sent.append(kind)
        if kind == "submit" and sent.count("submit") == 1:
            if drop == "after_it_committed":
                await real(db_, conn, stmt, params)
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        if kind == "check" and drop == "while_a_copy_ran" and sent.count("check") == 1:
            found = await real(db_, conn, stmt, params)
            assert found is None
            async with await psycopg.AsyncConnection.connect(conn.info.dsn, autocommit=True) as c:
                await real(db_, c, submit, submit_params)  # the copy commits now
            return found
        return await real(db_, conn, stmt, params, **kw)

    submit: Any = None
    submit_params: dict[str, Any] = {}

    async def scenario() -> list[str]:
        nonlocal submit, submit_params
        from engine.jobs.insert import _at_once

        submit = _at_once(frozenset(values), True)
        submit_params = {**values, "quota": 10, "change": "{}"}
        dbmod._pg_one = faulty  # type: ignore[assignment]
        try:
            with db.events.watch(JOB) as w:
                await lifecycle.store_new(db, dict(values), 10, None)
                return [c.id for c in w.drain()]
        finally:
            dbmod._pg_one = real  # type: ignore[assignment]
            await db.aclose()

    announced = asyncio.run(scenario())
    assert announced == ["job_dropped"]
    expected = {
        "before_it_ran": ["submit", "check", "submit"],
        "after_it_committed": ["submit", "check"],
        "while_a_copy_ran": ["submit", "check", "submit", "check"],
    }[drop]
    assert [k for k in sent if k] == expected
    with db.engine.connect() as c:
        assert c.execute(text("SELECT count(*) FROM jobs WHERE id = 'job_dropped'")).scalar() == 1
        assert count_active(c) == {}
        assert (
            c.execute(text("SELECT active_jobs FROM tenants WHERE id = :t"), {"t": tid}).scalar()
            == 1
        )
    db.dispose()


def test_a_prepared_submit_stores_what_the_session_way_stores(db_url: str) -> None:
    """A plain submit's insert runs with no ORM (on SQLite a prepared transaction on the event
    loop's own handle, `insert.insert_job_prepared`; on PostgreSQL one statement on psycopg's
    async connection, `insert.insert_job_at_once`): the
    row it stores equals, column for column, the one the session way (`insert_job`) stores
    from the same values; the quota refuses and rolls back the same way; the commit announces
    the job in this process (and by NOTIFY on PostgreSQL); and when that way is taken (another
    process's writer on SQLite, no async connection on PostgreSQL), `lifecycle.store_new`
    takes the session way, which waits its turn."""
    import asyncio
    import sqlite3
    from datetime import UTC, datetime

    from engine.db import database as dbmod
    from engine.db.tables import Job
    from engine.errors import QuotaExceeded
    from engine.jobs import lifecycle
    from engine.jobs.events import JOB
    from engine.jobs.store import count_active, read_view
    from engine.tenants.keys import ensure_tenant

    db = Database(db_url)
    db.migrate()
    with db.session() as s:
        tid = ensure_tenant(s, "acme").id

    def job(id_: str) -> dict[str, Any]:
        return dict(
            id=id_, tenant_id=tid, template="upscale", template_version="1.0.0",
            status="queued", params={"scale": 2, "image": {"sha256": "ab" * 32}, "n": [1, 2.5]},
            inputs={"image": {"key": "inputs/x.png", "width": 16}}, graph={"1": {"a": "é"}},
            graph_hash="0" * 64, seed=None, progress=0.0, outputs=[], attempts=0,
            cancel_requested=False, metering={}, runner="local", webhook_url=None,
            created_at=datetime(2026, 12, 3, 12, 0, 0, 123456, tzinfo=UTC),
        )  # fmt: skip

    async def scenario() -> tuple[list[str], int]:
        with db.events.watch(JOB) as w:
            published = db.events.published
            shown = await lifecycle.store_new(db, job("job_async"), 10, None)
            # What the submit answers with is what a read of the job shows.
            assert tuple(shown) == tuple(await read_view(db, tid, "job_async"))
            await asyncio.wait_for(w.wait(1), 1)
            seen = [c.id for c in w.drain()]
            sent = db.events.published - published
        with pytest.raises(QuotaExceeded):
            await lifecycle.store_new(db, job("job_refused"), 1, None)
        if db.is_sqlite:  # another process's writer holds the lock: the thread way waits
            other = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
            other.execute("BEGIN IMMEDIATE")
            waiting = asyncio.create_task(lifecycle.store_new(db, job("job_fallback"), 10, None))
            await asyncio.sleep(0.2)
            assert not waiting.done()
            other.execute("COMMIT")
            other.close()
            await waiting
        else:  # no async connection to be had (injected)

            async def none(*_a: Any, **_k: Any) -> Any:
                raise dbmod.NoConnection("injected")

            real = dbmod.Database.one_write
            dbmod.Database.one_write = none  # type: ignore[method-assign]
            try:
                await lifecycle.store_new(db, job("job_fallback"), 10, None)
            finally:
                dbmod.Database.one_write = real  # type: ignore[method-assign]
        await db.aclose()
        return seen, sent

    seen, sent = asyncio.run(scenario())
    assert seen == ["job_async"] and sent == (0 if db.is_sqlite else 1)
    db.call(lifecycle.create, Job(**job("job_session")), 10)
    with db.engine.connect() as c:
        rows = {
            r.id: r
            for r in c.execute(
                Job.__table__.select().where(
                    Job.__table__.c.id.in_(["job_async", "job_session", "job_fallback"])
                )
            )
        }
        assert set(rows) == {"job_async", "job_session", "job_fallback"}
        assert count_active(c) == {}
        assert c.execute(text("SELECT count(*) FROM jobs WHERE id = 'job_refused'")).scalar() == 0
    a, b = rows["job_async"]._asdict(), rows["job_session"]._asdict()
    a.pop("id"), b.pop("id")
    assert a == b
    assert a["params"] == {"scale": 2, "image": {"sha256": "ab" * 32}, "n": [1, 2.5]}
    assert a["created_at"] == datetime(2026, 12, 3, 12, 0, 0, 123456, tzinfo=UTC)
    db.dispose()


def _new_job(tid: str, id_: str) -> dict[str, Any]:
    """A plain submit's column values for tenant `tid`."""
    from engine.db.database import utcnow

    return dict(
        id=id_, tenant_id=tid, template="upscale", template_version="1.0.0", status="queued",
        params={"scale": 2}, inputs={"image": {"key": "inputs/x.png"}}, graph={"1": {"a": id_}},
        graph_hash="0" * 64, seed=None, progress=0.0, outputs=[], attempts=0,
        cancel_requested=False, metering={}, runner="local", webhook_url=None,
        created_at=utcnow(),
    )  # fmt: skip


def test_the_plain_submits_of_one_turn_commit_together(db_url: str) -> None:
    """Plain submits ready in the same turn of the event loop are stored together: on SQLite
    one transaction (`BEGIN IMMEDIATE` ... `COMMIT` once, a savepoint each), on PostgreSQL one
    statement. Each is still admitted or refused as it would be alone: a tenant's submits over
    its quota are refused (and only those), another tenant's beside them are stored, a submit
    whose caller went before the turn ended is not stored, the kept counts agree with the
    jobs, and each stored job is announced once."""
    import asyncio

    from engine.db.tables import Tenant
    from engine.errors import QuotaExceeded
    from engine.jobs import lifecycle
    from engine.jobs.events import JOB
    from engine.jobs.store import count_active, read_view
    from engine.tenants.keys import ensure_tenant

    db = Database(db_url)
    db.migrate()
    with db.session() as s:
        small = ensure_tenant(s, "small")
        small.active_job_quota = 3
        a, b = small.id, ensure_tenant(s, "other").id
    sql: list[str] = []
    if db.is_sqlite:
        raw = db._inline_connection().connection.driver_connection
        raw.set_trace_callback(sql.append)

    async def scenario() -> tuple[list[Any], list[str], bool]:
        with db.events.watch(JOB) as w, count_statements(db, whole=True) as pg_sql:
            tasks = [
                asyncio.create_task(lifecycle.store_new(db, _new_job(tid, f"job_{n}"), 10, None))
                for tid, n in [(a, "a1"), (b, "b1"), (a, "a2"), (a, "a3"), (a, "a4"), (b, "b2")]
            ]
            gone = asyncio.create_task(lifecycle.store_new(db, _new_job(b, "job_gone"), 10, None))
            await asyncio.sleep(0)  # every submit has joined this turn's group, which waits
            gone.cancel()
            outcomes = await asyncio.gather(*tasks, gone, return_exceptions=True)
            await asyncio.sleep(0.05)
            seen = sorted(c.id for c in w.drain())
        sql.extend(pg_sql)
        # What a submit stored in the group answers with is what a read of it shows.
        same = tuple(outcomes[1]) == tuple(await read_view(db, b, "job_b1"))
        await db.aclose()
        return outcomes, seen, same

    outcomes, seen, same = asyncio.run(scenario())
    refused = [isinstance(o, QuotaExceeded) for o in outcomes[:6]]
    assert refused == [False, False, False, False, True, False], outcomes
    assert [o.id for o in outcomes[:6] if not isinstance(o, Exception)] == [
        "job_a1", "job_b1", "job_a2", "job_a3", "job_b2"
    ]  # fmt: skip
    assert isinstance(outcomes[6], asyncio.CancelledError)
    assert same
    assert seen == ["job_a1", "job_a2", "job_a3", "job_b1", "job_b2"]
    if db.is_sqlite:
        # One transaction for the turn: the refused one rolled back to its savepoint alone.
        assert sql.count("BEGIN IMMEDIATE") == 1 and sql.count("COMMIT") == 1, sql
        assert sql.count("SAVEPOINT step") == 6 and sql.count("ROLLBACK TO step") == 1, sql
    else:
        # One statement for the turn; the small tenant's four would not all fit its quota, so
        # they were then sent one by one (three stored, the fourth refused).
        groups = [q for q in sql if q.startswith("WITH given AS")]
        singles = [q for q in sql if q.startswith("WITH counted AS")]
        assert len(groups) == 1 and len(singles) == 4, sql
    with db.engine.connect() as c:
        ids = {r[0] for r in c.execute(text("SELECT id FROM jobs"))}
        assert ids == {"job_a1", "job_a2", "job_a3", "job_b1", "job_b2"}
        assert count_active(c) == {}
        assert (
            c.execute(Tenant.__table__.select().where(Tenant.__table__.c.id == a)).one().active_jobs
            == 3
        )
    db.dispose()


@pytest.mark.parametrize("drop", ["before_it_ran", "after_it_committed"])
def test_a_group_of_submits_whose_connection_drops_is_stored_once(db_url: str, drop: str) -> None:
    """PostgreSQL: when the connection of a turn's group statement drops (injected at psycopg's
    execution), the jobs' rows say what committed; what did not is sent again on its own.
    Each job is stored once, counted in once and announced once."""
    import asyncio

    import psycopg

    from engine.db import database as dbmod
    from engine.jobs import lifecycle
    from engine.jobs.events import JOB
    from engine.jobs.store import count_active
    from engine.tenants.keys import ensure_tenant

    if db_url.startswith("sqlite"):
        pytest.skip("SQLite's group is a transaction on the process's own file handle")
    db = Database(db_url)
    db.migrate()
    with db.session() as s:
        tid = ensure_tenant(s, "acme").id
    real = dbmod._pg_one
    sent: list[str] = []

    async def faulty(db_: Database, conn: Any, stmt: Any, params: dict[str, Any], **kw: Any) -> Any:
        sql = stmt.pg_sql(db_.engine.dialect)
        kind = "group" if sql.startswith("WITH given") else "one" if "counted" in sql else "check"
        sent.append(kind)
        if kind == "group":
            if drop == "after_it_committed":
                await real(db_, conn, stmt, params, **kw)
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return await real(db_, conn, stmt, params, **kw)

    async def scenario() -> list[str]:
        dbmod._pg_one = faulty  # type: ignore[assignment]
        try:
            with db.events.watch(JOB) as w:
                await asyncio.gather(
                    *(lifecycle.store_new(db, _new_job(tid, j), 10, None) for j in ("j1", "j2"))
                )
                return sorted(c.id for c in w.drain())
        finally:
            dbmod._pg_one = real  # type: ignore[assignment]
            await db.aclose()

    assert asyncio.run(scenario()) == ["j1", "j2"]
    assert (
        sent
        == {
            "before_it_ran": ["group", "check", "one", "one"],
            "after_it_committed": ["group", "check"],
        }[drop]
    )
    with db.engine.connect() as c:
        assert sorted(r[0] for r in c.execute(text("SELECT id FROM jobs"))) == ["j1", "j2"]
        assert count_active(c) == {}
    db.dispose()


def test_a_turn_whose_flush_fails_leaves_no_caller_waiting(tmp_path: Path) -> None:
    """`Database.in_turn`: every item given in one turn reaches one flush call; if the flush
    raises before it settles them, each caller gets that error rather than waiting forever."""
    import asyncio

    db = Database(f"sqlite:///{tmp_path / 't.db'}")
    calls: list[list[Any]] = []

    def broken(db_: Database, live: list[Any]) -> None:
        calls.append([item for item, _ in live])
        raise RuntimeError("injected")

    async def scenario() -> list[Any]:
        return await asyncio.wait_for(
            asyncio.gather(*(db.in_turn(broken, n) for n in range(3)), return_exceptions=True), 5
        )

    outcomes = asyncio.run(scenario())
    assert calls == [[0, 1, 2]]
    assert [str(o) for o in outcomes] == ["injected"] * 3
    db.dispose()


def test_a_submit_answers_before_the_watchers_of_its_job_run(db_url: str) -> None:
    """The turn's callers are answered before the watchers of their jobs wake (the local
    worker's claim is one): a submit's 202 does not wait behind the claim of its own job."""
    import asyncio

    from engine.jobs import lifecycle
    from engine.jobs.events import JOB
    from engine.tenants.keys import ensure_tenant

    db = Database(db_url)
    db.migrate()
    with db.session() as s:
        tid = ensure_tenant(s, "acme").id

    async def scenario() -> list[str]:
        order: list[str] = []
        with db.events.watch(JOB) as w:

            async def watcher() -> None:
                assert await w.wait(5)
                order.append("watcher")

            async def caller(n: int) -> None:
                await lifecycle.store_new(db, _new_job(tid, f"job_{n}"), 10, None)
                order.append("caller")

            watching = asyncio.create_task(watcher())
            await asyncio.sleep(0)  # the watcher waits
            await asyncio.gather(caller(1), caller(2), watching)  # two submits in one turn
        await db.aclose()
        return order

    assert asyncio.run(scenario()) == ["caller", "caller", "watcher"]
    db.dispose()
