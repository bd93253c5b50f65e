"""Webhook routes: the signing secret and its rotation, a job's delivery log, and replay."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Response
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api import schemas
from api.deps import IdempotencyKeyHeader, PrincipalDep, ServicesDep
from api.routes.jobs import PROBLEMS
from api.services import Services
from engine import idempotency as idem
from engine import webhooks
from engine.store import Principal, WebhookEvent

router = APIRouter(prefix="/v1", tags=["webhooks"])


async def run_idempotent(
    services: Services,
    principal: Principal,
    key: str | None,
    route: str,
    action: Callable[[Session], dict[str, Any]],
) -> tuple[dict[str, Any], bool]:
    """Run `action` once per Idempotency-Key, its answer remembered in the same transaction."""
    ttl = services.settings.idempotency_ttl_s
    fp = idem.fingerprint(route, {})

    def run() -> tuple[dict[str, Any], bool]:
        with services.db.session() as s:
            if key:
                rec = idem.check(idem.find(s, principal.tenant_id, key, ttl), fp)
                if rec is not None and rec.response is not None:
                    return rec.response, True
            out = action(s)
            if key:
                idem.remember(s, principal.tenant_id, key, fp, route, ttl, response=out)
            return out, False

    def earlier() -> dict[str, Any] | None:
        with services.db.session() as s:
            rec = idem.check(idem.find(s, principal.tenant_id, key or "", ttl), fp)
            return rec.response if rec else None

    try:
        return await asyncio.to_thread(run)
    except IntegrityError:
        if not key:
            raise
        out = await asyncio.to_thread(earlier)  # a concurrent twin won
        if out is None:
            raise
        return out, True


def _secret_view(s: Session, tenant_id: str) -> dict[str, Any]:
    current = webhooks.ensure_secret(s, tenant_id)
    others = [x.expires_at for x in webhooks.live_secrets(s, tenant_id) if x.id != current.id]
    prev = max((x for x in others if x is not None), default=None)
    return schemas.WebhookSecret(
        secret=current.secret, created_at=current.created_at, previous_expires_at=prev
    ).model_dump(mode="json")


@router.get("/webhook-secret", response_model=schemas.WebhookSecret, name="get_webhook_secret")
async def get_webhook_secret(principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    """The tenant's current webhook signing secret (made on first use)."""

    def load() -> dict[str, Any]:
        with services.db.session() as s:
            return _secret_view(s, principal.tenant_id)

    return await asyncio.to_thread(load)


@router.post(
    "/webhook-secret/rotate",
    response_model=schemas.WebhookSecret,
    name="rotate_webhook_secret",
    responses=PROBLEMS,
)
async def rotate_webhook_secret(
    response: Response,
    principal: PrincipalDep,
    services: ServicesDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> dict[str, Any]:
    """Make a new signing secret; the old one keeps signing during the overlap."""
    overlap = services.settings.webhook_secret_overlap_s

    def action(s: Session) -> dict[str, Any]:
        webhooks.rotate_secret(s, principal.tenant_id, overlap)
        return _secret_view(s, principal.tenant_id)

    out, replayed = await run_idempotent(
        services, principal, idempotency_key, "POST /v1/webhook-secret/rotate", action
    )
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return out


def _log_view(s: Session, tenant_id: str, job_id: str) -> dict[str, Any]:
    data = []
    for ev, attempts in webhooks.deliveries(s, tenant_id, job_id):
        data.append(_delivery(ev, attempts))
    return schemas.WebhookDeliveryList(data=data).model_dump(mode="json")


def _delivery(ev: WebhookEvent, attempts: list[Any]) -> schemas.WebhookDelivery:
    return schemas.WebhookDelivery(
        id=ev.id,
        type=ev.type,
        url=ev.url,
        status=ev.status,
        attempts=[
            schemas.WebhookAttempt(
                attempted_at=a.attempted_at,
                status_code=a.status_code,
                error=a.error,
                duration_ms=a.duration_ms,
            )
            for a in attempts
        ],
        created_at=ev.created_at,
        next_attempt_at=ev.next_attempt_at,
        delivered_at=ev.delivered_at,
    )


@router.get(
    "/jobs/{job_id}/webhooks",
    response_model=schemas.WebhookDeliveryList,
    name="list_job_webhooks",
    responses=PROBLEMS,
)
async def list_job_webhooks(
    job_id: str, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """A job's webhook deliveries and every attempt (the delivery log)."""

    def load() -> dict[str, Any]:
        with services.db.session() as s:
            return _log_view(s, principal.tenant_id, job_id)

    return await asyncio.to_thread(load)


@router.post(
    "/jobs/{job_id}/webhooks/replay",
    response_model=schemas.WebhookDeliveryList,
    status_code=202,
    name="replay_job_webhooks",
    responses={
        **PROBLEMS,
        409: {"model": schemas.Problem, "description": "No webhook, or the job is not done."},
    },
)
async def replay_job_webhooks(
    job_id: str,
    response: Response,
    principal: PrincipalDep,
    services: ServicesDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> dict[str, Any]:
    """Deliver a finished job's webhook again now (same `webhook-id`, fresh retry window)."""
    window = services.settings.webhook_retry_window_s

    def action(s: Session) -> dict[str, Any]:
        webhooks.replay(s, principal.tenant_id, job_id, window)
        return _log_view(s, principal.tenant_id, job_id)

    out, replayed = await run_idempotent(
        services, principal, idempotency_key, f"POST /v1/jobs/{job_id}/webhooks/replay", action
    )
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    if services.dispatcher is not None:
        services.dispatcher.wake()
    return out
