"""Job routes: one POST per template (generated from the catalog), read, list, cancel."""

from __future__ import annotations

import functools
import re
import time
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urljoin

from fastapi import APIRouter, FastAPI, Query, Request, Response
from pydantic import BaseModel

from api import schemas
from api.deps import IdempotencyKeyHeader, PrincipalDep, ServicesDep, authenticate_request
from api.edge import CursorQuery, JobIdPath, TemplateFilter
from api.fastpath import FastPathRoute, fast_path
from api.openapi import deprecation_headers, header, problems
from api.services import Services
from api.submit import submit
from engine.catalog.catalog import Template
from engine.catalog.params import operation_id
from engine.db.bounds import ID_PATTERN
from engine.db.tables import Job
from engine.errors import Conflict
from engine.jobs.lifecycle import MAX_WAIT_S, cancel, stream_token, wait_terminal
from engine.jobs.states import CANCELLED, TERMINAL
from engine.jobs.store import JobRow, get_job, list_jobs, read_view
from engine.tenants.keys import Principal

router = APIRouter(prefix="/v1", tags=["jobs"], route_class=FastPathRoute)

JOB_404 = "No such job for this tenant."
JOB_PROBLEMS = problems({404: JOB_404})


def _json(
    view: BaseModel, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """The view as the response body, serialised once: the model was built by `job_view` from
    trusted fields, so FastAPI's second validation against `response_model` (which the
    document still declares) would only repeat the work on the hottest routes."""
    return Response(
        content=view.model_dump_json(by_alias=True),
        status_code=status_code,
        headers=headers,
        media_type="application/json",
    )


@functools.lru_cache(maxsize=64)
def _origin(base: str) -> str:
    return urljoin(base, "/")


def _absolute(base: str, path: str) -> str:
    """`urljoin(base, path)` for the absolute paths the API signs (no `.` segments to resolve),
    with the base's origin parsed once rather than on every URL of every view."""
    if path.startswith("/") and not path.startswith("//") and "/." not in path:
        return _origin(base) + path[1:]
    return urljoin(base, path)


def _secs(a: datetime | None, b: datetime | None) -> float | None:
    return round((b - a).total_seconds(), 3) if a and b else None


def job_view(
    job: Job | JobRow, services: Services, base_url: str, key_id: str | None = None
) -> schemas.Job:
    """A job as the API shows it, with output and event-stream URLs signed now."""
    ttl = services.settings.url_ttl_s
    base = services.settings.public_base_url or base_url
    stream_exp = int(time.time()) + services.settings.stream_url_ttl_s
    token = stream_token(
        services.settings.signing_secret(), job.id, job.tenant_id, key_id or "tenant", stream_exp
    )
    outputs = []
    for o in job.outputs or []:
        url, exp = services.storage.url(o["key"], ttl)
        outputs.append(
            schemas.Output(
                url=_absolute(base, url),
                expires_at=datetime.fromtimestamp(exp, UTC),
                content_type=o["content_type"],
                width=o["width"],
                height=o["height"],
                bytes=o["bytes"],
            )
        )
    inputs = {
        k: {f: v[f] for f in ("sha256", "content_type", "width", "height", "bytes")}
        for k, v in (job.inputs or {}).items()
    }
    return schemas.Job(
        id=job.id,
        template=job.template,
        template_version=job.template_version,
        status=job.status,
        progress=round(job.progress or 0.0, 4),
        params=job.params,
        inputs=inputs,
        graph_hash=job.graph_hash,
        comfyui_version=job.comfy_version,
        outputs=outputs,
        error=schemas.Problem.model_validate(job.error) if job.error else None,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        timings=schemas.Timings(
            queue_seconds=_secs(job.created_at, job.started_at),
            run_seconds=_secs(job.started_at, job.finished_at),
            total_seconds=_secs(job.created_at, job.finished_at),
        ),
        metering=_metering_view(job.metering),
        cost=_cost_view(job.cost),
        batch=(
            schemas.Batch(id=job.batch_id, size=job.batch_size)
            if job.batch_id and job.batch_size
            else None
        ),
        webhook_url=job.webhook_url,
        events_url=_absolute(base, f"/v1/jobs/{job.id}/events?token={token}"),
    )


def _metering_view(m: dict[str, Any] | None) -> schemas.Metering | None:
    if not m or "billable_seconds" not in m:
        return None

    def r(key: str) -> float:
        return round(float(m.get(key) or 0.0), 3)

    return schemas.Metering(
        queue_seconds=r("queue_seconds"),
        cold_start=bool(m.get("cold_start", False)),
        cold_start_seconds=r("cold_start_seconds"),
        execution_seconds=r("execution_seconds"),
        upload_seconds=r("upload_seconds"),
        billable_seconds=r("billable_seconds"),
    )


def _cost_view(c: dict[str, Any] | None) -> schemas.Cost | None:
    # Shown exactly as settled: the rate stored with the charge, never today's price.
    if not c:
        return None
    return schemas.Cost(
        gpu_class=c["gpu_class"],
        gpu_type=c["gpu_type"],
        billable_seconds=float(c["billable_seconds"]),
        usd=c["usd"],
        rate=c["rate"],
        charged_to=c["charged_to"],
        platform_usd=c["platform_usd"],
    )


def add_template_routes(app: FastAPI, services: Services) -> None:
    """One `POST /v{major}/{name}` per catalog template, each with its own request schema."""
    for t in services.catalog.templates:
        _add_template_route(app, services, t, services.request_models[(t.name, t.major)])


def _add_template_route(
    app: FastAPI, services: Services, t: Template, model: type[BaseModel]
) -> None:
    extra_headers = deprecation_headers(services.catalog, t)

    async def accept(
        request: Request, principal: Principal, idempotency_key: str | None
    ) -> Response:
        services: Services = request.app.state.services
        job, replayed = await submit(services, t, model, principal, request, idempotency_key)
        headers = {"Location": f"/v1/jobs/{job.id}", **extra_headers}
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        view = job_view(job, services, str(request.base_url), principal.key_id)
        return _json(view, 202, headers)

    async def plain_submit(request: Request) -> Response | None:
        # The fast path (see `api/fastpath.py`): no query string and no `Idempotency-Key`
        # (whose checks the full route makes); the body is read and checked by `submit` either
        # way.
        if request.scope.get("query_string") or "idempotency-key" in request.headers:
            return None
        return await accept(request, await authenticate_request(request), None)

    @fast_path(plain_submit)
    async def run_template(
        request: Request,
        principal: PrincipalDep,
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> Response:
        return await accept(request, principal, idempotency_key)

    run_template.__doc__ = f"{t.description}"
    images = ", ".join(f"`{n}`" for n in t.image_params)
    app.router.add_api_route(
        f"/v{t.major}/{t.name}",
        run_template,
        route_class_override=FastPathRoute,
        methods=["POST"],
        status_code=202,
        response_model=schemas.Job,
        response_description="Accepted: the job, queued. Follow it at `Location`.",
        name=operation_id(t),
        summary=t.summary,
        tags=["templates"],
        responses={
            202: {
                "headers": {
                    "Location": header("Location", required=True),
                    "Idempotent-Replayed": header("Idempotent-Replayed"),
                }
            },
            **problems(
                {
                    402: "The tenant's monthly budget is spent; `budget_usd` and `spend_usd` "
                    "say by how much.",
                    413: "The body is over the size cap.",
                    415: "Send `application/json` or `multipart/form-data`.",
                    422: "Invalid params, or an image refused (`invalid_media`"
                    + (f": {images}" if images else "")
                    + "), or an `Idempotency-Key` reused with another body; `errors` names "
                    "each field.",
                    429: "Over the tenant's active-job quota (`quota_exceeded`) or the API "
                    "key's rate limit (`rate_limited`); retry after `Retry-After`.",
                }
            ),
        },
    )


_JOB_ID = re.compile(ID_PATTERN)


# The one query string the fast path takes: `wait=N`, N in the declaration's 0..MAX_WAIT_S.
_WAIT_ONLY = re.compile(rb"wait=(0|[1-9][0-9]?)")


async def _plain_read(request: Request) -> Response | None:
    """`GET /v1/jobs/{id}` with a well-formed id, and no query string but `wait=N` within its
    bounds, answered without the dependency solver (the route's fast path); None sends any
    other request the full way."""
    job_id = request.path_params.get("job_id", "")
    if not _JOB_ID.fullmatch(job_id):
        return None
    query: bytes = request.scope.get("query_string") or b""
    wait = 0
    if query:
        m = _WAIT_ONLY.fullmatch(query)
        if m is None or int(m[1]) > MAX_WAIT_S:
            return None
        wait = int(m[1])
    principal = await authenticate_request(request)
    return await _read(request, principal, job_id, wait)


async def _read(request: Request, principal: Principal, job_id: str, wait: int) -> Response:
    services: Services = request.app.state.services
    if wait:
        job = await wait_terminal(services.db, principal.tenant_id, job_id, float(wait))
    else:
        job = await read_view(services.db, principal.tenant_id, job_id)
    return _json(job_view(job, services, str(request.base_url), principal.key_id))


@router.get(
    "/jobs/{job_id}",
    response_model=schemas.Job,
    name="get_job",
    response_description="The job.",
    responses=JOB_PROBLEMS,
)
@fast_path(_plain_read)
async def read_job(
    job_id: JobIdPath,
    request: Request,
    principal: PrincipalDep,
    wait: Annotated[
        int,
        Query(
            ge=0,
            le=MAX_WAIT_S,
            description="Seconds to wait for the job to finish: the answer comes as soon as "
            "it is terminal, or with its current state after this many seconds (0: at once).",
        ),
    ] = 0,
) -> Response:
    """Read a job: status, progress, timings and freshly signed output URLs; with `wait`, once
    it is done (a long poll, answered the moment it finishes)."""
    return await _read(request, principal, job_id, wait)


@router.get(
    "/jobs",
    response_model=schemas.JobList,
    name="list_jobs",
    response_description="A page of jobs, newest first.",
    responses=problems({400: "The cursor is not one this API gave out."}),
)
async def list_my_jobs(
    request: Request,
    principal: PrincipalDep,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=100, description="Jobs per page.")] = 20,
    cursor: CursorQuery = None,
    status: Annotated[
        schemas.JobStatus | None, Query(description="Only jobs in this status.")
    ] = None,
    template: TemplateFilter = None,
) -> schemas.JobList:
    """The caller's jobs, newest first, with cursor pagination."""

    jobs, nxt = await services.db.read(
        list_jobs, principal.tenant_id, limit=limit, cursor=cursor, status=status, template=template
    )
    base = str(request.base_url)
    return schemas.JobList(
        data=[job_view(j, services, base, principal.key_id) for j in jobs], next_cursor=nxt
    )


@router.delete(
    "/jobs/{job_id}",
    response_model=schemas.Job,
    name="cancel_job",
    response_description="The job, cancelled (or as it already was if it was cancelled).",
    responses=problems({404: JOB_404, 409: "The job already succeeded or failed."}),
)
async def cancel_job(
    job_id: JobIdPath, request: Request, principal: PrincipalDep, services: ServicesDep
) -> schemas.Job:
    """Cancel a job: a queued job never starts; a running one is interrupted in ComfyUI."""

    for _ in range(3):
        job, was = await services.db.write(cancel, principal.tenant_id, job_id)
        if was == "running" and services.runner is not None:
            await services.runner.cancel(job.id, job.call_id)
        if was in ("queued", "running", CANCELLED):
            break
        if was in TERMINAL:
            # Not `status`: that member of a problem is its HTTP status.
            raise Conflict(f"Job {job_id} already finished as {was}.", extra={"job_status": was})

    job = await services.db.read(get_job, principal.tenant_id, job_id)
    return job_view(job, services, str(request.base_url), principal.key_id)
