"""The job lifecycle in one place: how a job is cancelled, claimed, moved on, finished, re-queued
and settled, and how anyone waits for it to move.

The API's routes, the runners, the Modal worker and the supervisor call these; none of them
writes job state itself. Each transition is a compare-and-set in `engine.jobs.store` that
records a change (`engine.jobs.events`), so every state change reaches its waiters the moment
its transaction commits.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import String, bindparam, exists, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from engine.catalog.catalog import Catalog
from engine.db.database import Database, OneRow, SharedRead, utcnow
from engine.db.tables import Job, Tenant, TenantBudget
from engine.errors import Unauthorized
from engine.jobs.events import JOB, Watch
from engine.jobs.states import CANCELLED, QUEUED, RUNNING, TERMINAL
from engine.jobs.store import (
    JobRow,
    claim_job,
    claim_next,
    end_running,
    get_job,
    read_view,
    set_fields_if,
    transition,
)

# The worker's look at the queue before it claims, re-exported for the runners.
from engine.jobs.store import any_queued as any_queued

MAX_WAIT_S = 60  # the longest `GET /v1/jobs/{id}?wait=` holds a request


# ---- reading and waiting -------------------------------------------------------------------


def load(s: Session, job_id: str) -> Job | None:
    """A job by id, whoever owns it (workers and the supervisor)."""
    return s.get(Job, job_id)


def status_of(s: Session, job_id: str) -> str | None:
    """A job's status, or None if there is no such job."""
    job = s.get(Job, job_id)
    return job.status if job else None


async def wait_terminal(db: Database, tenant_id: str, job_id: str, timeout_s: float) -> JobRow:
    """The tenant's job once it is terminal, or as it is after `timeout_s` seconds.

    One read, then one more per state change of this job (pushed, not polled); progress
    updates do not wake it.
    """
    deadline = time.monotonic() + timeout_s
    with db.events.watch(JOB, job_id) as w:
        job = await read_view(db, tenant_id, job_id)
        while job.status not in TERMINAL:
            left = deadline - time.monotonic()
            if left <= 0 or not await w.wait(left):
                break
            if any(c.status in TERMINAL or c.status is None for c in w.drain()):
                job = await read_view(db, tenant_id, job_id)
        return job


async def follow(
    db: Database, tenant_id: str, job_id: str, *, first: JobRow, watch: Watch, limit_s: float
) -> AsyncIterator[JobRow]:
    """`first`, then the job again after each change, until it is terminal (or `limit_s`
    passes). One read per change, none per interval. `watch` (the job's, from
    `db.events.watch`) was made before `first` was read, so a change between that read and
    this call is not lost: it wakes the first wait at once."""
    deadline = time.monotonic() + limit_s
    job = first
    while True:
        yield job
        if job.status in TERMINAL:
            return
        left = deadline - time.monotonic()
        if left <= 0:
            return
        if await watch.wait(min(left, 15.0)):
            watch.drain()
            job = await read_view(db, tenant_id, job_id)


# ---- the customer's transitions ------------------------------------------------------------


# Built once: building the statement cost more than running it. Read as a `OneRow` (on
# SQLite on the connection's own handle, on PostgreSQL on the event loop's async connection):
# SQLAlchemy's execution around it cost more than the statement. On PostgreSQL the
# admission reads of concurrent submits share statements (`SharedRead`), one tenant's
# concurrent submits one row.
_ADMISSION_COLUMNS = select(
    Tenant.id,
    Tenant.active_job_quota,
    Tenant.active_jobs,
    exists().where(TenantBudget.tenant_id == Tenant.id).label("budgeted"),
)
_ADMISSION = SharedRead(
    OneRow(_ADMISSION_COLUMNS.where(Tenant.id == bindparam("tenant_id", type_=String()))),
    OneRow(
        _ADMISSION_COLUMNS.where(
            Tenant.id == func.any(bindparam("tenant_ids", type_=ARRAY(String())))
        )
    ),
    key="tenant_id",
    keys="tenant_ids",
    column="id",
)


async def admit(db: Database, tenant_id: str, default_quota: int) -> None:
    """The cheap refusals before any work (a fetch, a render, a stored input): the tenant's
    active-job quota (429) and monthly budget (402). One statement (the tenant's row: its kept
    count of active jobs, not a count of its jobs) for a tenant without a budget; `create`
    checks the quota again, under the tenant's lock, as it stores the job."""
    from engine.billing.budgets import check_budget
    from engine.errors import QuotaExceeded

    row = await db.shared(_ADMISSION, tenant_id)
    if row is None:
        return  # no such tenant: its key would not have resolved; the insert refuses it
    quota = row.active_job_quota if row.active_job_quota is not None else default_quota
    if row.active_jobs >= quota:
        raise QuotaExceeded(
            f"This tenant already has the maximum of {quota} active jobs. Retry when one finishes.",
            extra={"limit": quota},
            headers={"Retry-After": "5"},
        )
    if row.budgeted:
        await db.read(check_budget, tenant_id)


@dataclass(frozen=True)
class Remember:
    """An `Idempotency-Key` to remember with the job it created."""

    key: str
    fingerprint: str
    route: str
    ttl_s: int


def create(s: Session, job: Job, quota: int, remember: Remember | None = None) -> Job:
    """Store a new queued job under the tenant's quota (its `queued` event wakes a worker)."""
    from engine.jobs import idempotency as idem
    from engine.jobs.insert import insert_job

    if remember is not None:
        # First, so a concurrent twin fails here (unique index) before any quota check.
        idem.remember(
            s,
            job.tenant_id,
            remember.key,
            remember.fingerprint,
            remember.route,
            remember.ttl_s,
            job_id=job.id,
        )
    return insert_job(s, job, quota)


async def store_new(
    db: Database, values: dict[str, Any], quota: int, remember: Remember | None
) -> JobRow:
    """`create` from async code, for a new job's column `values`; the job as stored, as the
    read paths show it. A plain submit (no `Idempotency-Key`) stores it with no ORM and no
    thread hop, together with the other plain submits of its turn of the event loop: on SQLite
    in a prepared transaction on the event loop's own connection
    (`Database.prepared_transaction`), on PostgreSQL in one statement on psycopg's async
    connection (`insert.insert_job_in_turn`). Otherwise, and when that way cannot be taken at
    the moment, `create` as a short write."""
    from engine.db.database import NoConnection
    from engine.jobs.insert import insert_job_in_turn, insert_job_prepared
    from engine.jobs.store import stored_row

    if remember is None:
        try:
            if db.is_sqlite:
                await db.prepared_transaction(lambda tx: insert_job_prepared(tx, values, quota))
            else:
                await insert_job_in_turn(db, values, quota)
            return stored_row(values)
        except NoConnection:
            pass
    await db.write(create, Job(**values), quota, remember)
    return stored_row(values)


def save_call_id(s: Session, job_id: str, call_id: str) -> None:
    """Record where a runner dispatched the job, unless a worker already recorded its own."""
    from sqlalchemy import update

    s.execute(update(Job).where(Job.id == job_id, Job.call_id.is_(None)).values(call_id=call_id))


def cancel(s: Session, tenant_id: str, job_id: str) -> tuple[Job, str]:
    """Cancel the tenant's job if it is queued or running; returns the job and what it was
    (`queued`, `running`, or the terminal status it already had)."""
    job = get_job(s, tenant_id, job_id)
    for was in (QUEUED, RUNNING):
        if job.status == was and transition(
            s, job.id, [was], CANCELLED, finished_at=utcnow(), cancel_requested=True
        ):
            return job, was
    return job, job.status


# ---- the worker's transitions --------------------------------------------------------------


def claim(s: Session, worker_id: str, runner: str) -> Job | None:
    """The oldest queued job for this runner, now running here, read in the claim's own
    transaction (the worker needs it whole, graph included); None if none."""
    return claim_next(s, worker_id, runner)


def claim_one(s: Session, job_id: str, worker_id: str) -> Job | None:
    """Take one specific queued job (a Modal input names it); None if it is not queued."""
    return claim_job(s, job_id, worker_id)


def set_running(s: Session, /, job_id: str, **values: Any) -> bool:
    """Update a running job's fields (progress, prompt id, heartbeat); False once it is not
    running any more."""
    return set_fields_if(s, job_id, RUNNING, **values)


def beat(s: Session, job_id: str) -> str | None:
    """A heartbeat for a running job; returns its status when it is not running any more."""
    if set_fields_if(s, job_id, RUNNING, heartbeat_at=utcnow()):
        return None
    return status_of(s, job_id)


@dataclass(frozen=True)
class Charge:
    """What settling an attempt needs besides the job."""

    catalog: Catalog
    attempt: int
    metering: dict[str, Any]
    gpu_type: str | None


def finish(s: Session, job_id: str, to: str, charge: Charge, values: dict[str, Any]) -> bool:
    """Move the running job to `to` and settle its charge in one transaction.

    When the move loses the race (a cancel or a supervisor timeout got there first), the charge
    for what the attempt used is still settled, against the state the job is in.
    """
    from engine.billing.ledger import payer_of, settle, settle_current

    fresh = end_running(s, job_id, to, metering=charge.metering, **values)
    if fresh is not None:
        settle(
            s,
            fresh,
            catalog=charge.catalog,
            attempt=charge.attempt,
            metering=charge.metering,
            payer=payer_of(to, values.get("error")),
            outcome=to,
            gpu_type=charge.gpu_type,
        )
        return True
    settle_current(
        s,
        job_id,
        catalog=charge.catalog,
        attempt=charge.attempt,
        metering=charge.metering,
        gpu_type=charge.gpu_type,
    )
    return False


def settle_as_is(s: Session, job_id: str, charge: Charge) -> None:
    """Settle an attempt whose job another process already finished (a cancel, a timeout)."""
    from engine.billing.ledger import settle_current

    settle_current(
        s,
        job_id,
        catalog=charge.catalog,
        attempt=charge.attempt,
        metering=charge.metering,
        gpu_type=charge.gpu_type,
    )


def requeue(s: Session, job: Job, charge: Charge) -> bool:
    """Re-queue after an engine fault; the lost attempt is platform cost, not the tenant's."""
    from engine.billing.ledger import PLATFORM, RETRIED, settle

    if not transition(s, job.id, [RUNNING], QUEUED, started_at=None, worker_id=None, progress=0.0):
        return False
    settle(
        s,
        job,
        catalog=charge.catalog,
        attempt=charge.attempt,
        metering=charge.metering,
        payer=PLATFORM,
        outcome=RETRIED,
        gpu_type=charge.gpu_type,
    )
    return True


def rerun_in_batch(s: Session, job: Job, charge: Charge) -> bool:
    """A batch's lost attempt, for a job that broke nothing: charged to the platform, and the
    job's next attempt opened in place (it stays running, to run again without the culprit)."""
    from engine.billing.ledger import PLATFORM, RETRIED, settle

    if not set_fields_if(
        s, job.id, RUNNING, attempts=job.attempts + 1, progress=0.0, heartbeat_at=utcnow()
    ):
        return False
    settle(
        s,
        job,
        catalog=charge.catalog,
        attempt=charge.attempt,
        metering=charge.metering,
        payer=PLATFORM,
        outcome=RETRIED,
        gpu_type=charge.gpu_type,
    )
    return True


def redispatched(s: Session, job_id: str, call_id: str) -> bool:
    """Record the new call id of a queued job a runner dispatched again."""
    return set_fields_if(s, job_id, QUEUED, call_id=call_id)


# ---- the supervisor's transitions ----------------------------------------------------------


def expire(s: Session, job_id: str, was: str, error: dict[str, Any], now: datetime) -> bool:
    """Fail a job past its queue (`was` queued) or run (`was` running) limit."""
    from engine.jobs.states import FAILED

    return transition(s, job_id, [was], FAILED, error=error, finished_at=now)


def recover_lost(
    s: Session,
    job: Job,
    *,
    catalog: Catalog,
    error: dict[str, Any],
    max_attempts: int,
    now: datetime,
) -> str | None:
    """A running job whose worker stopped beating: queued again while it has attempts left,
    failed otherwise, and the lost attempt charged to the platform from database times.

    Returns `requeued` or `worker_lost`, or None when the job moved meanwhile.
    """
    from engine.billing.ledger import PLATFORM, RETRIED, settle, wall_clock_metering
    from engine.jobs.states import FAILED

    lost = wall_clock_metering(job)
    if job.attempts < max_attempts and transition(
        s, job.id, [RUNNING], QUEUED, started_at=None, worker_id=None, progress=0.0
    ):
        outcome, what = RETRIED, "requeued"
    elif transition(s, job.id, [RUNNING], FAILED, error=error, finished_at=now, metering=lost):
        outcome, what = FAILED, "worker_lost"
    else:
        return None
    # The lost attempt's wall-clock time is the platform's, never the tenant's.
    settle(
        s,
        job,
        catalog=catalog,
        attempt=job.attempts,
        metering=lost,
        payer=PLATFORM,
        outcome=outcome,
        now=now,
    )
    return what


# ---- signed stream URLs (a browser's EventSource cannot send Authorization) ------------------


def stream_token(secret: bytes, job_id: str, tenant_id: str, key_id: str, expires_at: int) -> str:
    """A token that lets its bearer follow one job's events until `expires_at` (unix s)."""
    body = f"{job_id}.{tenant_id}.{key_id}.{expires_at}"
    sig = hmac.new(secret, body.encode(), hashlib.sha256).digest()
    return body + "." + base64.urlsafe_b64encode(sig).decode().rstrip("=")


def verify_stream_token(secret: bytes, token: str, job_id: str) -> tuple[str, str]:
    """The (tenant id, key id) a valid token for this job carries; 401 otherwise."""
    parts = token.split(".")
    bad = Unauthorized("The stream token is not valid for this job, or it has expired.")
    if len(parts) != 5:
        raise bad
    tok_job, tenant_id, key_id, exp, _sig = parts
    if not hmac.compare_digest(stream_token(secret, tok_job, tenant_id, key_id, _int(exp)), token):
        raise bad
    if tok_job != job_id or _int(exp) < time.time():
        raise bad
    return tenant_id, key_id


def _int(s: str) -> int:
    return int(s) if s.isdigit() and len(s) <= 12 else -1
