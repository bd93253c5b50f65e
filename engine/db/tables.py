"""The tables of the job store (SQLAlchemy 2 declarative models): tenants, keys, jobs, the
ledger, budgets, account events, idempotency keys and the webhook outbox.

The job row holds params, hashes and storage keys, never media bytes."""

from __future__ import annotations

from datetime import UTC, datetime
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
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


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
    # The tenant's queued and running jobs, kept in step by the transactions that create a job
    # and that end one (`engine.jobs.store`): admission reads it instead of counting the jobs.
    active_jobs: Mapped[int] = mapped_column(Integer, server_default="0")
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
    # The batched prompt the last attempt ran in, and how many jobs it carried (1: alone).
    batch_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    batch_size: Mapped[int | None] = mapped_column(Integer, nullable=True)

    __table_args__ = (
        Index("ix_jobs_tenant_created", "tenant_id", "created_at", "id"),
        Index("ix_jobs_status_created", "status", "created_at"),
        # The active-job count of every submit (quota): an index-only count, however many
        # finished jobs the tenant has.
        Index("ix_jobs_tenant_status", "tenant_id", "status"),
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
