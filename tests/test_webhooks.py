"""Signed webhooks: outbox, delivery with retries, rotation, the log and replay.

Receivers are real HTTP servers on 127.0.0.1; signatures are checked with the
`standardwebhooks` library, as a customer would.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from standardwebhooks import Webhook, WebhookVerificationError

from api.app import create_app
from api.settings import Settings
from engine.db.database import utcnow
from engine.db.tables import Job, WebhookEvent
from engine.jobs.states import FAILED, QUEUED, RUNNING
from engine.jobs.store import transition
from engine.tenants.keys import create_key
from tests.netfixtures import Listener, listener, respond

Headers = dict[str, str]
TXT = {"prompt": "a red cube", "width": 64, "height": 64, "steps": 2}


def wait_until(pred: Callable[[], Any], timeout: float = 20.0, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        time.sleep(every)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def receiver() -> Iterator[Listener]:
    with listener("127.0.0.1") as lst:
        lst.routes["/hook"] = respond(204, b"", "text/plain")
        yield lst


class Env:
    """Apps on one database, with helpers."""

    def __init__(self, make_settings: Callable[..., Settings], stack: ExitStack) -> None:
        self.make_settings = make_settings
        self.stack = stack

    def app(self, allow: list[int], **kw: Any) -> TestClient:
        base: dict[str, Any] = {
            "url_allow_http": True,
            "url_allow": ",".join(f"127.0.0.1:{p}" for p in allow),
            "webhook_backoff_base_s": 0.2,
            "webhook_backoff_max_s": 0.4,
            "webhook_poll_interval_s": 0.1,
            "webhook_timeout_s": 2.0,
            "active_job_quota": 50,
            "rate_limit_write": "1000/minute",
            "rate_limit_read": "10000/minute",
        }
        base.update(kw)
        return self.stack.enter_context(
            TestClient(create_app(self.make_settings(**base), start_engine=False))
        )


@pytest.fixture
def env(make_settings: Callable[..., Settings]) -> Iterator[Env]:
    with ExitStack() as stack:
        yield Env(make_settings, stack)


def key(c: TestClient, tenant: str = "acme") -> Headers:
    with c.app.state.services.db.session() as s:  # type: ignore[attr-defined]
        token, _ = create_key(s, tenant)
    return {"Authorization": f"Bearer {token}"}


def submit_and_cancel(c: TestClient, h: Headers, url: str) -> str:
    r = c.post("/v1/txt2img", json={**TXT, "webhook_url": url}, headers=h)
    assert r.status_code == 202, r.text
    assert r.json()["webhook_url"] == url
    job_id: str = r.json()["id"]
    assert c.delete(f"/v1/jobs/{job_id}", headers=h).json()["status"] == "cancelled"
    return job_id


def verify(secret: str, req: dict[str, Any]) -> dict[str, Any]:
    """What a customer's receiver does."""
    out: dict[str, Any] = Webhook(secret).verify(req["body"], req["headers"])
    return out


def test_a_terminal_state_delivers_one_signed_event(env: Env, receiver: Listener) -> None:
    c = env.app([receiver.port])
    h = key(c)
    job_id = submit_and_cancel(c, h, f"{receiver.base}/hook")
    (req,) = wait_until(lambda: receiver.requests)
    secret = c.get("/v1/webhook-secret", headers=h).json()["secret"]
    assert secret.startswith("whsec_")
    event = verify(secret, req)
    assert event["type"] == "job.cancelled"
    assert event["data"]["id"] == job_id and event["data"]["status"] == "cancelled"
    assert event["data"]["url"] == f"/v1/jobs/{job_id}"
    hdrs = {k.lower(): v for k, v in req["headers"].items()}
    assert hdrs["webhook-id"].startswith("msg_") and hdrs["content-type"] == "application/json"
    assert abs(int(hdrs["webhook-timestamp"]) - time.time()) < 30
    # A tampered body or another tenant's secret fails verification.
    with pytest.raises(WebhookVerificationError):
        verify(secret, {**req, "body": req["body"].replace(b"cancelled", b"succeeded")})
    other = c.get("/v1/webhook-secret", headers=key(c, "globex")).json()["secret"]
    with pytest.raises(WebhookVerificationError):
        verify(other, req)
    log = wait_until(
        lambda: (
            (x := c.get(f"/v1/jobs/{job_id}/webhooks", headers=h).json()["data"])[0]["status"]
            == "delivered"
            and x
        )
    )
    (d,) = log
    assert d["id"] == hdrs["webhook-id"] and d["type"] == "job.cancelled"
    assert [a["status_code"] for a in d["attempts"]] == [204] and d["delivered_at"]
    time.sleep(0.5)
    assert len(receiver.requests) == 1  # delivered once, not again


def test_every_terminal_transition_writes_the_outbox_atomically(env: Env) -> None:
    c = env.app([9], webhook_dispatch=False)  # delivery is checked elsewhere
    h = key(c)
    db = c.app.state.services.db  # type: ignore[attr-defined]
    url = "http://127.0.0.1:9/hook"
    ids = [
        c.post("/v1/txt2img", json={**TXT, "webhook_url": url}, headers=h).json()["id"]
        for _ in range(3)
    ]
    plain = c.post("/v1/txt2img", json=TXT, headers=h).json()["id"]
    # Worker path: running -> failed. A rolled-back transaction leaves no event behind.
    with pytest.raises(RuntimeError), db.session() as s:
        assert transition(s, ids[0], [QUEUED], RUNNING)
        assert transition(s, ids[0], [RUNNING], FAILED, finished_at=utcnow())
        raise RuntimeError("crash before commit")
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(WebhookEvent)) == 0
        assert s.get(Job, ids[0]).status == QUEUED  # type: ignore[union-attr]
    # Supervisor path: a job stuck in the queue past its limit is failed, with an event.
    from engine.jobs.supervisor import sweep

    cat = c.app.state.services.catalog  # type: ignore[attr-defined]
    actions = sweep(db, cat, heartbeat_timeout_s=30, now=utcnow() + timedelta(hours=1))
    assert {a.job_id for a in actions} == {*ids, plain}
    with db.session() as s:
        events = list(s.scalars(select(WebhookEvent)))
    assert sorted(e.job_id for e in events) == sorted(ids)  # none for the job without a URL
    assert {e.type for e in events} == {"job.failed"}
    assert all(e.payload["data"]["error"]["type"].endswith("/timeout") for e in events)
    # Terminal states never move again, so no second event.
    with db.session() as s:
        assert not transition(s, ids[1], [QUEUED, RUNNING], FAILED)
        assert s.scalar(select(func.count()).select_from(WebhookEvent)) == 3


def test_a_receiver_down_for_a_while_gets_every_event_once_back(env: Env) -> None:
    port = free_port()  # nothing listens: connection refused
    c = env.app([port])
    h = key(c)
    ids = [submit_and_cancel(c, h, f"http://127.0.0.1:{port}/hook") for _ in range(3)]

    def failed_attempts(job_id: str) -> int:
        log = c.get(f"/v1/jobs/{job_id}/webhooks", headers=h).json()["data"]
        return len(log[0]["attempts"]) if log else 0

    wait_until(lambda: all(failed_attempts(j) >= 2 for j in ids))
    with listener("127.0.0.1", port) as back:
        back.routes["/hook"] = respond(200, b"ok", "text/plain")
        wait_until(lambda: len({r["headers"]["webhook-id"] for r in back.requests}) == 3)
        secret = c.get("/v1/webhook-secret", headers=h).json()["secret"]
        got = {verify(secret, r)["data"]["id"] for r in back.requests}
        assert got == set(ids)
        for j in ids:
            log = c.get(f"/v1/jobs/{j}/webhooks", headers=h).json()["data"][0]
            assert log["status"] == "delivered"
            assert log["attempts"][-1]["status_code"] == 200
            assert all(a["error"] for a in log["attempts"][:-1])


def test_a_receiver_down_for_good_does_not_slow_the_others(env: Env, receiver: Listener) -> None:
    # A black hole: the kernel accepts connections, nobody ever answers.
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)
    hole_port = hole.getsockname()[1]
    try:
        c = env.app(
            [receiver.port, hole_port],
            webhook_timeout_s=3.0,
            webhook_concurrency=4,
            webhook_per_host_concurrency=2,
        )
        h = key(c)
        stuck = [submit_and_cancel(c, h, f"http://127.0.0.1:{hole_port}/hook") for _ in range(6)]
        t0 = time.monotonic()
        fine = [submit_and_cancel(c, h, f"{receiver.base}/hook") for _ in range(4)]
        wait_until(lambda: len(receiver.requests) == 4, timeout=10)
        assert time.monotonic() - t0 < 2.5, "the dead receiver held up the others"
        assert {json.loads(r["body"])["data"]["id"] for r in receiver.requests} == set(fine)
        log = c.get(f"/v1/jobs/{stuck[0]}/webhooks", headers=h).json()["data"][0]
        assert log["status"] == "pending"
        # Eventually each stuck attempt times out on its own clock and is rescheduled.
        wait_until(
            lambda: any(
                a["error"] and "no answer" in a["error"]
                for a in c.get(f"/v1/jobs/{stuck[0]}/webhooks", headers=h).json()["data"][0][
                    "attempts"
                ]
            ),
            timeout=15,
        )
    finally:
        hole.close()


def test_rotation_signs_with_both_secrets_during_the_overlap(env: Env, receiver: Listener) -> None:
    c = env.app([receiver.port])
    h = key(c)
    old = c.get("/v1/webhook-secret", headers=h).json()
    assert old["previous_expires_at"] is None
    r = c.post("/v1/webhook-secret/rotate", headers={**h, "Idempotency-Key": "rot-1"})
    assert r.status_code == 200
    new = r.json()
    assert new["secret"] != old["secret"] and new["previous_expires_at"]
    # The same Idempotency-Key does not rotate twice.
    again = c.post("/v1/webhook-secret/rotate", headers={**h, "Idempotency-Key": "rot-1"})
    assert again.json() == new and again.headers["idempotent-replayed"] == "true"
    assert c.get("/v1/webhook-secret", headers=h).json()["secret"] == new["secret"]
    submit_and_cancel(c, h, f"{receiver.base}/hook")
    (req,) = wait_until(lambda: receiver.requests)
    sig = {k.lower(): v for k, v in req["headers"].items()}["webhook-signature"]
    assert len(sig.split(" ")) == 2 and all(p.startswith("v1,") for p in sig.split(" "))
    verify(new["secret"], req)
    verify(old["secret"], req)  # receivers not yet updated keep working


def test_without_overlap_the_old_secret_stops_at_once(env: Env, receiver: Listener) -> None:
    c = env.app([receiver.port], webhook_secret_overlap_s=0)
    h = key(c)
    old = c.get("/v1/webhook-secret", headers=h).json()["secret"]
    new = c.post("/v1/webhook-secret/rotate", headers=h).json()["secret"]
    submit_and_cancel(c, h, f"{receiver.base}/hook")
    (req,) = wait_until(lambda: receiver.requests)
    verify(new, req)
    with pytest.raises(WebhookVerificationError):
        verify(old, req)


def test_replay_redelivers_and_is_scoped_to_the_tenant(env: Env, receiver: Listener) -> None:
    c = env.app([receiver.port])
    h = key(c)
    job_id = submit_and_cancel(c, h, f"{receiver.base}/hook")
    wait_until(lambda: len(receiver.requests) == 1)
    r = c.post(f"/v1/jobs/{job_id}/webhooks/replay", headers=h)
    assert r.status_code == 202 and r.json()["data"][0]["status"] == "pending"
    wait_until(lambda: len(receiver.requests) == 2)
    ids = {r["headers"]["webhook-id"] for r in receiver.requests}
    assert len(ids) == 1  # the same message, so receivers can dedupe
    log = wait_until(
        lambda: (
            (d := c.get(f"/v1/jobs/{job_id}/webhooks", headers=h).json()["data"][0])["status"]
            == "delivered"
            and len(d["attempts"]) == 2
            and d
        )
    )
    assert [a["status_code"] for a in log["attempts"]] == [204, 204]
    other = key(c, "globex")
    assert c.post(f"/v1/jobs/{job_id}/webhooks/replay", headers=other).status_code == 404
    assert c.get(f"/v1/jobs/{job_id}/webhooks", headers=other).status_code == 404
    plain = c.post("/v1/txt2img", json=TXT, headers=h).json()["id"]
    assert c.post(f"/v1/jobs/{plain}/webhooks/replay", headers=h).status_code == 409
    hooked = c.post(
        "/v1/txt2img", json={**TXT, "webhook_url": f"{receiver.base}/hook"}, headers=h
    ).json()["id"]
    r = c.post(f"/v1/jobs/{hooked}/webhooks/replay", headers=h)
    assert r.status_code == 409 and "queued" in r.json()["detail"]


def test_delivery_gives_up_after_the_retry_window(env: Env) -> None:
    port = free_port()
    c = env.app([port], webhook_retry_window_s=1.0)
    h = key(c)
    job_id = submit_and_cancel(c, h, f"http://127.0.0.1:{port}/hook")
    log = wait_until(
        lambda: (
            (d := c.get(f"/v1/jobs/{job_id}/webhooks", headers=h).json()["data"][0])["status"]
            == "failed"
            and d
        ),
        timeout=10,
    )
    assert len(log["attempts"]) >= 2 and log["next_attempt_at"] is None
    assert all(a["status_code"] is None and a["error"] for a in log["attempts"])


def test_the_url_is_validated_again_at_delivery(env: Env, receiver: Listener) -> None:
    # Accepted by a process that allowed the receiver; delivered by one that does not.
    accepting = env.app([receiver.port], webhook_dispatch=False)
    h = key(accepting)
    job_id = submit_and_cancel(accepting, h, f"{receiver.base}/hook")
    env.app([])  # same database, default guard, dispatcher on
    log = wait_until(
        lambda: (
            (d := accepting.get(f"/v1/jobs/{job_id}/webhooks", headers=h).json()["data"])
            and d[0]["attempts"]
            and d[0]
        )
    )
    assert "URL refused" in log["attempts"][0]["error"]
    assert receiver.connections == []


def test_concurrent_dispatchers_deliver_each_event_once(env: Env, receiver: Listener) -> None:
    lock = threading.Lock()
    seen: list[str] = []

    def slow(hd: Any) -> None:
        with lock:
            seen.append(hd.headers["webhook-id"])
        time.sleep(0.05)
        respond(200, b"", "text/plain")(hd)

    receiver.routes["/hook"] = slow
    a = env.app([receiver.port], webhook_dispatch=False)
    h = key(a)
    ids = [submit_and_cancel(a, h, f"{receiver.base}/hook") for _ in range(8)]
    env.app([receiver.port])
    env.app([receiver.port])
    wait_until(lambda: len(set(seen)) == 8)
    time.sleep(0.5)
    assert len(seen) == 8, "an event was delivered twice"
    assert len(ids) == 8
