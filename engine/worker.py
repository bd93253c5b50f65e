"""The one worker function every runner shares: run a claimed job on a ComfyUI to the end."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from engine.catalog import Catalog, Template
from engine.comfy import (
    ComfyClient,
    ComfyError,
    ComfyExecutionError,
    ComfyInterrupted,
    ComfyTimeout,
    ComfyUnavailable,
    ComfyValidationError,
)
from engine.errors import (
    EngineUnavailable,
    ExecutionFailed,
    JobFailure,
    JobTimedOut,
    problem_of,
)
from engine.media import image_info
from engine.render import TemplateGraphs
from engine.storage import Storage
from engine.store import (
    CANCELLED,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    Database,
    Job,
    set_fields_if,
    transition,
    utcnow,
)

log = logging.getLogger("stencil.worker")

MAX_ATTEMPTS = 2  # a job that lost its engine is retried once on a fresh one


@dataclass
class WorkerContext:
    """What a worker needs; the local runner and the Modal class each build one."""

    db: Database
    storage: Storage
    catalog: Catalog
    graphs: TemplateGraphs
    comfy: ComfyClient
    worker_id: str
    # Called when ComfyUI does not answer before a job: restart it (local) or stop taking
    # inputs (Modal). Returns True when the engine is usable again.
    on_engine_down: Callable[[], Awaitable[bool]] | None = None
    heartbeat_s: float = 5.0
    progress_min_interval_s: float = 0.5
    comfy_version: str | None = None
    hooks: list[Callable[[str, str], Awaitable[None] | None]] = field(default_factory=list)


def node_errors_to_fields(
    t: Template, bindings: dict[tuple[str, str], str], node_errors: dict[str, Any]
) -> list[dict[str, Any]]:
    """Map ComfyUI node_errors back to the public params bound to those inputs."""
    out: list[dict[str, Any]] = []
    for node_id, info in (node_errors or {}).items():
        for err in info.get("errors", []) if isinstance(info, dict) else []:
            inp = (err.get("extra_info") or {}).get("input_name")
            param = bindings.get((str(node_id), inp)) if inp else None
            msg = err.get("details") or err.get("message") or "invalid"
            if param:
                out.append({"field": param, "message": msg})
            else:
                out.append({"field": f"graph.{node_id}", "message": err.get("message", msg)})
    return out


async def _db(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    return await asyncio.to_thread(fn, *args, **kw)


def _load(db: Database, job_id: str) -> Job | None:
    with db.session() as s:
        return s.get(Job, job_id)


def _status(db: Database, job_id: str) -> str | None:
    with db.session() as s:
        job = s.get(Job, job_id)
        return job.status if job else None


def _cas(db: Database, job_id: str, frm: list[str], to: str, **values: Any) -> bool:
    with db.session() as s:
        return transition(s, job_id, frm, to, **values)


def _set(db: Database, job_id: str, status: str, **values: Any) -> bool:
    with db.session() as s:
        return set_fields_if(s, job_id, status, **values)


def _merge_metering(db: Database, job_id: str, values: dict[str, Any]) -> None:
    with db.session() as s:
        job = s.get(Job, job_id)
        if job is not None:
            job.metering = {**(job.metering or {}), **values}


async def execute_job(ctx: WorkerContext, job_id: str, cancel: asyncio.Event | None = None) -> str:
    """Run one claimed (`running`) job and move it to a terminal state; returns that state."""
    cancel = cancel or asyncio.Event()
    t0 = time.monotonic()
    job: Job | None = await _db(_load, ctx.db, job_id)
    if job is None or job.status != RUNNING:
        return job.status if job else "missing"
    t = ctx.catalog.get(job.template, int(job.template_version.split(".")[0]))
    if t is None:
        await _fail(ctx, job, ExecutionFailed(f"template {job.template} is no longer served"))
        return FAILED

    stop = asyncio.Event()
    hb = asyncio.create_task(_heartbeat(ctx, job_id, cancel, stop))
    try:
        return await _run(ctx, job, t, cancel, t0)
    finally:
        stop.set()
        await hb


async def _heartbeat(
    ctx: WorkerContext, job_id: str, cancel: asyncio.Event, stop: asyncio.Event
) -> None:
    """Keep the job's heartbeat fresh and notice a cancel made by another process."""
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=ctx.heartbeat_s)
            return
        except TimeoutError:
            pass
        try:
            alive = await _db(_set, ctx.db, job_id, RUNNING, heartbeat_at=utcnow())
            if not alive and await _db(_status, ctx.db, job_id) == CANCELLED:
                cancel.set()
        except Exception:  # a database blip must not kill the job; the next beat retries
            log.warning("heartbeat for %s failed", job_id, exc_info=True)


async def _engine_ready(ctx: WorkerContext) -> bool:
    try:
        await ctx.comfy.system_stats()
        return True
    except ComfyError:
        pass
    if ctx.on_engine_down is None:
        return False
    return await ctx.on_engine_down()


async def _run(ctx: WorkerContext, job: Job, t: Template, cancel: asyncio.Event, t0: float) -> str:
    if not await _engine_ready(ctx):
        return await _retry_or_fail(
            ctx, job, EngineUnavailable("ComfyUI did not answer its health check")
        )

    try:
        for rec in (job.inputs or {}).values():
            data = await asyncio.to_thread(ctx.storage.get, rec["key"])
            await ctx.comfy.upload_image(data, rec["comfy_name"])
    except ComfyUnavailable as e:
        return await _retry_or_fail(ctx, job, EngineUnavailable(f"uploading inputs failed: {e}"))

    last = 0.0

    async def on_progress(ev: Any) -> None:
        nonlocal last
        now = time.monotonic()
        value, maximum = getattr(ev, "value", 0), getattr(ev, "max", 0)
        if not maximum or now - last < ctx.progress_min_interval_s:
            return
        last = now
        frac = min(0.99, float(value) / float(maximum))
        await _db(_set, ctx.db, job.id, RUNNING, progress=frac)

    run_t0 = time.monotonic()
    try:
        result = await ctx.comfy.run(
            job.graph,
            client_id=job.id,
            on_progress=on_progress,
            timeout=float(t.limits.max_run_seconds),
            cancel=cancel,
        )
    except ComfyInterrupted:
        if await _db(_status, ctx.db, job.id) == CANCELLED:
            await _db(_merge_metering, ctx.db, job.id, {"run_seconds": time.monotonic() - run_t0})
            return CANCELLED
        return await _fail(ctx, job, JobTimedOut("the job was interrupted"))
    except ComfyTimeout:
        return await _fail(
            ctx, job, JobTimedOut(f"the job ran past its limit of {t.limits.max_run_seconds} s")
        )
    except ComfyValidationError as e:
        fields = node_errors_to_fields(t, ctx.graphs.bindings(t), e.node_errors)
        return await _fail(
            ctx, job, ExecutionFailed(f"ComfyUI refused the graph: {e}", extra={"errors": fields})
        )
    except ComfyExecutionError as e:
        return await _fail(
            ctx, job, ExecutionFailed(f"node {e.node_id} ({e.node_type}) failed: {e.message}")
        )
    except ComfyUnavailable as e:
        return await _retry_or_fail(ctx, job, EngineUnavailable(f"ComfyUI went away mid-job: {e}"))

    await _db(_set, ctx.db, job.id, RUNNING, comfy_prompt_id=result.prompt_id)
    if cancel.is_set():
        return CANCELLED
    refs = result.outputs
    if len(refs) > t.limits.max_outputs:
        return await _fail(
            ctx,
            job,
            ExecutionFailed(
                f"the graph made {len(refs)} outputs; the limit is {t.limits.max_outputs}"
            ),
        )
    up_t0 = time.monotonic()
    outputs: list[dict[str, Any]] = []
    try:
        for i, ref in enumerate(refs):
            data = await ctx.comfy.view(ref)
            fmt, w, h = image_info(data)
            key = f"jobs/{job.id}/{i}.{fmt.lower()}"
            ctype = f"image/{fmt.lower()}"
            await asyncio.to_thread(ctx.storage.put, key, data, ctype)
            outputs.append(
                {"key": key, "content_type": ctype, "width": w, "height": h, "bytes": len(data)}
            )
    except ComfyUnavailable as e:
        await _drop_outputs(ctx, outputs)
        return await _retry_or_fail(ctx, job, EngineUnavailable(f"fetching outputs failed: {e}"))
    upload_s = time.monotonic() - up_t0
    metering = {
        "execution_seconds": result.execution_seconds,
        "run_seconds": time.monotonic() - run_t0,
        "upload_seconds": upload_s,
        "worker_seconds": time.monotonic() - t0,
    }
    done = await _db(
        _cas,
        ctx.db,
        job.id,
        [RUNNING],
        SUCCEEDED,
        outputs=outputs,
        progress=1.0,
        finished_at=utcnow(),
        execution_s=result.execution_seconds,
        comfy_version=ctx.comfy_version,
    )
    if not done:
        # Cancelled (or timed out by the supervisor) while we finished: keep nothing.
        await _drop_outputs(ctx, outputs)
        await _db(_merge_metering, ctx.db, job.id, metering)
        return await _db(_status, ctx.db, job.id) or CANCELLED
    await _db(_merge_metering, ctx.db, job.id, metering)
    await _notify(ctx, job.id, SUCCEEDED)
    return SUCCEEDED


async def _drop_outputs(ctx: WorkerContext, outputs: list[dict[str, Any]]) -> None:
    for o in outputs:
        await asyncio.to_thread(ctx.storage.delete, o["key"])


async def _notify(ctx: WorkerContext, job_id: str, status: str) -> None:
    for hook in ctx.hooks:
        r = hook(job_id, status)
        if r is not None:
            await r


async def _fail(ctx: WorkerContext, job: Job, err: JobFailure) -> str:
    body = problem_of(err)
    body["platform_fault"] = err.platform_fault
    if await _db(_cas, ctx.db, job.id, [RUNNING], FAILED, error=body, finished_at=utcnow()):
        await _notify(ctx, job.id, FAILED)
        return FAILED
    return await _db(_status, ctx.db, job.id) or FAILED


async def _retry_or_fail(ctx: WorkerContext, job: Job, err: JobFailure) -> str:
    """An engine fault is retried once on a fresh engine; the second time the job fails."""
    fresh: Job | None = await _db(_load, ctx.db, job.id)
    if fresh is not None and fresh.attempts < MAX_ATTEMPTS:
        if await _db(
            _cas, ctx.db, job.id, [RUNNING], QUEUED, started_at=None, worker_id=None, progress=0.0
        ):
            log.warning("job %s re-queued after engine fault: %s", job.id, err.detail)
            if ctx.on_engine_down is not None:
                await ctx.on_engine_down()
            return QUEUED
    return await _fail(ctx, job, err)
