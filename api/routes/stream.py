"""Server-Sent Events: a job's progress pushed to the client until it finishes.

Each event is named by what happened (`job.running`, `job.progress`, `job.succeeded`, ...) and
carries a `JobEvent` as JSON. Its id is the job's position in its life, computed from the job
row alone (see `position`), so ids only grow, any API process computes the same ones, and a
client that reconnects with `Last-Event-ID` gets only what came after.

The stream is pushed: it reads the job once, then once per change of that job that the change
feed announces (from this process at once, from others through LISTEN/NOTIFY or Redis), never
on a timer. A reconnect after the terminal event is answered `204 No Content`, which tells a
browser's `EventSource` to stop. A browser cannot send `Authorization` on `EventSource`: the
job's `events_url` carries a short-lived signed `token` instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Receive, Scope, Send

from api import schemas
from api.deps import ServicesDep, _bearer, authenticate, rate_limit
from api.edge import JobIdPath
from api.openapi import problems
from api.routes.jobs import JOB_404, job_view
from engine.db.tables import Job
from engine.errors import TooManyStreams
from engine.jobs.events import JOB
from engine.jobs.lifecycle import follow, verify_stream_token
from engine.jobs.states import QUEUED, RUNNING, TERMINAL
from engine.jobs.store import JobRow, read_view
from engine.tenants.keys import Principal

router = APIRouter(prefix="/v1", tags=["jobs"])

PING_S = 15  # keeps proxies from closing an idle stream
RETRY_MS = 2000  # the reconnect delay a browser is told to use
_STEP = 1001  # positions per phase: progress in thousandths, 0..1000


def position(job: Job | JobRow) -> int:
    """Where a job is in its life, as one integer that only grows.

    A job is queued, then runs (attempt n), may be queued again for another attempt, and ends
    in a terminal state; progress grows within an attempt. Phases: queued before attempt
    n + 1 is 2n, running attempt n is 2n - 1, terminal is 2n + 1; within a phase, progress in
    thousandths.
    """
    attempts = job.attempts or 0
    if job.status == QUEUED:
        phase = 2 * attempts
    elif job.status == RUNNING:
        phase = 2 * attempts - 1
    else:
        phase = 2 * attempts + 1
    return phase * _STEP + round((job.progress or 0.0) * 1000)


STREAM_DESCRIPTION = (
    "Server-Sent Events. Each event is named by its `JobEvent.type`, its `id` is "
    "`JobEvent.id`, and its `data` is one `JobEvent` as JSON (the job as `GET /v1/jobs/{id}` "
    "shows it). An event is sent when the status or the progress changes; the last one is the "
    "terminal state, and then the stream ends. Reconnect with `Last-Event-ID` to resume."
)


async def stream_principal(
    request: Request,
    services: ServicesDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    token: Annotated[
        str | None,
        Query(
            max_length=300,
            pattern=r"^[A-Za-z0-9_.=-]+$",
            description="The signed token of the job's `events_url`, for clients that cannot "
            "send `Authorization` (a browser's `EventSource`); it is valid for this job only.",
        ),
    ] = None,
) -> Principal:
    """The bearer key's principal, or the one a signed stream token names."""
    if token is None or creds is not None:
        return await authenticate(request, services, creds)
    # The path's job id is validated by the route itself (one error, not two, when it is bad).
    job_id = str(request.path_params.get("job_id", ""))
    tenant_id, key_id = verify_stream_token(services.settings.signing_secret(), token, job_id)
    principal = Principal(tenant_id, "", key_id, frozenset({"jobs"}))
    await rate_limit(request, services, principal)
    return principal


@router.get(
    "/jobs/{job_id}/events",
    name="stream_job_events",
    response_class=EventSourceResponse,
    response_description=STREAM_DESCRIPTION,
    status_code=200,
    responses={
        **problems(
            {
                401: "No API key or stream token, or one that is not valid for this job.",
                404: JOB_404,
                429: "The key already holds its limit of open streams "
                "(`STENCIL_STREAMS_PER_KEY`), or is over its rate limit; see `Retry-After`.",
            }
        ),
        204: {
            "description": "The stream is over: the job is terminal and `Last-Event-ID` is its "
            "last event (a browser's EventSource stops reconnecting)."
        },
        200: {
            "content": {
                "text/event-stream": {
                    "schema": {
                        "type": "string",
                        "description": "`event: job.progress\\nid: 1520\\ndata: {JobEvent}` "
                        "blocks; `$defs` names the schema of `data`.",
                        "$defs": {"JobEvent": {"$ref": "#/components/schemas/JobEvent"}},
                    }
                }
            },
        },
    },
)
async def stream_job_events(
    job_id: JobIdPath,
    request: Request,
    principal: Annotated[Principal, Depends(stream_principal)],
    services: ServicesDep,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            pattern=r"^[0-9]{1,15}$",
            description="The `id` of the last event received: the stream resumes after it "
            "(browsers' EventSource sends it when they reconnect).",
        ),
    ] = None,
) -> EventSourceResponse:
    """Follow a job: its state changes and progress as Server-Sent Events, ending when it is
    done."""

    # The watch before the read: a change made after the read wakes the stream's first wait,
    # so one read starts the stream. It is held until the response ends, however it ends.
    held = contextlib.ExitStack()
    watch = held.enter_context(services.db.events.watch(JOB, job_id))
    try:
        first = await read_view(services.db, principal.tenant_id, job_id)  # a 404: a problem
        after = int(last_event_id) if last_event_id is not None else -1
        if first.status in TERMINAL and after >= position(first):
            held.close()
            return Response(status_code=204)  # type: ignore[return-value]
        slots, key_id = services.streams, principal.key_id
        if not slots.take(key_id):
            raise TooManyStreams(
                f"This API key already has {slots.per_key} event streams open; close one, or "
                "poll GET /v1/jobs/{id}.",
                extra={"limit": slots.per_key},
                headers={"Retry-After": "5"},
            )
    except BaseException:
        held.close()
        raise
    held.callback(slots.give, key_id)
    t = services.catalog.get(first.template, int(first.template_version.split(".")[0]))
    # A stream never outlives the job's own limits (plus a margin for the final write).
    limit_s = (t.limits.max_queue_seconds + t.limits.max_run_seconds if t else 900) + 60
    base = str(request.base_url)

    async def events() -> AsyncIterator[ServerSentEvent]:
        last, last_status = after, None
        retry: int | None = RETRY_MS
        job: JobRow
        async for job in follow(
            services.db, principal.tenant_id, job_id, first=first, watch=watch, limit_s=limit_s
        ):
            pos = position(job)
            if pos <= last:
                continue
            last = pos
            kind = f"job.{job.status}"
            if job.status == RUNNING and last_status == RUNNING:
                kind = "job.progress"
            last_status = job.status
            event = schemas.JobEvent(
                id=pos, type=schemas.JobEventType(kind), job=job_view(job, services, base)
            )
            yield ServerSentEvent(
                data=event.model_dump_json(), event=kind, id=str(pos), retry=retry
            )
            retry = None  # said once per connection

    return _HeldStream(events(), ping=PING_S, release=held.close)


class _HeldStream(EventSourceResponse):
    """An event stream that gives its slot and its watch back however it ends (done,
    disconnect, error)."""

    def __init__(self, *args: Any, release: Callable[[], None], **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()
