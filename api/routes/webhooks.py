"""Webhook routes: the signing secret and its rotation, a job's delivery log and replay, the
tenant's endpoint for account events, and the account events with their deliveries."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api import schemas
from api.deps import IdempotencyKeyHeader, PrincipalDep, ServicesDep
from api.edge import CursorQuery, EventIdPath, JobIdPath
from api.openapi import header, problems
from api.routes.jobs import JOB_404
from api.services import Services
from api.submit import check_webhook_url
from engine.db.tables import Tenant, WebhookEvent
from engine.jobs import idempotency as idem
from engine.tenants.keys import Principal
from engine.webhooks import delivery as webhooks

router = APIRouter(prefix="/v1", tags=["webhooks"])
REPLAYED = {"headers": {"Idempotent-Replayed": header("Idempotent-Replayed")}}
KEY_422 = "An `Idempotency-Key` reused with another request; `errors` names it."


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

    def run(s: Session) -> tuple[dict[str, Any], bool]:
        if key:
            rec = idem.check(idem.find(s, principal.tenant_id, key, ttl), fp)
            if rec is not None and rec.response is not None:
                return rec.response, True
        out = action(s)
        if key:
            idem.remember(s, principal.tenant_id, key, fp, route, ttl, response=out)
        return out, False

    def earlier(s: Session) -> dict[str, Any] | None:
        rec = idem.check(idem.find(s, principal.tenant_id, key or "", ttl), fp)
        return rec.response if rec else None

    try:
        return await services.db.run(run)
    except IntegrityError:
        if not key:
            raise
        out = await services.db.run(earlier)  # a concurrent twin won
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


@router.get(
    "/webhook-secret",
    response_model=schemas.WebhookSecret,
    name="get_webhook_secret",
    response_description="The current signing secret.",
)
async def get_webhook_secret(principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    """The tenant's current webhook signing secret (made on first use)."""

    def load(s: Session) -> dict[str, Any]:
        return _secret_view(s, principal.tenant_id)

    return await services.db.run(load)


@router.post(
    "/webhook-secret/rotate",
    response_model=schemas.WebhookSecret,
    name="rotate_webhook_secret",
    response_description="The new signing secret, and until when the previous one still signs.",
    responses={200: REPLAYED, **problems({422: KEY_422})},
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
    response_description="The job's webhook events, oldest first, each with every attempt.",
    responses=problems({404: JOB_404}),
)
async def list_job_webhooks(
    job_id: JobIdPath, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """A job's webhook deliveries and every attempt (the delivery log)."""

    def load(s: Session) -> dict[str, Any]:
        return _log_view(s, principal.tenant_id, job_id)

    return await services.db.run(load)


@router.post(
    "/jobs/{job_id}/webhooks/replay",
    response_model=schemas.WebhookDeliveryList,
    status_code=202,
    name="replay_job_webhooks",
    response_description="Accepted: the delivery log, with the replay pending.",
    responses={
        202: REPLAYED,
        **problems(
            {
                404: JOB_404,
                409: "The job has no webhook, or is not finished.",
                422: KEY_422,
            }
        ),
    },
)
async def replay_job_webhooks(
    job_id: JobIdPath,
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


# ---- the tenant's endpoint for account events ----------------------------------------------


def _endpoint_view(tenant: Tenant) -> dict[str, Any]:
    return schemas.WebhookEndpoint(
        url=tenant.webhook_url,
        updated_at=tenant.webhook_url_updated_at,
        events=list(schemas.ACCOUNT_EVENT_TYPES),
    ).model_dump(mode="json")


@router.get(
    "/webhook-endpoint",
    response_model=schemas.WebhookEndpoint,
    name="get_webhook_endpoint",
    response_description="The endpoint for account events (`url` null: none).",
)
async def get_webhook_endpoint(principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    """Where the tenant's account events (`budget.threshold`) are delivered; `url` null: none."""

    def load(s: Session) -> dict[str, Any]:
        return _endpoint_view(webhooks.get_endpoint(s, principal.tenant_id))

    return await services.db.run(load)


@router.put(
    "/webhook-endpoint",
    response_model=schemas.WebhookEndpoint,
    name="set_webhook_endpoint",
    response_description="The endpoint as set.",
    responses=problems(
        {422: "The URL is refused (not https, not a public address, ...); names `url`."}
    ),
)
async def set_webhook_endpoint(
    body: schemas.WebhookEndpointRequest, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """Set the endpoint for account events; the URL passes the same guard as job webhook URLs.

    Account events still waiting for delivery follow the change to the new URL. Deliveries are
    signed with the tenant's webhook secret, like job events.
    """
    await check_webhook_url(services, body.url, field="url")

    def save(s: Session) -> dict[str, Any]:
        return _endpoint_view(webhooks.set_endpoint(s, principal.tenant_id, body.url))

    out = await services.db.run(save)
    if services.dispatcher is not None:
        services.dispatcher.wake()
    return out


@router.delete(
    "/webhook-endpoint",
    status_code=204,
    name="delete_webhook_endpoint",
    response_description="Removed (or there was none).",
)
async def delete_webhook_endpoint(principal: PrincipalDep, services: ServicesDep) -> Response:
    """Remove the endpoint: account events are then only recorded (`GET /v1/events`), and
    those still waiting for delivery stop."""

    def save(s: Session) -> None:
        webhooks.set_endpoint(s, principal.tenant_id, None)

    await services.db.run(save)
    return Response(status_code=204)


# ---- account events -----------------------------------------------------------------------

EVENT_404 = "No such event for this tenant."


def _event_view(found: webhooks.AccountEvent) -> schemas.AccountEvent:
    ev = found.event
    data = {k: v for k, v in ev.payload.items() if k not in ("type", "tenant_id")}
    return schemas.AccountEvent(
        id=ev.id,
        type=ev.type,
        created_at=ev.created_at,
        data=data,
        delivery=_delivery(found.delivery, found.attempts) if found.delivery else None,
    )


@router.get(
    "/events",
    response_model=schemas.AccountEventList,
    name="list_events",
    response_description="A page of account events, newest first.",
    responses=problems({400: "The cursor is not one this API gave out."}),
)
async def list_events(
    principal: PrincipalDep,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=100, description="Events per page.")] = 20,
    cursor: CursorQuery = None,
    type: Annotated[
        schemas.AccountEventType | None, Query(description="Only events of this type.")
    ] = None,
) -> dict[str, Any]:
    """The tenant's account events (`budget.threshold`), newest first, each with its webhook
    delivery status and attempts."""

    def load(s: Session) -> dict[str, Any]:
        found, nxt = webhooks.list_events(
            s,
            principal.tenant_id,
            limit=limit,
            cursor=cursor,
            type_=type.value if type is not None else None,
        )
        return schemas.AccountEventList(
            data=[_event_view(f) for f in found], next_cursor=nxt
        ).model_dump(mode="json")

    return await services.db.run(load)


@router.get(
    "/events/{event_id}",
    response_model=schemas.AccountEvent,
    name="get_event",
    response_description="The event, with its delivery.",
    responses=problems({404: EVENT_404}),
)
async def get_event(
    event_id: EventIdPath, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """One account event with its webhook delivery status and attempts."""

    def load(s: Session) -> dict[str, Any]:
        found = webhooks.get_event(s, principal.tenant_id, event_id)
        return _event_view(found).model_dump(mode="json")

    return await services.db.run(load)


@router.post(
    "/events/{event_id}/replay",
    response_model=schemas.AccountEvent,
    status_code=202,
    name="replay_event",
    response_description="Accepted: the event, with its delivery pending.",
    responses={
        202: REPLAYED,
        **problems({404: EVENT_404, 409: "The tenant has no webhook endpoint.", 422: KEY_422}),
    },
)
async def replay_event(
    event_id: EventIdPath,
    response: Response,
    principal: PrincipalDep,
    services: ServicesDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> dict[str, Any]:
    """Deliver an account event again now, to the current endpoint (same `webhook-id`, fresh
    retry window); an event recorded while there was no endpoint gets its first delivery."""
    window = services.settings.webhook_retry_window_s

    def action(s: Session) -> dict[str, Any]:
        found = webhooks.replay_event(s, principal.tenant_id, event_id, window)
        return _event_view(found).model_dump(mode="json")

    out, replayed = await run_idempotent(
        services, principal, idempotency_key, f"POST /v1/events/{event_id}/replay", action
    )
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    if services.dispatcher is not None:
        services.dispatcher.wake()
    return out


# ---- what receivers get (the document's `webhooks` section; never served) -------------------

receiver = APIRouter(tags=["webhooks"], generate_unique_id_function=lambda route: route.name)

WebhookId = Annotated[
    str,
    Header(
        alias="webhook-id",
        description="The message id (`msg_...`), the same on every retry and replay: dedupe on it.",
    ),
]
WebhookTimestamp = Annotated[
    str,
    Header(
        alias="webhook-timestamp",
        pattern=r"^[0-9]+$",
        description="Unix seconds when this attempt was signed; refuse ones far from now.",
    ),
]
WebhookSignature = Annotated[
    str,
    Header(
        alias="webhook-signature",
        description="Space-separated `v1,<base64 HMAC-SHA256>` over `{webhook-id}.{webhook-"
        "timestamp}.{body}`, one per live secret (two during a rotation overlap).",
    ),
]

_RECEIVED: dict[str, tuple[type[Any], str]] = {
    "job.succeeded": (schemas.JobWebhookEvent, "A job you submitted with `webhook_url` succeeded."),
    "job.failed": (schemas.JobWebhookEvent, "A job you submitted with `webhook_url` failed."),
    "job.cancelled": (
        schemas.JobWebhookEvent,
        "A job you submitted with `webhook_url` was cancelled.",
    ),
    "budget.threshold": (
        schemas.BudgetThresholdWebhookEvent,
        "This month's spend crossed the tenant's budget threshold (sent to the tenant's "
        "webhook endpoint, `PUT /v1/webhook-endpoint`).",
    ),
}


def _declare_received(event: str, body: type[Any], summary: str) -> None:
    async def receive(
        payload: Any,
        webhook_id: WebhookId,
        webhook_timestamp: WebhookTimestamp,
        webhook_signature: WebhookSignature,
    ) -> None:
        """Stencil POSTs this to your endpoint as a Standard Webhooks message, signed with the
        tenant's secret (`GET /v1/webhook-secret`); verify before trusting it (the SDKs'
        `verify_webhook`). Answer 2xx quickly; anything else is retried."""

    receive.__annotations__["payload"] = body  # the event's own model (not a string annotation)
    receiver.add_api_route(
        event,
        receive,
        methods=["POST"],
        name=f"on_{event.replace('.', '_')}",
        summary=summary,
    )


for _event, (_body, _summary) in _RECEIVED.items():
    _declare_received(_event, _body, _summary)
