"""Idempotency-Key: one remembered request per tenant and key, enforced by a unique index."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from engine.db.database import new_id, utcnow
from engine.db.tables import IdempotencyKey
from engine.errors import InvalidParams

HEADER = "Idempotency-Key"


class IdempotencyKeyReused(InvalidParams):
    """The key was already used with a different request."""

    type, title = "idempotency_key_reused", "Idempotency-Key reused"

    def __init__(self) -> None:
        msg = "this key was already used with a different request; use a new key"
        super().__init__([{"field": HEADER, "message": msg}], detail=f"{HEADER}: {msg}")


def fingerprint(route: str, payload: Any) -> str:
    """A stable hash of what the request asks for (route and canonical body)."""
    canon = json.dumps({"route": route, "body": payload}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


def find(s: Session, tenant_id: str, key: str, ttl_s: float) -> IdempotencyKey | None:
    """The live record for this tenant's key, if any (older than the TTL counts as absent)."""
    return s.scalar(
        select(IdempotencyKey).where(
            IdempotencyKey.tenant_id == tenant_id,
            IdempotencyKey.key == key,
            IdempotencyKey.created_at >= utcnow() - timedelta(seconds=ttl_s),
        )
    )


def check(rec: IdempotencyKey | None, fp: str) -> IdempotencyKey | None:
    """The record when it matches the request; None when there is none; 422 when it differs."""
    if rec is not None and rec.fingerprint != fp:
        raise IdempotencyKeyReused()
    return rec


def remember(
    s: Session,
    tenant_id: str,
    key: str,
    fp: str,
    route: str,
    ttl_s: float,
    *,
    job_id: str | None = None,
    status_code: int | None = None,
    response: dict[str, Any] | None = None,
) -> None:
    """Record the key in the caller's transaction; a concurrent twin raises IntegrityError."""
    s.execute(
        delete(IdempotencyKey).where(
            IdempotencyKey.tenant_id == tenant_id,
            IdempotencyKey.key == key,
            IdempotencyKey.created_at < utcnow() - timedelta(seconds=ttl_s),
        )
    )
    s.add(
        IdempotencyKey(
            id=new_id("idem"),
            tenant_id=tenant_id,
            key=key,
            fingerprint=fp,
            route=route,
            job_id=job_id,
            status_code=status_code,
            response=response,
            created_at=utcnow(),
        )
    )
    s.flush()
