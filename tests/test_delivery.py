"""Every webhook delivery failure is recorded, backed off and ends (class 5, delivery side).

An outbox row whose URL can no longer be reached safely (a host with non-ASCII digits that an
older check let through, a URL that no longer parses), an attempt that raises something
unexpected, and an attempt that dies before it is recorded: each gets its attempts counted
and backed off, ends when its retry window closes, and never delays other tenants' events.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from api.app import create_app
from api.services import make_guard
from api.settings import Settings
from engine.db.database import Database, utcnow
from engine.db.tables import WebhookAttempt, WebhookEvent
from engine.tenants.keys import create_key
from engine.webhooks.delivery import FAILED, RETRY_WINDOW_CLOSED, DispatchConfig, Dispatcher
from tests.netfixtures import Listener, listener, respond

TXT = {"prompt": "a red cube", "width": 64, "height": 64, "steps": 2}
UNREACHABLE = [
    "https://hooks\uff11.example/hook",  # full-width digit
    "https://\uff11\uff12\uff17.\uff10.\uff10.\uff11/hook",  # full-width 127.0.0.1
    "https://hooks\u0661.example/hook",  # Arabic-Indic digit
    "https://hooks\U0001d7cf.example/hook",  # mathematical bold digit
    "https://\u2460\u2461.example/hook",  # circled digits
    "https://stra\u00dfe.example/hook",  # read as strasse by the resolver, xn--strae by httpx
    "https://hooks.example:99999/hook",  # no longer parses
]


def wait_until(pred: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def receiver() -> Iterator[Listener]:
    with listener("127.0.0.1") as lst:
        lst.routes["/hook"] = respond(204, b"", "text/plain")
        yield lst


@pytest.fixture
def apps(make_settings: Callable[..., Settings], receiver: Listener) -> Iterator[Any]:
    common: dict[str, Any] = {
        "url_allow_http": True,
        "url_allow": f"127.0.0.1:{receiver.port}",
        "webhook_backoff_base_s": 0.2,
        "webhook_backoff_max_s": 0.4,
        "webhook_poll_interval_s": 0.1,
        "webhook_retry_window_s": 2.0,
        "active_job_quota": 100,
    }
    with ExitStack() as stack:

        def make(**kw: Any) -> TestClient:
            app = create_app(make_settings(**{**common, **kw}), start_engine=False)
            return stack.enter_context(TestClient(app))

        yield make


def _job_event(c: TestClient, tenant: str, url: str) -> str:
    """A cancelled job with a webhook to `url`; returns its outbox event id."""
    db: Database = c.app.state.services.db  # type: ignore[attr-defined]
    with db.session() as s:
        token, _ = create_key(s, tenant)
    h = {"Authorization": f"Bearer {token}"}
    job = c.post("/v1/txt2img", json={**TXT, "webhook_url": url}, headers=h).json()
    assert c.delete(f"/v1/jobs/{job['id']}", headers=h).json()["status"] == "cancelled"
    with db.session() as s:
        ev = s.scalar(select(WebhookEvent).where(WebhookEvent.job_id == job["id"]))
        assert ev is not None
        return ev.id


def _attempts(db: Database, event_id: str) -> list[WebhookAttempt]:
    with db.session() as s:
        return list(
            s.scalars(
                select(WebhookAttempt)
                .where(WebhookAttempt.event_id == event_id)
                .order_by(WebhookAttempt.attempted_at)
            )
        )


def _event(db: Database, event_id: str) -> WebhookEvent:
    with db.session() as s:
        ev = s.get(WebhookEvent, event_id)
        assert ev is not None
        return ev


def test_unreachable_urls_are_recorded_backed_off_and_end(
    apps: Callable[..., TestClient], receiver: Listener
) -> None:
    accepting = apps(webhook_dispatch=False)
    db: Database = accepting.app.state.services.db  # type: ignore[attr-defined]
    bad = []
    for i, url in enumerate(UNREACHABLE):
        ev = _job_event(accepting, f"bad{i}", f"{receiver.base}/hook")
        with db.session() as s:  # as an older process, with an older check, stored it
            s.execute(update(WebhookEvent).where(WebhookEvent.id == ev).values(url=url))
        bad.append(ev)
    apps()  # a dispatcher on the same database
    good = _job_event(accepting, "good", f"{receiver.base}/hook")
    # Another tenant's event is delivered at once, not after the failing ones.
    wait_until(lambda: _event(db, good).status == "delivered", timeout=5)
    for ev in bad:
        done = wait_until(lambda ev=ev: _event(db, ev).status == FAILED and _event(db, ev))
        attempts = _attempts(db, ev)
        assert len(attempts) >= 2, "every attempt is recorded"
        assert all(a.status_code is None and "URL refused" in (a.error or "") for a in attempts)
        assert done.attempts == len(attempts) and done.next_attempt_at is None
        gaps = [
            (b.attempted_at - a.attempted_at).total_seconds()
            for a, b in zip(attempts, attempts[1:], strict=False)
        ]
        assert all(g >= 0.09 for g in gaps), f"not backed off: {gaps}"
    assert len(receiver.requests) == 1  # only the good event reached a receiver


def test_an_attempt_that_raises_is_recorded_and_backed_off(
    apps: Callable[..., TestClient], receiver: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def explode(self: Dispatcher, ev: Any) -> Any:
        raise RuntimeError("something nobody expected, \x00 with a NUL")

    monkeypatch.setattr(Dispatcher, "_post", explode)
    accepting = apps(webhook_dispatch=False)
    db: Database = accepting.app.state.services.db  # type: ignore[attr-defined]
    ev = _job_event(accepting, "acme", f"{receiver.base}/hook")
    apps()
    wait_until(lambda: _event(db, ev).status == FAILED)
    attempts = _attempts(db, ev)
    assert len(attempts) >= 2
    assert all((a.error or "").startswith("RuntimeError: something") for a in attempts)
    assert all("\x00" not in (a.error or "") for a in attempts)  # stored on either database


def test_an_attempt_that_is_never_recorded_is_still_counted_backed_off_and_ended(
    make_settings: Callable[..., Settings], apps: Callable[..., TestClient], receiver: Listener
) -> None:
    accepting = apps(webhook_dispatch=False)
    db: Database = accepting.app.state.services.db  # type: ignore[attr-defined]
    ev_id = _job_event(accepting, "acme", f"{receiver.base}/hook")
    settings = make_settings()
    dispatcher = Dispatcher(
        db, make_guard(settings), DispatchConfig(timeout_s=1.0, backoff_base_s=5.0)
    )
    # A claim whose attempt dies before recording (a crash): the claim itself counted it and
    # scheduled the next try, so the event is neither due again at once nor first in line.
    (claimed,) = dispatcher._claim(8, {})
    after = _event(db, ev_id)
    assert claimed.id == ev_id and after.attempts == 1
    assert after.next_attempt_at is not None and after.next_attempt_at > utcnow()
    with db.session() as s:  # the lease runs out; the backoff has not
        s.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id == ev_id)
            .values(locked_until=utcnow() - timedelta(seconds=1))
        )
    assert dispatcher._claim(8, {}) == []
    with db.session() as s:  # ...and once the window has closed, the next claim ends it
        s.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id == ev_id)
            .values(
                next_attempt_at=utcnow() - timedelta(seconds=1),
                deadline_at=utcnow() - timedelta(seconds=1),
            )
        )
    assert dispatcher._claim(8, {}) == []
    ended = _event(db, ev_id)
    assert ended.status == FAILED and ended.last_error == RETRY_WINDOW_CLOSED
    assert ended.next_attempt_at is None
    asyncio.run(_closed(dispatcher))


async def _closed(d: Dispatcher) -> None:
    await d.stop()  # never started: stop is a no-op that must not raise
