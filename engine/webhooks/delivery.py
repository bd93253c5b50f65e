"""Signed webhooks (Standard Webhooks): tenant secrets, the outbox dispatcher, the delivery log.

Events are written to the outbox in the transaction of the state change: job events by
`store.transition` (to the job's `webhook_url`), account events such as `budget.threshold` by
`budgets.note_spend` (to the tenant's webhook endpoint, `set_endpoint`). The dispatcher claims
due events with a lease (several API processes may run one), delivers them through the URL
guard with bounded concurrency (overall and per receiver) and a per-attempt timeout, counts
every attempt's outcome in `stencil_webhook_deliveries_total`, and reschedules failures with
exponential backoff and jitter until the retry window closes. Signatures: `v1,` + base64
HMAC-SHA256 over `id.timestamp.body` with every live `whsec_` secret of the tenant, so a
rotation overlap carries both.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import re
import secrets
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session
from ssrfguard import SSRFGuardError
from standardwebhooks import Webhook

from engine.db.cursors import decode_cursor, encode_cursor
from engine.db.database import Database, insert_ignore, new_id, utcnow
from engine.db.tables import Job, Tenant, TenantEvent, WebhookAttempt, WebhookEvent, WebhookSecret
from engine.errors import Conflict, NotFound
from engine.intake.fetch import UrlGuard, UrlRefused
from engine.jobs.events import JOB, Change
from engine.jobs.states import TERMINAL
from engine.jobs.store import get_job
from engine.metrics import WEBHOOK_DELIVERIES
from engine.webhooks.outbox import account_delivery

log = logging.getLogger("stencil.webhooks")
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


# ---- secrets -----------------------------------------------------------------------------


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def live_secrets(s: Session, tenant_id: str, now: datetime | None = None) -> list[WebhookSecret]:
    """The tenant's secrets that still sign, newest first."""
    now = now or utcnow()
    return list(
        s.scalars(
            select(WebhookSecret)
            .where(
                WebhookSecret.tenant_id == tenant_id,
                or_(WebhookSecret.expires_at.is_(None), WebhookSecret.expires_at > now),
            )
            .order_by(WebhookSecret.created_at.desc(), WebhookSecret.id.desc())
        )
    )


def ensure_secret(s: Session, tenant_id: str) -> WebhookSecret:
    """The tenant's current secret, created on first need."""
    current = live_secrets(s, tenant_id)
    if current:
        return current[0]
    sec = WebhookSecret(
        id=new_id("whs"), tenant_id=tenant_id, secret=new_secret(), created_at=utcnow()
    )
    s.add(sec)
    s.flush()
    return sec


def rotate_secret(s: Session, tenant_id: str, overlap_s: float) -> tuple[WebhookSecret, datetime]:
    """A new current secret; the old ones keep signing for `overlap_s` (returned as a time)."""
    now = utcnow()
    until = now + timedelta(seconds=overlap_s)
    for old in live_secrets(s, tenant_id, now):
        if old.expires_at is None or old.expires_at > until:
            old.expires_at = until
    sec = WebhookSecret(id=new_id("whs"), tenant_id=tenant_id, secret=new_secret(), created_at=now)
    s.add(sec)
    s.flush()
    return sec, until


def sign(secrets_: list[str], msg_id: str, timestamp: datetime, body: str) -> str:
    """The `webhook-signature` header: one `v1,<sig>` per live secret, space-separated."""
    return " ".join(Webhook(sec).sign(msg_id, timestamp, body) for sec in secrets_)


# ---- the delivery log and replay ---------------------------------------------------------


def deliveries(s: Session, tenant_id: str, job_id: str) -> list[tuple[WebhookEvent, list[Any]]]:
    """A job's events with their attempts, oldest first (404 for another tenant's job)."""
    get_job(s, tenant_id, job_id)
    events = list(
        s.scalars(
            select(WebhookEvent)
            .where(WebhookEvent.job_id == job_id, WebhookEvent.tenant_id == tenant_id)
            .order_by(WebhookEvent.created_at, WebhookEvent.id)
        )
    )
    return [(ev, attempts_of(s, ev.id)) for ev in events]


def attempts_of(s: Session, event_id: str) -> list[WebhookAttempt]:
    """An outbox event's delivery attempts, oldest first."""
    return list(
        s.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.event_id == event_id)
            .order_by(WebhookAttempt.attempted_at, WebhookAttempt.id)
        )
    )


def replay(s: Session, tenant_id: str, job_id: str, retry_window_s: float) -> None:
    """Deliver a job's events again now (same `webhook-id`), with a fresh retry window."""
    job: Job = get_job(s, tenant_id, job_id)
    if not job.webhook_url:
        raise Conflict(f"Job {job_id} has no webhook_url.")
    if job.status not in TERMINAL:
        raise Conflict(f"Job {job_id} is {job.status}; its webhook is sent when it finishes.")
    now = utcnow()
    s.execute(
        update(WebhookEvent)
        .where(WebhookEvent.job_id == job_id, WebhookEvent.tenant_id == tenant_id)
        .values(
            status=PENDING,
            next_attempt_at=now,
            deadline_at=now + timedelta(seconds=retry_window_s),
            locked_until=None,
        )
    )


# ---- the tenant's endpoint and account events ------------------------------------------------

ENDPOINT_REMOVED = "the webhook endpoint was removed"


def _tenant(s: Session, tenant_id: str) -> Tenant:
    tenant = s.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound("No such tenant.")
    return tenant


def get_endpoint(s: Session, tenant_id: str) -> Tenant:
    """The tenant, whose `webhook_url` is its endpoint for account events (None: none)."""
    return _tenant(s, tenant_id)


def set_endpoint(s: Session, tenant_id: str, url: str | None) -> Tenant:
    """Set (or with None remove) the tenant's endpoint for account events.

    The URL must already have passed the URL guard. Account events still pending delivery
    follow the change: to the new URL at once, or, when the endpoint is removed, they stop
    (marked failed, `the webhook endpoint was removed`). Job events are not affected.
    """
    tenant = _tenant(s, tenant_id)
    now = utcnow()
    tenant.webhook_url = url
    tenant.webhook_url_updated_at = now
    pending = (
        update(WebhookEvent)
        .where(
            WebhookEvent.tenant_id == tenant_id,
            WebhookEvent.tenant_event_id.is_not(None),
            WebhookEvent.status == PENDING,
        )
        .execution_options(synchronize_session=False)
    )
    if url is None:
        s.execute(
            pending.values(
                status=FAILED, next_attempt_at=None, locked_until=None, last_error=ENDPOINT_REMOVED
            )
        )
    else:
        s.execute(pending.values(url=url, next_attempt_at=now))
    s.flush()
    return tenant


@dataclass(frozen=True)
class AccountEvent:
    """An account event with its delivery (None: the tenant had no endpoint) and attempts."""

    event: TenantEvent
    delivery: WebhookEvent | None
    attempts: list[WebhookAttempt]


def _account_event(s: Session, ev: TenantEvent) -> AccountEvent:
    delivery = s.scalar(select(WebhookEvent).where(WebhookEvent.tenant_event_id == ev.id))
    return AccountEvent(ev, delivery, attempts_of(s, delivery.id) if delivery else [])


def list_events(
    s: Session,
    tenant_id: str,
    *,
    limit: int,
    cursor: str | None = None,
    type_: str | None = None,
) -> tuple[list[AccountEvent], str | None]:
    """A page of the tenant's account events, newest first, and the next page's cursor."""
    q = select(TenantEvent).where(TenantEvent.tenant_id == tenant_id)
    if type_:
        q = q.where(TenantEvent.type == type_)
    if cursor:
        ts, ev_id = decode_cursor(cursor)
        q = q.where(
            or_(
                TenantEvent.created_at < ts,
                (TenantEvent.created_at == ts) & (TenantEvent.id < ev_id),
            )
        )
    q = q.order_by(TenantEvent.created_at.desc(), TenantEvent.id.desc()).limit(limit + 1)
    rows = list(s.scalars(q))
    nxt = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return [_account_event(s, ev) for ev in rows[:limit]], nxt


def get_event(s: Session, tenant_id: str, event_id: str) -> AccountEvent:
    """One account event of the tenant (404 for another tenant's)."""
    ev = s.scalar(
        select(TenantEvent).where(TenantEvent.id == event_id, TenantEvent.tenant_id == tenant_id)
    )
    if ev is None:
        raise NotFound(f"No event {event_id}.")
    return _account_event(s, ev)


def replay_event(s: Session, tenant_id: str, event_id: str, retry_window_s: float) -> AccountEvent:
    """Deliver an account event again now, to the tenant's current endpoint.

    The same `webhook-id` as before, with a fresh retry window; an event recorded while the
    tenant had no endpoint gets its first delivery. 409 without an endpoint.
    """
    found = get_event(s, tenant_id, event_id)
    tenant = _tenant(s, tenant_id)
    if not tenant.webhook_url:
        raise Conflict(
            "This tenant has no webhook endpoint; set one with PUT /v1/webhook-endpoint."
        )
    now = utcnow()
    deadline = now + timedelta(seconds=retry_window_s)
    if found.delivery is not None:
        s.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id == found.delivery.id)
            .values(
                status=PENDING,
                url=tenant.webhook_url,
                next_attempt_at=now,
                deadline_at=deadline,
                locked_until=None,
            )
            .execution_options(synchronize_session=False)
        )
    else:
        row = account_delivery(found.event, tenant, tenant.webhook_url)
        row.deadline_at = deadline
        # One delivery per event (a unique index): a concurrent replay that won is kept.
        values = {c.key: getattr(row, c.key) for c in WebhookEvent.__table__.columns}
        insert_ignore(s, WebhookEvent, **values)
    s.expire_all()
    return get_event(s, tenant_id, event_id)


# ---- the dispatcher ------------------------------------------------------------------------


@dataclass(frozen=True)
class DispatchConfig:
    """How the dispatcher paces itself."""

    concurrency: int = 8
    per_host: int = 2
    timeout_s: float = 10.0
    poll_interval_s: float = 1.0
    backoff_base_s: float = 5.0
    backoff_max_s: float = 3600.0
    retry_window_s: float = 86400.0


STOP_GRACE_S = 5.0  # how long stop() waits for in-flight attempts


def backoff(attempt: int, base_s: float, max_s: float) -> float:
    """Exponential backoff with jitter: the n-th retry waits 50-100% of base * 2^(n-1)."""
    delay: float = min(max_s, base_s * 2.0 ** max(0, attempt - 1))
    return delay * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not a secret


def _origin(url: str) -> str:
    try:
        p = urlsplit(url)
        return f"{p.hostname}:{p.port or (443 if p.scheme == 'https' else 80)}"
    except ValueError:  # a URL that no longer parses still gets its attempt, and its refusal
        return url[:200]


_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
RETRY_WINDOW_CLOSED = "the retry window closed"


def _error_text(text: str) -> str:
    """An attempt's error as either database can store it (no NUL, no surrogates, 500 chars)."""
    return _UNPRINTABLE.sub("?", text)[:500]


@dataclass(frozen=True)
class _Claimed:
    id: str
    tenant_id: str
    type: str
    tenant_event_id: str | None
    url: str
    payload: dict[str, Any]
    attempts: int
    deadline_at: datetime


class Dispatcher:
    """Delivers the outbox: claim due events, POST them signed, record every attempt."""

    def __init__(self, db: Database, guard: UrlGuard, config: DispatchConfig) -> None:
        self.db = db
        self.guard = guard
        self.config = config
        self._slots = asyncio.Semaphore(config.concurrency)
        self._busy: Counter[str] = Counter()
        self._inflight: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        """Start the loop (as a task of the running event loop)."""
        limits = httpx.Limits(max_connections=self.config.concurrency, max_keepalive_connections=0)
        self._client = self.guard.client(limits=limits)
        # A terminal state writes its outbox rows in the same transaction: deliver at once.
        self.db.events.on(JOB, self._on_job_change)
        self._task = asyncio.create_task(self._loop(), name="stencil-webhooks")

    def _on_job_change(self, change: Change) -> None:
        if change.status in TERMINAL or change.status is None:
            self._wake.set()

    async def stop(self) -> None:
        """Stop claiming; in-flight attempts are cancelled (their leases expire, they retry)."""
        if self._task is not None:
            self._task.cancel()
        for t in list(self._inflight):
            t.cancel()
        pending = [*([self._task] if self._task else []), *self._inflight]
        # Bounded: an attempt stuck on a receiver that never answers must not hold up
        # shutdown. Its lease expires and another pass retries it, so nothing is lost.
        if pending:
            _, stuck = await asyncio.wait(pending, timeout=STOP_GRACE_S)
            if stuck:
                log.warning(
                    "%d webhook attempts did not stop in time; their leases expire", len(stuck)
                )
        if self._client is not None:
            try:
                await asyncio.wait_for(self._client.aclose(), timeout=STOP_GRACE_S)
            except TimeoutError:
                log.warning("closing the webhook HTTP client timed out")

    def wake(self) -> None:
        """Look for due events now rather than at the next poll."""
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            try:
                await self.pump()
            except asyncio.CancelledError:
                raise
            except Exception:
                # The database may be down; the outbox keeps everything, so just try again.
                log.warning("webhook dispatch pass failed; retrying", exc_info=True)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.config.poll_interval_s)
            except TimeoutError:
                pass

    async def pump(self) -> int:
        """Claim what is due and free to send, and start those deliveries; returns how many."""
        free = self.config.concurrency - len(self._inflight)
        if free <= 0:
            return 0
        claimed = await asyncio.to_thread(self._claim, free, dict(self._busy))
        for ev in claimed:
            self._busy[_origin(ev.url)] += 1
            task = asyncio.create_task(self._deliver(ev))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
        return len(claimed)

    def _claim(self, n: int, busy: dict[str, int]) -> list[_Claimed]:
        now = utcnow()
        lease = now + timedelta(seconds=self.config.timeout_s + 30)
        out: list[_Claimed] = []
        busy = dict(busy)
        with self.db.session() as s:
            due = list(
                s.scalars(
                    select(WebhookEvent)
                    .where(
                        WebhookEvent.status == PENDING,
                        WebhookEvent.next_attempt_at <= now,
                        or_(WebhookEvent.locked_until.is_(None), WebhookEvent.locked_until < now),
                    )
                    .order_by(WebhookEvent.next_attempt_at, WebhookEvent.id)
                    .limit(n * 8)
                )
            )
            for ev in due:
                if len(out) >= n:
                    break
                free = or_(WebhookEvent.locked_until.is_(None), WebhookEvent.locked_until < now)
                claim = (
                    update(WebhookEvent)
                    .where(WebhookEvent.id == ev.id, WebhookEvent.status == PENDING, free)
                    .execution_options(synchronize_session=False)
                )
                deadline = ev.deadline_at or ev.created_at + timedelta(
                    seconds=self.config.retry_window_s
                )
                if deadline <= now:
                    # Ended here even if no attempt ever got to record its failure.
                    s.execute(
                        claim.values(
                            status=FAILED,
                            next_attempt_at=None,
                            locked_until=None,
                            last_error=RETRY_WINDOW_CLOSED,
                        )
                    )
                    WEBHOOK_DELIVERIES.labels(event=ev.type, outcome="failed").inc()
                    continue
                origin = _origin(ev.url)
                # A slow or dead receiver holds at most `per_host` slots; the rest keep flowing.
                if busy.get(origin, 0) >= self.config.per_host:
                    continue
                attempt = ev.attempts + 1
                # The attempt is counted and its retry scheduled as it is claimed, not only when
                # it is recorded: an attempt that dies before recording (a crash, a bug) is then
                # still backed off and still ends with the window, and never sorts first again.
                retry_at = now + timedelta(
                    seconds=backoff(attempt, self.config.backoff_base_s, self.config.backoff_max_s)
                )
                taken = s.execute(
                    claim.values(
                        locked_until=lease,
                        attempts=WebhookEvent.attempts + 1,
                        next_attempt_at=max(retry_at, lease),
                    )
                ).rowcount  # type: ignore[attr-defined]
                if not taken:
                    continue  # another process took it
                busy[origin] = busy.get(origin, 0) + 1
                out.append(
                    _Claimed(
                        ev.id,
                        ev.tenant_id,
                        ev.type,
                        ev.tenant_event_id,
                        ev.url,
                        ev.payload,
                        attempt,
                        deadline,
                    )
                )
        return out

    async def _deliver(self, ev: _Claimed) -> None:
        origin = _origin(ev.url)
        try:
            async with self._slots:
                started = utcnow()
                t0 = time.monotonic()
                code, error = await self._attempt(ev)
                ms = int((time.monotonic() - t0) * 1000)
            await asyncio.to_thread(self._record, ev, started, code, error, ms)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("recording webhook attempt for %s failed", ev.id, exc_info=True)
        finally:
            self._busy[origin] -= 1
            if self._busy[origin] <= 0:
                del self._busy[origin]
            self._wake.set()  # a slot is free

    async def _attempt(self, ev: _Claimed) -> tuple[int | None, str | None]:
        """One POST; any failure is an outcome (status, error) to record, never an exception."""
        try:
            return await self._post(ev)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.warning("webhook attempt for %s failed unexpectedly", ev.id, exc_info=True)
            return None, f"{type(e).__name__}: {e}"

    async def _post(self, ev: _Claimed) -> tuple[int | None, str | None]:
        assert self._client is not None
        body = json.dumps(ev.payload, separators=(",", ":"), sort_keys=True)

        def keys() -> list[str]:
            with self.db.session() as s:
                ensure_secret(s, ev.tenant_id)
                return [x.secret for x in live_secrets(s, ev.tenant_id)]

        sigs = await asyncio.to_thread(keys)
        now = utcnow()
        headers = {
            "content-type": "application/json",
            "webhook-id": ev.id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": sign(sigs, ev.id, now, body),
        }
        try:
            async with asyncio.timeout(self.config.timeout_s):
                self.guard.check_syntax(ev.url)  # re-validated at delivery, as at submit
                r = await self._client.post(ev.url, content=body.encode(), headers=headers)
        except UrlRefused as e:
            return None, f"URL refused: {e}"
        except SSRFGuardError as e:
            return None, f"URL refused: {e}"[:500]
        except TimeoutError:
            return None, f"no answer within {self.config.timeout_s:g} s"
        except httpx.HTTPError as e:
            return None, f"{type(e).__name__}: {e}"[:500]
        if 200 <= r.status_code < 300:
            return r.status_code, None
        return r.status_code, f"the receiver answered {r.status_code}"

    def _record(
        self, ev: _Claimed, at: datetime, code: int | None, error: str | None, ms: int
    ) -> None:
        now = utcnow()
        attempts = ev.attempts  # counted when claimed
        error = _error_text(error) if error is not None else None
        values: dict[str, Any] = {
            "locked_until": None,
            "last_status_code": code,
            "last_error": error,
        }
        if error is None:
            values.update(status=DELIVERED, delivered_at=now, next_attempt_at=None)
            outcome = "delivered"
        else:
            nxt = now + timedelta(
                seconds=backoff(attempts, self.config.backoff_base_s, self.config.backoff_max_s)
            )
            if nxt > ev.deadline_at:
                values.update(status=FAILED, next_attempt_at=None)
                log.warning("webhook %s failed for good after %d attempts", ev.id, attempts)
                outcome = "failed"
            else:
                values.update(next_attempt_at=nxt)
                outcome = "retried"
        WEBHOOK_DELIVERIES.labels(event=ev.type, outcome=outcome).inc()
        with self.db.session() as s:
            s.add(
                WebhookAttempt(
                    id=new_id("wha"),
                    event_id=ev.id,
                    attempted_at=at,
                    status_code=code,
                    error=error,
                    duration_ms=ms,
                )
            )
            # Only the holder of this claim may settle it (a replay may have reset it since).
            s.execute(
                update(WebhookEvent)
                .where(WebhookEvent.id == ev.id, WebhookEvent.status == PENDING)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if error is None and ev.tenant_event_id is not None:
                s.execute(
                    update(TenantEvent)
                    .where(TenantEvent.id == ev.tenant_event_id, TenantEvent.delivered_at.is_(None))
                    .values(delivered_at=now)
                    .execution_options(synchronize_session=False)
                )
