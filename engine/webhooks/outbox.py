"""What the webhook outbox holds: the Standard Webhooks bodies of job and account events, and
the outbox rows that deliver them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row

from engine.db.database import new_id, utcnow
from engine.db.tables import (
    Job,
    Tenant,
    TenantEvent,
    WebhookEvent,
)


def job_event_payload(job: Job | Row[Any], now: datetime) -> dict[str, Any]:
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
            "batch": (
                {"id": job.batch_id, "size": job.batch_size}
                if job.batch_id and job.batch_size
                else None
            ),
        },
    }


def terminal_event(job: Job | Row[Any]) -> WebhookEvent:
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
