"""Server-Sent Events: a job's progress pushed to the client until it finishes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Receive, Scope, Send

from api import schemas
from api.deps import PrincipalDep, ServicesDep
from api.edge import JobIdPath
from api.routes.jobs import PROBLEMS, job_view
from engine.errors import TooManyStreams
from engine.store import TERMINAL, Job, get_job

router = APIRouter(prefix="/v1", tags=["jobs"])

EVENT_SCHEMA = {
    "type": "object",
    "description": "One Server-Sent Event.",
    "properties": {
        "event": {"type": "string", "const": "job", "description": "Always `job`."},
        "id": {"type": "string", "description": "`status:progress` of the job when sent."},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "description": "The job as JSON: the body `GET /v1/jobs/{id}` answers.",
        },
    },
    "required": ["event", "data"],
}

POLL_S = 0.25  # how often the stream looks at the job row (any process may change it)
PING_S = 15  # keeps proxies from closing an idle stream


@router.get(
    "/jobs/{job_id}/events",
    name="stream_job_events",
    response_class=EventSourceResponse,
    responses={
        **PROBLEMS,
        429: {
            "model": schemas.Problem,
            "description": "The key already holds its limit of open streams (or its rate "
            "limit); see `Retry-After`.",
        },
        200: {
            "description": (
                "`text/event-stream`. Each event is named `job` and carries the job as JSON "
                "(the same body as `GET /v1/jobs/{id}`), sent when its status or progress "
                "changes; the stream ends after the terminal state."
            ),
            # OpenAPI 3.1 without `itemSchema`: `schema` describes one event.
            "content": {"text/event-stream": {"schema": EVENT_SCHEMA}},
        },
    },
)
async def stream_job_events(
    job_id: JobIdPath, request: Request, principal: PrincipalDep, services: ServicesDep
) -> EventSourceResponse:
    """Follow a job: progress and state changes as Server-Sent Events, ending when it is done."""

    def load() -> Job:
        with services.db.session() as s:
            return get_job(s, principal.tenant_id, job_id)

    first = await asyncio.to_thread(load)  # 404 before the stream starts, as a problem
    slots, key_id = services.streams, principal.key_id
    if not slots.take(key_id):
        raise TooManyStreams(
            f"This API key already has {slots.per_key} event streams open; close one, or poll "
            "GET /v1/jobs/{id}.",
            extra={"limit": slots.per_key},
            headers={"Retry-After": "5"},
        )
    t = services.catalog.get(first.template, int(first.template_version.split(".")[0]))
    # A stream never outlives the job's own limits (plus a margin for the final write).
    limit_s = (t.limits.max_queue_seconds + t.limits.max_run_seconds if t else 900) + 60
    base = str(request.base_url)

    async def events() -> AsyncIterator[ServerSentEvent]:
        job, last, deadline = first, None, time.monotonic() + limit_s
        while True:
            key = (job.status, round(job.progress or 0.0, 3))
            if key != last:
                last = key
                body = job_view(job, services, base).model_dump_json()
                yield ServerSentEvent(data=body, event="job", id=f"{job.status}:{key[1]}")
            if job.status in TERMINAL or time.monotonic() > deadline:
                return
            if await request.is_disconnected():
                return
            await asyncio.sleep(POLL_S)
            job = await asyncio.to_thread(load)

    return _HeldStream(events(), ping=PING_S, release=lambda: slots.give(key_id))


class _HeldStream(EventSourceResponse):
    """An event stream that gives its slot back however it ends (done, disconnect, error)."""

    def __init__(self, *args: Any, release: Callable[[], None], **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()
