"""Account events: the tenant's webhook endpoint and the `budget.threshold` webhook.

Charges are real ledger rows (`engine.ledger.settle`, as the worker writes them, on jobs
submitted through the API and claimed from the store). Receivers are real HTTP servers on
127.0.0.1; signatures are checked with the `standardwebhooks` library, as a customer would.
Every test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select, text
from standardwebhooks import Webhook

from api.services import make_guard
from api.settings import Settings
from engine.billing.budgets import THRESHOLD_EVENT, next_month_start, set_budget
from engine.billing.ledger import TENANT, settle
from engine.db.database import Database, utcnow
from engine.db.tables import Job, TenantEvent, WebhookEvent
from engine.jobs.states import RUNNING, SUCCEEDED
from engine.jobs.store import claim_job, transition
from tests.netfixtures import Listener, fake_resolver, listener, respond
from tests.test_webhooks import Env, free_port, key, wait_until

Headers = dict[str, str]
TXT = {"prompt": "a red cube", "width": 64, "height": 64, "steps": 2}
# $0.000222 per billable second (catalog.yaml, class l4): 20 s = $0.00444, 40 s = $0.00888.
BUDGET, THRESHOLD = Decimal("0.01"), Decimal("0.8")  # the event fires at $0.008


@pytest.fixture
def receiver() -> Iterator[Listener]:
    with listener("127.0.0.1") as lst:
        lst.routes["/hook"] = respond(204, b"", "text/plain")
        yield lst


@pytest.fixture
def env(make_settings: Callable[..., Settings]) -> Iterator[Env]:
    with ExitStack() as stack:
        yield Env(make_settings, stack)


def _db(c: TestClient) -> Database:
    db: Database = c.app.state.services.db  # type: ignore[attr-defined]
    return db


def charge(c: TestClient, h: Headers, billable: float, *, now: datetime | None = None) -> str:
    """A job submitted through the API, run by a (pretend) worker and charged in the ledger."""
    r = c.post("/v1/txt2img", json={**TXT, "seed": int(time.monotonic_ns() % 10**9)}, headers=h)
    assert r.status_code == 202, r.text
    db = _db(c)
    with db.session() as s:
        job = claim_job(s, r.json()["id"], "test-worker")
    assert job is not None
    m = {"billable_seconds": billable, "worker_seconds": billable, "execution_seconds": billable}
    catalog = c.app.state.services.catalog  # type: ignore[attr-defined]
    with db.session() as s:  # the worker's transaction: terminal state and charge together
        assert transition(s, job.id, [RUNNING], SUCCEEDED, finished_at=utcnow(), metering=m)
        fresh = s.get(Job, job.id)
        assert fresh is not None
        written = settle(
            s,
            fresh,
            catalog=catalog,
            attempt=job.attempts,
            metering=m,
            payer=TENANT,
            outcome=SUCCEEDED,
            now=now,
        )
        assert written is not None
    return job.id


def budget(c: TestClient, tenant: str = "acme") -> None:
    with _db(c).session() as s:
        set_budget(s, tenant, BUDGET, THRESHOLD)


def secret(c: TestClient, h: Headers) -> str:
    value: str = c.get("/v1/webhook-secret", headers=h).json()["secret"]
    return value


def deliveries_metric(c: TestClient, outcome: str) -> float:
    for fam in text_string_to_metric_families(c.get("/metrics").text):
        for sample in fam.samples:
            if sample.name == "stencil_webhook_deliveries_total" and sample.labels == {
                "event": THRESHOLD_EVENT,
                "outcome": outcome,
            }:
                return float(sample.value)
    return 0.0


def settled(c: TestClient, h: Headers) -> list[dict[str, Any]]:
    """The tenant's account events, once none is pending delivery."""
    events: list[dict[str, Any]] = c.get("/v1/events", headers=h).json()["data"]
    if any(e["delivery"] and e["delivery"]["status"] == "pending" for e in events):
        return []
    return events


# ---- delivery --------------------------------------------------------------------------------


def test_crossing_the_threshold_delivers_one_signed_event(env: Env, receiver: Listener) -> None:
    c = env.app([receiver.port])
    h = key(c)
    url = f"{receiver.base}/hook"
    r = c.put("/v1/webhook-endpoint", json={"url": url}, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["url"] == url and r.json()["events"] == [THRESHOLD_EVENT]
    assert c.get("/v1/webhook-endpoint", headers=h).json()["url"] == url
    budget(c)
    delivered_before = deliveries_metric(c, "delivered")

    charge(c, h, 20.0)  # $0.00444: below the threshold
    time.sleep(0.6)  # several dispatcher polls
    assert receiver.requests == []
    assert c.get("/v1/events", headers=h).json()["data"] == []

    charge(c, h, 20.0)  # $0.00888: crosses $0.008
    (req,) = wait_until(lambda: receiver.requests)
    event = Webhook(secret(c, h)).verify(req["body"], req["headers"])
    month = utcnow().strftime("%Y-%m")
    assert event["type"] == THRESHOLD_EVENT
    data = event["data"]
    assert data["tenant"] == "acme" and data["month"] == month
    assert data["budget_usd"] == "0.010000" and data["spend_usd"] == "0.008880"
    assert data["threshold"] == "0.8" and data["id"].startswith("evt_")
    hdrs = {k.lower(): v for k, v in req["headers"].items()}
    assert hdrs["webhook-id"].startswith("msg_") and hdrs["content-type"] == "application/json"
    assert abs(int(hdrs["webhook-timestamp"]) - time.time()) < 30

    charge(c, h, 1.0)  # still over the threshold, same month: no second event
    time.sleep(0.6)
    assert len(receiver.requests) == 1

    (listed,) = wait_until(lambda: settled(c, h))
    assert listed["id"] == data["id"] and listed["type"] == THRESHOLD_EVENT
    assert listed["data"]["spend_usd"] == "0.008880" and listed["data"]["month"] == month
    d = listed["delivery"]
    assert d["status"] == "delivered" and d["id"] == hdrs["webhook-id"] and d["url"] == url
    assert [a["status_code"] for a in d["attempts"]] == [204]
    assert c.get(f"/v1/events/{data['id']}", headers=h).json() == listed
    with _db(c).session() as s:
        (row,) = s.scalars(select(TenantEvent))
        assert row.delivered_at is not None  # the account event knows it was delivered
    assert deliveries_metric(c, "delivered") == delivered_before + 1


def test_a_new_month_sends_a_new_event(env: Env, receiver: Listener) -> None:
    c = env.app([receiver.port])
    h = key(c)
    c.put("/v1/webhook-endpoint", json={"url": f"{receiver.base}/hook"}, headers=h)
    budget(c)
    charge(c, h, 40.0)  # this month: $0.00888
    wait_until(lambda: len(receiver.requests) == 1)
    # A charge booked in the next month starts that month's spend from zero.
    charge(c, h, 40.0, now=next_month_start(utcnow()) + timedelta(hours=1))
    wait_until(lambda: len(receiver.requests) == 2)
    key_ = secret(c, h)
    months = [
        Webhook(key_).verify(r["body"], r["headers"])["data"]["month"] for r in receiver.requests
    ]
    assert months == [
        utcnow().strftime("%Y-%m"),
        next_month_start(utcnow()).strftime("%Y-%m"),
    ]
    assert len({r["headers"]["webhook-id"] for r in receiver.requests}) == 2


def test_failed_attempts_are_retried_and_counted(env: Env, receiver: Listener) -> None:
    answers = [500]

    def flaky(hd: BaseHTTPRequestHandler) -> None:
        respond(answers.pop() if answers else 204, b"", "text/plain")(hd)

    receiver.routes["/hook"] = flaky
    c = env.app([receiver.port])
    h = key(c)
    c.put("/v1/webhook-endpoint", json={"url": f"{receiver.base}/hook"}, headers=h)
    budget(c)
    retried, delivered = deliveries_metric(c, "retried"), deliveries_metric(c, "delivered")
    charge(c, h, 40.0)
    (ev,) = wait_until(lambda: settled(c, h))
    assert [a["status_code"] for a in ev["delivery"]["attempts"]] == [500, 204]
    assert ev["delivery"]["attempts"][0]["error"] == "the receiver answered 500"
    ids = {r["headers"]["webhook-id"] for r in receiver.requests}
    assert len(receiver.requests) == 2 and len(ids) == 1  # the same message, retried
    for r in receiver.requests:
        Webhook(secret(c, h)).verify(r["body"], r["headers"])
    assert deliveries_metric(c, "retried") == retried + 1
    assert deliveries_metric(c, "delivered") == delivered + 1


def test_a_charge_that_rolls_back_leaves_no_event(env: Env, receiver: Listener) -> None:
    c = env.app([receiver.port], webhook_dispatch=False)
    h = key(c)
    c.put("/v1/webhook-endpoint", json={"url": f"{receiver.base}/hook"}, headers=h)
    budget(c)
    r = c.post("/v1/txt2img", json=TXT, headers=h)
    db = _db(c)
    with db.session() as s:
        job = claim_job(s, r.json()["id"], "test-worker")
    assert job is not None
    m = {"billable_seconds": 40.0}
    catalog = c.app.state.services.catalog  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError), db.session() as s:
        assert transition(s, job.id, [RUNNING], SUCCEEDED, finished_at=utcnow())
        fresh = s.get(Job, job.id)
        assert fresh is not None
        settle(s, fresh, catalog=catalog, attempt=1, metering=m, payer=TENANT, outcome=SUCCEEDED)
        assert s.scalar(select(func.count()).select_from(WebhookEvent)) == 1
        raise RuntimeError("crash before commit")
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(TenantEvent)) == 0
        assert s.scalar(select(func.count()).select_from(WebhookEvent)) == 0


# ---- without an endpoint, replay, endpoint changes --------------------------------------------


def test_without_an_endpoint_the_event_is_recorded_and_can_be_replayed(
    env: Env, receiver: Listener
) -> None:
    c = env.app([receiver.port])
    h = key(c)
    assert c.get("/v1/webhook-endpoint", headers=h).json() == {
        "url": None,
        "updated_at": None,
        "events": [THRESHOLD_EVENT],
    }
    budget(c)
    charge(c, h, 40.0)
    (ev,) = c.get("/v1/events", headers=h).json()["data"]
    assert ev["type"] == THRESHOLD_EVENT and ev["delivery"] is None
    assert ev["data"]["budget_usd"] == "0.010000" and ev["data"]["tenant"] == "acme"
    with _db(c).session() as s:
        assert s.scalar(select(func.count()).select_from(WebhookEvent)) == 0
    r = c.post(f"/v1/events/{ev['id']}/replay", headers=h)
    assert r.status_code == 409 and "webhook-endpoint" in r.json()["detail"]
    # Another tenant sees nothing of it.
    other = key(c, "globex")
    assert c.get("/v1/events", headers=other).json()["data"] == []
    assert c.get(f"/v1/events/{ev['id']}", headers=other).status_code == 404
    assert c.post(f"/v1/events/{ev['id']}/replay", headers=other).status_code == 404
    # Set an endpoint and replay: the recorded event gets its first delivery.
    c.put("/v1/webhook-endpoint", json={"url": f"{receiver.base}/hook"}, headers=h)
    r = c.post(f"/v1/events/{ev['id']}/replay", headers={**h, "Idempotency-Key": "rp-1"})
    assert r.status_code == 202 and r.json()["delivery"]["status"] == "pending"
    (req,) = wait_until(lambda: receiver.requests)
    got = Webhook(secret(c, h)).verify(req["body"], req["headers"])
    assert got["data"]["id"] == ev["id"] and got["data"]["spend_usd"] == "0.008880"
    (done,) = wait_until(lambda: settled(c, h))
    assert done["delivery"]["status"] == "delivered"
    # Replay again: the same webhook-id, so receivers can dedupe.
    assert c.post(f"/v1/events/{ev['id']}/replay", headers=h).status_code == 202
    wait_until(lambda: len(receiver.requests) == 2)
    assert len({r["headers"]["webhook-id"] for r in receiver.requests}) == 1
    # `type` is a closed set (AccountEventType): a job event type is refused, naming it.
    r = c.get("/v1/events", params={"type": "job.failed"}, headers=h)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "type"
    assert c.get("/v1/events", params={"cursor": "!!"}, headers=h).status_code == 400


def test_a_pending_event_follows_the_endpoint(env: Env, receiver: Listener) -> None:
    dead = free_port()  # nothing listens there
    c = env.app([receiver.port, dead])
    h = key(c)
    c.put("/v1/webhook-endpoint", json={"url": f"http://127.0.0.1:{dead}/hook"}, headers=h)
    budget(c)
    charge(c, h, 40.0)
    wait_until(
        lambda: (
            (e := c.get("/v1/events", headers=h).json()["data"]) and e[0]["delivery"]["attempts"]
        )
    )
    assert receiver.requests == []
    # Fixing the endpoint sends what is still pending to the new URL, at once.
    c.put("/v1/webhook-endpoint", json={"url": f"{receiver.base}/hook"}, headers=h)
    (req,) = wait_until(lambda: receiver.requests)
    assert Webhook(secret(c, h)).verify(req["body"], req["headers"])["type"] == THRESHOLD_EVENT
    (ev,) = wait_until(lambda: settled(c, h))
    assert ev["delivery"]["status"] == "delivered"
    assert ev["delivery"]["url"] == f"{receiver.base}/hook"
    assert (
        ev["delivery"]["attempts"][0]["error"]
        and ev["delivery"]["attempts"][-1]["status_code"] == 204
    )


def test_removing_the_endpoint_stops_pending_deliveries(env: Env) -> None:
    dead = free_port()
    c = env.app([dead])
    h = key(c)
    c.put("/v1/webhook-endpoint", json={"url": f"http://127.0.0.1:{dead}/hook"}, headers=h)
    budget(c)
    charge(c, h, 40.0)
    wait_until(
        lambda: (
            (e := c.get("/v1/events", headers=h).json()["data"]) and e[0]["delivery"]["attempts"]
        )
    )
    r = c.delete("/v1/webhook-endpoint", headers=h)
    assert r.status_code == 204
    got = c.get("/v1/webhook-endpoint", headers=h).json()
    assert got["url"] is None and got["updated_at"]
    (ev,) = c.get("/v1/events", headers=h).json()["data"]
    assert ev["delivery"]["status"] == "failed" and ev["delivery"]["next_attempt_at"] is None
    time.sleep(0.3)  # an attempt in flight during the DELETE may still record itself
    (ev,) = c.get("/v1/events", headers=h).json()["data"]
    assert ev["delivery"]["status"] == "failed"  # and does not make it pending again
    n = len(ev["delivery"]["attempts"])
    time.sleep(0.8)  # backoff is 0.1-0.4 s here: no more attempts come
    (ev,) = c.get("/v1/events", headers=h).json()["data"]
    assert len(ev["delivery"]["attempts"]) == n
    assert c.post(f"/v1/events/{ev['id']}/replay", headers=h).status_code == 409


# ---- validation ----------------------------------------------------------------------------


def test_the_endpoint_is_guarded_like_job_webhooks(env: Env, receiver: Listener) -> None:
    with listener("127.0.0.1") as trap:
        c = env.app([receiver.port])  # the receiver is allowlisted; the trap is not
        c.app.state.services.guard = make_guard(  # type: ignore[attr-defined]
            c.app.state.services.settings,  # type: ignore[attr-defined]
            resolver=fake_resolver({"hooks.example.com": ["10.1.2.3"]}),
        )
        h = key(c)
        for url in (
            f"http://127.0.0.1:{trap.port}/hook",
            f"http://[::ffff:127.0.0.1]:{trap.port}/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://10.0.0.1/hook",
            "http://192.168.1.1/hook",
            "https://hooks.example.com/hook",  # a public-looking name that resolves privately
            "https://localhost/hook",
            "http://2130706433/hook",
            "ftp://public.example/hook",
            "https://a:b@public.example/hook",
        ):
            r = c.put("/v1/webhook-endpoint", json={"url": url}, headers=h)
            assert r.status_code == 422, (url, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            assert [e["field"] for e in r.json()["errors"]] == ["url"], url
            assert "URL refused" in r.json()["errors"][0]["message"]
        for body in ({}, {"url": ""}, {"url": "https://x.example/h", "secret": "x"}, {"url": 5}):
            r = c.put("/v1/webhook-endpoint", json=body, headers=h)
            assert r.status_code == 422, body
        assert c.get("/v1/webhook-endpoint", headers=h).json()["url"] is None
        assert trap.connections == []
    assert c.put("/v1/webhook-endpoint", json={"url": receiver.base + "/h"}).status_code == 401


def test_cli_sets_shows_and_clears_the_endpoint(
    env: Env, receiver: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from api.cli import app as cli

    c = env.app([receiver.port])
    key(c)  # the tenant exists
    settings: Settings = c.app.state.services.settings  # type: ignore[attr-defined]
    for k in list(os.environ):
        if k.startswith("STENCIL_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("STENCIL_HOME", str(settings.home))
    monkeypatch.setenv("STENCIL_DATABASE_URL", settings.db_url)
    monkeypatch.setenv("STENCIL_CATALOG", str(settings.catalog))
    monkeypatch.setenv("STENCIL_URL_ALLOW_HTTP", "true")
    monkeypatch.setenv("STENCIL_URL_ALLOW", f"127.0.0.1:{receiver.port}")
    monkeypatch.chdir(settings.home.parent)  # no stray .env
    runner = CliRunner()
    url = f"{receiver.base}/hook"
    r = runner.invoke(cli, ["tenants", "webhook", "acme"])
    assert r.exit_code == 0 and "acme: no endpoint" in r.output
    r = runner.invoke(cli, ["tenants", "webhook", "acme", "--url", "http://10.0.0.1/hook"])
    assert r.exit_code == 1 and "URL refused" in r.output
    r = runner.invoke(cli, ["tenants", "webhook", "acme", "--url", url])
    assert r.exit_code == 0, r.output
    assert f"acme: account events to {url}" in r.output
    assert c.get("/v1/webhook-endpoint", headers=key(c)).json()["url"] == url
    assert runner.invoke(cli, ["tenants", "webhook", "nobody", "--url", url]).exit_code == 1
    r = runner.invoke(cli, ["tenants", "webhook", "acme", "--clear"])
    assert r.exit_code == 0 and "acme: no endpoint" in r.output
    assert c.get("/v1/webhook-endpoint", headers=key(c)).json()["url"] is None


# ---- the migration ---------------------------------------------------------------------------


def test_migration_keeps_job_deliveries_and_round_trips(db_url: str) -> None:
    """0003 -> 0004 with job events and attempts in place (SQLite rebuilds the table), down
    and up again."""
    from alembic import command

    from engine.db.migrate import alembic_config
    from engine.db.tables import Tenant, WebhookAttempt

    db = Database(db_url)
    cfg = alembic_config(db)
    command.upgrade(cfg, "0003")
    now = utcnow()
    # Core inserts through the models' tables name only columns that 0003 already has.
    with db.engine.begin() as conn:
        conn.execute(
            Tenant.__table__.insert().values(id="ten_1", name="acme", created_at=now, submit_seq=0)
        )
        conn.execute(
            Job.__table__.insert().values(
                id="job_1",
                tenant_id="ten_1",
                template="txt2img",
                template_version="1.0.0",
                status="cancelled",
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
            )
        )
        conn.execute(
            WebhookEvent.__table__.insert().values(
                id="msg_1",
                tenant_id="ten_1",
                job_id="job_1",
                type="job.cancelled",
                url="https://x.example/h",
                payload={"type": "job.cancelled"},
                status="delivered",
                attempts=1,
                created_at=now,
            )
        )
        conn.execute(
            WebhookAttempt.__table__.insert().values(
                id="wha_1", event_id="msg_1", attempted_at=now, status_code=204, duration_ms=3
            )
        )
    db.migrate()
    with db.session() as s:
        ev = s.get(WebhookEvent, "msg_1")
        assert ev is not None and ev.job_id == "job_1" and ev.tenant_event_id is None
        assert ev.payload == {"type": "job.cancelled"}
        (a,) = s.scalars(select(WebhookAttempt))
        assert a.event_id == "msg_1" and a.status_code == 204
        if db.is_sqlite:
            assert list(s.execute(text("PRAGMA foreign_key_check"))) == []
    command.downgrade(cfg, "0003")
    db.migrate()
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(WebhookAttempt)) == 1
        if db.is_sqlite:
            assert list(s.execute(text("PRAGMA foreign_key_check"))) == []
    db.dispose()
