"""The durable job store (SQLAlchemy 2): tenants, API keys, jobs. SQLite or PostgreSQL.

State changes are compare-and-set updates, terminal states never change, and reads never
write. The job row holds params, hashes and storage keys, never media bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    func,
    or_,
    select,
    update,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from engine.bounds import bounded_utc, is_id
from engine.errors import BadRequest, Conflict, NotFound, QuotaExceeded

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
)
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
ACTIVE = (QUEUED, RUNNING)
TERMINAL = (SUCCEEDED, FAILED, CANCELLED)


def utcnow() -> datetime:
    """Now, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores aware UTC datetimes; SQLite hands them back naive, so re-attach UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    pass


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    active_job_quota: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Bumped inside the submit transaction so concurrent submits of one tenant serialise.
    submit_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    # Per-tenant rate limits (`N/minute`); None: the settings' defaults.
    rate_limit_write: Mapped[str | None] = mapped_column(String(100), nullable=True)
    rate_limit_read: Mapped[str | None] = mapped_column(String(100), nullable=True)
    # Where account events (`budget.threshold`) are delivered; None: recorded, not sent.
    webhook_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    webhook_url_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    prefix: Mapped[str] = mapped_column(String(20))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[str] = mapped_column(String(200), default="jobs")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    template: Mapped[str] = mapped_column(String(40))
    template_version: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(12))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    graph: Mapped[dict[str, Any]] = mapped_column(JSON)
    graph_hash: Mapped[str] = mapped_column(String(64))
    seed: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    outputs: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    runner: Mapped[str | None] = mapped_column(String(20), nullable=True)
    call_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    worker_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    comfy_prompt_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    comfy_version: Mapped[str | None] = mapped_column(String(100), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    execution_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    metering: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The priced charge as settled (rate included), so a later price change rewrites nothing.
    cost: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    webhook_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)

    __table_args__ = (
        Index("ix_jobs_tenant_created", "tenant_id", "created_at", "id"),
        Index("ix_jobs_status_created", "status", "created_at"),
    )


class LedgerEntry(Base):
    """One charge: the priced container time of one attempt of one job. Append-only."""

    __tablename__ = "usage_ledger"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    attempt: Mapped[int] = mapped_column(Integer)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    template: Mapped[str] = mapped_column(String(40))
    template_version: Mapped[str] = mapped_column(String(20))
    gpu_class: Mapped[str] = mapped_column(String(40))
    gpu_type: Mapped[str] = mapped_column(String(40))
    payer: Mapped[str] = mapped_column(String(10))  # "tenant" | "platform"
    outcome: Mapped[str] = mapped_column(String(12))  # job status, or "retried"
    billable_ms: Mapped[int] = mapped_column(BigInteger)
    run_ms: Mapped[int] = mapped_column(BigInteger)
    execution_ms: Mapped[int] = mapped_column(BigInteger)
    queue_ms: Mapped[int] = mapped_column(BigInteger)
    cold_start_ms: Mapped[int] = mapped_column(BigInteger)
    usd_per_second: Mapped[str] = mapped_column(String(40))
    rate: Mapped[dict[str, Any]] = mapped_column(JSON)
    usd_micros: Mapped[int] = mapped_column(BigInteger)
    # UTC calendar keys, stored so grouping and monthly budgets are portable SQL.
    day: Mapped[str] = mapped_column(String(10))
    month: Mapped[str] = mapped_column(String(7))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        UniqueConstraint("job_id", "attempt", name="uq_usage_ledger_job_attempt"),
        Index("ix_usage_ledger_tenant_month", "tenant_id", "month"),
        Index("ix_usage_ledger_created", "created_at"),
        Index("ix_usage_ledger_template_created", "template", "created_at"),
    )


class TenantBudget(Base):
    """A tenant's optional monthly budget and its soft threshold (a fraction of it)."""

    __tablename__ = "tenant_budgets"
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    monthly_usd_micros: Mapped[int] = mapped_column(BigInteger)
    threshold: Mapped[str | None] = mapped_column(String(12), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class TenantEvent(Base):
    """An account event of a tenant (not of a job), e.g. `budget.threshold`: the record of it
    happening, once per `dedupe_key`. Its delivery, when the tenant has a webhook endpoint, is a
    `WebhookEvent` pointing here; `delivered_at` is set when that delivery succeeds."""

    __tablename__ = "tenant_events"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    type: Mapped[str] = mapped_column(String(60))
    # What makes the event happen once: the month for budget events.
    dedupe_key: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        UniqueConstraint("tenant_id", "type", "dedupe_key", name="uq_tenant_events_once"),
        Index("ix_tenant_events_undelivered", "delivered_at", "created_at"),
    )


class IdempotencyKey(Base):
    """A remembered `Idempotency-Key`: one per tenant and key, enforced by the database."""

    __tablename__ = "idempotency_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    route: Mapped[str] = mapped_column(String(200))
    job_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    response: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (UniqueConstraint("tenant_id", "key", name="uq_idempotency_tenant_key"),)


class WebhookSecret(Base):
    """A tenant's `whsec_` signing secret; a rotated-out one signs until `expires_at`."""

    __tablename__ = "webhook_secrets"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    secret: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class WebhookEvent(Base):
    """The outbox: one row per event, written in the transaction of the state change.

    A job event has `job_id` (delivered to the job's `webhook_url`); an account event has
    `tenant_event_id` instead (delivered to the tenant's webhook endpoint).
    """

    __tablename__ = "webhook_events"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # the `webhook-id`
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), index=True, nullable=True)
    tenant_event_id: Mapped[str | None] = mapped_column(
        ForeignKey("tenant_events.id"), index=True, unique=True, nullable=True
    )
    type: Mapped[str] = mapped_column(String(40))
    url: Mapped[str] = mapped_column(String(2048))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(12))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Retried until then; None: `created_at` plus the dispatcher's retry window.
    deadline_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)

    __table_args__ = (Index("ix_webhook_events_due", "status", "next_attempt_at"),)


class WebhookAttempt(Base):
    """One delivery attempt of an event: the delivery log."""

    __tablename__ = "webhook_attempts"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("webhook_events.id"), index=True)
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime())
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    duration_ms: Mapped[int] = mapped_column(Integer)


class RateLimitCounter(Base):
    """Fixed-window counters for the SQL rate-limit storage (shared by every API process)."""

    __tablename__ = "rate_limit_counters"
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[float] = mapped_column(Float)  # unix seconds, as `limits` wants


@dataclass(frozen=True)
class Principal:
    """Who is calling: resolved from the API key, never from the request body."""

    tenant_id: str
    tenant_name: str
    key_id: str
    scopes: frozenset[str]
    rate_limit_write: str | None = None
    rate_limit_read: str | None = None


def insert_ignore(s: Session, model: type[Base], **values: Any) -> bool:
    """Insert a row unless it breaks a unique constraint; True if it was written."""
    if s.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt: Any = pg_insert(model).values(**values).on_conflict_do_nothing()
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(model).values(**values).on_conflict_do_nothing()
    # ON CONFLICT DO NOTHING, not a caught IntegrityError: the caller's transaction (which may
    # also move the job to its terminal state) must survive a duplicate. RETURNING tells
    # whether a row was written (psycopg's rowcount is not reliable here).
    pk = sa_inspect(model).primary_key
    return s.execute(stmt.returning(*pk)).first() is not None


def new_id(prefix: str) -> str:
    """A random id with a readable prefix."""
    return f"{prefix}_{uuid.uuid4().hex}"


def hash_key(token: str) -> str:
    """API keys are stored as sha256; they are 32 random bytes, so no slow hash is needed."""
    return hashlib.sha256(token.encode()).hexdigest()


class Database:
    """An engine plus a session factory, for SQLite (embedded) or PostgreSQL."""

    def __init__(self, url: str) -> None:
        self.url = url
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if url.startswith("sqlite"):
            if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs.update(pool_size=10, max_overflow=10, pool_timeout=10)
        self.engine: Engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
            # Take the write lock at BEGIN so check-then-write transactions serialise.
            event.listen(self.engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        """True for the embedded SQLite store."""
        return self.url.startswith("sqlite")

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: commit on success, roll back on error."""
        with self.sessions() as s, s.begin():
            yield s

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision."""
        from engine.migrate import upgrade

        upgrade(self)

    def ping(self) -> None:
        """Raise if the database cannot answer."""
        with self.engine.connect() as c:
            c.exec_driver_sql("SELECT 1")

    def dispose(self) -> None:
        """Close pooled connections."""
        self.engine.dispose()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


# ---- tenants and keys -------------------------------------------------------------------


def ensure_tenant(s: Session, name: str) -> Tenant:
    """The tenant with this name, created if new."""
    t = s.scalar(select(Tenant).where(Tenant.name == name))
    if t is None:
        t = Tenant(id=new_id("ten"), name=name, created_at=utcnow(), submit_seq=0)
        s.add(t)
        s.flush()
    return t


def create_key(
    s: Session, tenant_name: str, scopes: Sequence[str] = ("jobs",)
) -> tuple[str, ApiKey]:
    """Create an API key; the token is returned once and only its hash is kept."""
    tenant = ensure_tenant(s, tenant_name)
    token = "sk_" + secrets.token_urlsafe(32)
    key = ApiKey(
        id=new_id("key"),
        tenant_id=tenant.id,
        prefix=token[:10],
        key_hash=hash_key(token),
        scopes=" ".join(sorted(set(scopes))),
        created_at=utcnow(),
    )
    s.add(key)
    s.flush()
    return token, key


def set_tenant_rate_limits(
    s: Session, tenant_name: str, write: str | None, read: str | None
) -> Tenant:
    """Set (or with None, clear back to the defaults) a tenant's rate limits."""
    tenant = ensure_tenant(s, tenant_name)
    tenant.rate_limit_write = write
    tenant.rate_limit_read = read
    s.flush()
    return tenant


def list_keys(s: Session, tenant_name: str | None = None) -> list[tuple[ApiKey, Tenant]]:
    """Keys with their tenants, newest first."""
    q = select(ApiKey, Tenant).join(Tenant, Tenant.id == ApiKey.tenant_id)
    if tenant_name:
        q = q.where(Tenant.name == tenant_name)
    return [(k, t) for k, t in s.execute(q.order_by(ApiKey.created_at.desc())).all()]


def revoke_key(s: Session, key_id: str) -> bool:
    """Revoke a key by id; False if there is no such active key."""
    r = s.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return bool(r.rowcount)  # type: ignore[attr-defined]


def resolve_key(s: Session, token: str) -> Principal | None:
    """The principal for a bearer token, or None (unknown or revoked)."""
    digest = hash_key(token)
    row = s.execute(
        select(ApiKey, Tenant)
        .join(Tenant, Tenant.id == ApiKey.tenant_id)
        .where(ApiKey.key_hash == digest)
    ).first()
    if row is None:
        return None
    key, tenant = row
    # The lookup is by hash; compare again in constant time so timing says nothing.
    if not hmac.compare_digest(key.key_hash, digest) or key.revoked_at is not None:
        return None
    return Principal(
        tenant.id,
        tenant.name,
        key.id,
        frozenset(key.scopes.split()),
        tenant.rate_limit_write,
        tenant.rate_limit_read,
    )


# ---- jobs ---------------------------------------------------------------------------------


def insert_job(s: Session, job: Job, quota: int) -> Job:
    """Insert a queued job unless the tenant already has `quota` active jobs."""
    # Lock the tenant row first: concurrent submits of one tenant then count in turn.
    s.execute(
        update(Tenant).where(Tenant.id == job.tenant_id).values(submit_seq=Tenant.submit_seq + 1)
    )
    tenant = s.get(Tenant, job.tenant_id)
    limit = tenant.active_job_quota if tenant and tenant.active_job_quota is not None else quota
    active = s.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.tenant_id == job.tenant_id, Job.status.in_(ACTIVE))
    )
    if (active or 0) >= limit:
        raise QuotaExceeded(
            f"This tenant has {active} active jobs; the limit is {limit}. Retry when one finishes.",
            extra={"active_jobs": active, "limit": limit},
            headers={"Retry-After": "5"},
        )
    s.add(job)
    s.flush()
    return job


def get_job(s: Session, tenant_id: str, job_id: str) -> Job:
    """A tenant's job; another tenant's job is indistinguishable from a missing one."""
    job = s.scalar(select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id))
    if job is None:
        raise NotFound(f"No job {job_id}.")
    return job


def encode_cursor(row: Job | TenantEvent) -> str:
    """An opaque cursor after this row (a job, an account event) in newest-first order."""
    raw = f"{row.created_at.isoformat()}|{row.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (created_at, id) an `encode_cursor` cursor names; 400 naming `cursor` if bad."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ts, row_id = raw.split("|", 1)
        # What a cursor decodes to goes into a query: held to the edge's rules, as a path id is.
        if not is_id(row_id):
            raise ValueError("not an id")
        return bounded_utc(datetime.fromisoformat(ts)), row_id
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("The cursor is not valid.", extra={"field": "cursor"}) from None


def list_jobs(
    s: Session,
    tenant_id: str,
    *,
    limit: int,
    cursor: str | None = None,
    status: str | None = None,
    template: str | None = None,
) -> tuple[list[Job], str | None]:
    """A page of a tenant's jobs, newest first, and the cursor of the next page."""
    q = select(Job).where(Job.tenant_id == tenant_id)
    if status:
        q = q.where(Job.status == status)
    if template:
        q = q.where(Job.template == template)
    if cursor:
        ts, job_id = decode_cursor(cursor)
        q = q.where(or_(Job.created_at < ts, (Job.created_at == ts) & (Job.id < job_id)))
    rows = list(s.scalars(q.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)))
    nxt = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], nxt


def transition(s: Session, job_id: str, from_states: Sequence[str], to: str, **values: Any) -> bool:
    """Compare-and-set a job's status; False if it was not in one of `from_states`.

    A move to a terminal state also writes the job's webhook event to the outbox, in this same
    transaction: the event exists if and only if the state change committed.
    """
    r = s.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(list(from_states)))
        .values(status=to, **values)
        .execution_options(synchronize_session=False)
    )
    moved = bool(r.rowcount)  # type: ignore[attr-defined]
    if moved and to in TERMINAL:
        job = s.get(Job, job_id, populate_existing=True)
        if job is not None and job.webhook_url:
            s.add(terminal_event(job))
    return moved


def job_event_payload(job: Job, now: datetime) -> dict[str, Any]:
    """The Standard Webhooks body of a job's terminal event (no URLs: they would expire)."""
    return {
        "type": f"job.{job.status}",
        "timestamp": now.isoformat().replace("+00:00", "Z"),
        "data": {
            "id": job.id,
            "object": "job",
            "status": job.status,
            "template": job.template,
            "template_version": job.template_version,
            "error": job.error,
            "outputs": [
                {k: o[k] for k in ("content_type", "width", "height", "bytes")}
                for o in job.outputs or []
            ],
            "created_at": job.created_at.isoformat(),
            "finished_at": job.finished_at.isoformat() if job.finished_at else None,
            "url": f"/v1/jobs/{job.id}",
        },
    }


def terminal_event(job: Job) -> WebhookEvent:
    """The outbox row announcing a job's terminal state (the dispatcher sets its deadline)."""
    now = utcnow()
    return WebhookEvent(
        id=new_id("msg"),
        tenant_id=job.tenant_id,
        job_id=job.id,
        type=f"job.{job.status}",
        url=job.webhook_url or "",
        payload=job_event_payload(job, now),
        status="pending",
        attempts=0,
        created_at=now,
        next_attempt_at=now,
    )


def account_event_payload(ev: TenantEvent, tenant: Tenant) -> dict[str, Any]:
    """The Standard Webhooks body of an account event: the event's record under `data`."""
    data = {k: v for k, v in ev.payload.items() if k not in ("type", "tenant_id")}
    return {
        "type": ev.type,
        "timestamp": ev.created_at.isoformat().replace("+00:00", "Z"),
        "data": {
            "id": ev.id,
            "object": "event",
            "tenant": tenant.name,
            **data,
            "url": f"/v1/events/{ev.id}",
        },
    }


def account_delivery(ev: TenantEvent, tenant: Tenant, url: str) -> WebhookEvent:
    """The outbox row delivering an account event to the tenant's webhook endpoint."""
    now = utcnow()
    return WebhookEvent(
        id=new_id("msg"),
        tenant_id=tenant.id,
        job_id=None,
        tenant_event_id=ev.id,
        type=ev.type,
        url=url,
        payload=account_event_payload(ev, tenant),
        status="pending",
        attempts=0,
        created_at=now,
        next_attempt_at=now,
    )


def set_fields_if(s: Session, job_id: str, status: str, **values: Any) -> bool:
    """Update fields only while the job is still in `status`."""
    r = s.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == status)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(r.rowcount)  # type: ignore[attr-defined]


def claim_next(s: Session, worker_id: str, runner: str) -> Job | None:
    """Take the oldest queued job for this runner (CAS queued -> running)."""
    for _ in range(5):
        job_id = s.scalar(
            select(Job.id)
            .where(Job.status == QUEUED, or_(Job.runner == runner, Job.runner.is_(None)))
            .order_by(Job.created_at, Job.id)
            .limit(1)
        )
        if job_id is None:
            return None
        job = claim_job(s, job_id, worker_id)
        if job is not None:
            return job
    raise Conflict("could not claim a job")


def claim_job(s: Session, job_id: str, worker_id: str) -> Job | None:
    """Take one specific queued job (CAS queued -> running); None if it is not queued."""
    now = utcnow()
    if not transition(
        s,
        job_id,
        [QUEUED],
        RUNNING,
        started_at=now,
        heartbeat_at=now,
        worker_id=worker_id,
        attempts=Job.attempts + 1,
        progress=0.0,
    ):
        return None
    s.flush()
    return s.get(Job, job_id, populate_existing=True)
