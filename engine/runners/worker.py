"""The one worker function every runner shares: run a claimed job on a ComfyUI to the end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from engine.billing.metering import PromptMeter, split_batch
from engine.catalog.catalog import Catalog, Template
from engine.catalog.render import TemplateGraphs
from engine.comfy import (
    ComfyClient,
    ComfyError,
    ComfyExecutionError,
    ComfyInterrupted,
    ComfyTimeout,
    ComfyUnavailable,
    ComfyValidationError,
    OutputRef,
    ProgressEvent,
)
from engine.db.database import Database, utcnow
from engine.db.tables import Job
from engine.errors import (
    EngineUnavailable,
    ExecutionFailed,
    JobFailure,
    JobTimedOut,
    problem_of,
)
from engine.intake.storage import Storage
from engine.jobs import lifecycle
from engine.jobs.events import JOB
from engine.jobs.states import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED
from engine.metrics import observe_attempt
from engine.runners.outputs import EncodedImage, OutputFormat, encode_output, output_choice

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
    # The GPU type this worker runs on, when it differs from its class's first choice.
    gpu_type: str | None = None
    # Container start/restore seconds not yet paid by a job: the next job pays them (Modal sets
    # this in its enter hook; locally the engine starts with the API, before any job).
    container_boot_seconds: float = 0.0
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


def _job_metering(meter: PromptMeter, queue_seconds: float) -> dict[str, Any]:
    """The job's figures: its share of the prompt (a batch of one here) plus its queue wait."""
    (share,) = split_batch(meter.figures(), [1])
    return {**share, "queue_seconds": queue_seconds}


async def execute_job(
    ctx: WorkerContext,
    job_id: str,
    cancel: asyncio.Event | None = None,
    claimed: Job | None = None,
) -> str:
    """Run one claimed (`running`) job and move it to a terminal state; returns that state.

    `claimed` is the job as the claim transaction read it, when the caller has it (no second
    read)."""
    cancel = cancel or asyncio.Event()
    job: Job | None = claimed if claimed is not None else await ctx.db.read(lifecycle.load, job_id)
    if job is None or job.status != RUNNING:
        return job.status if job else "missing"
    run = _Attempt(ctx, job, PromptMeter(job.graph))
    # Container start/restore seconds are paid by the first job the container runs.
    run.meter.container_boot_seconds, ctx.container_boot_seconds = ctx.container_boot_seconds, 0.0
    t = ctx.catalog.get(job.template, int(job.template_version.split(".")[0]))
    if t is None:
        return await run.fail(ExecutionFailed(f"template {job.template} is no longer served"))

    stop = asyncio.Event()
    hb = asyncio.create_task(_heartbeat(ctx, job_id, cancel, stop))
    try:
        return await _run(run, t, cancel)
    finally:
        # The heartbeat may be waiting for its next beat: stop it now, not at that beat.
        stop.set()
        hb.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await hb


class _Attempt:
    """One attempt at a job: its meter, and every way it can end (each settles its charge)."""

    def __init__(self, ctx: WorkerContext, job: Job, meter: PromptMeter) -> None:
        self.ctx, self.job, self.meter = ctx, job, meter
        started = job.started_at or job.created_at
        # The one figure that spans two processes: the API stamped creation, the claim stamped
        # the start; both are database times (docs/costs.md).
        self.queue_seconds = max((started - job.created_at).total_seconds(), 0.0)

    def metering(self) -> dict[str, Any]:
        """This attempt's figures, closing the meter."""
        return _job_metering(self.meter, self.queue_seconds)

    def charge(self, metering: dict[str, Any]) -> lifecycle.Charge:
        """What settling this attempt needs."""
        ctx = self.ctx
        return lifecycle.Charge(ctx.catalog, self.job.attempts, metering, ctx.gpu_type)

    async def status(self) -> str | None:
        """The job's status in the store now."""
        return await self.ctx.db.read(lifecycle.status_of, self.job.id)

    async def finish(self, to: str, **values: Any) -> bool:
        """Move to a terminal state with the charge; False if another process finished it."""
        m = self.metering()
        done = await self.ctx.db.write(lifecycle.finish, self.job.id, to, self.charge(m), values)
        observe_attempt(self.job.template, m)
        return done

    async def settle_as_is(self) -> str:
        """The job was finished elsewhere (cancel, timeout): charge what this attempt used."""
        m = self.metering()
        await self.ctx.db.write(lifecycle.settle_as_is, self.job.id, self.charge(m))
        observe_attempt(self.job.template, m)
        return await self.status() or CANCELLED

    async def fail(self, err: JobFailure) -> str:
        """Fail the job with a problem body; platform faults are charged to the platform."""
        body = problem_of(err)
        body["platform_fault"] = err.platform_fault
        if await self.finish(FAILED, error=body, finished_at=utcnow()):
            await _notify(self.ctx, self.job.id, FAILED)
            return FAILED
        return await self.status() or FAILED

    async def retry_or_fail(self, err: JobFailure) -> str:
        """An engine fault is retried once on a fresh engine; the second time the job fails."""
        fresh: Job | None = await self.ctx.db.read(lifecycle.load, self.job.id)
        if fresh is not None and fresh.attempts < MAX_ATTEMPTS:
            m = self.metering()
            if await self.ctx.db.write(lifecycle.requeue, self.job, self.charge(m)):
                observe_attempt(self.job.template, m)
                log.warning("job %s re-queued after engine fault: %s", self.job.id, err.detail)
                if self.ctx.on_engine_down is not None:
                    await self.ctx.on_engine_down()
                return QUEUED
        return await self.fail(err)


async def _heartbeat(
    ctx: WorkerContext, job_id: str, cancel: asyncio.Event, stop: asyncio.Event
) -> None:
    """Keep the job's heartbeat fresh, and notice at once a cancel made by another process (the
    change feed; the heartbeat's own read is the net under it)."""
    with ctx.db.events.watch(JOB, job_id) as changes:
        next_beat = time.monotonic() + ctx.heartbeat_s
        while not stop.is_set():
            changed = await changes.wait(max(0.0, next_beat - time.monotonic()))
            if stop.is_set():
                return
            if changed and not any(c.status in (CANCELLED, None) for c in changes.drain()):
                continue
            if not changed:
                next_beat = time.monotonic() + ctx.heartbeat_s
            try:
                if changed:
                    status = await ctx.db.read(lifecycle.status_of, job_id)
                else:
                    status = await ctx.db.write(lifecycle.beat, job_id)
                if status == CANCELLED:
                    cancel.set()
            except Exception:  # a database blip must not kill the job; the next beat retries
                log.warning("heartbeat for %s failed", job_id, exc_info=True)


async def _engine_ready(run: _Attempt) -> bool:
    ctx = run.ctx
    if ctx.comfy.socket_open:
        return True  # its websocket is up: the process is there (a dead one closes it)
    try:
        await ctx.comfy.system_stats()
        return True
    except ComfyError:
        pass
    if ctx.on_engine_down is None:
        return False
    t0 = time.monotonic()
    try:
        return await ctx.on_engine_down()
    finally:
        # A (re)start this job waited for is part of its cold start.
        run.meter.engine_start_seconds += time.monotonic() - t0


async def _run(run: _Attempt, t: Template, cancel: asyncio.Event) -> str:
    ctx, job, meter = run.ctx, run.job, run.meter
    if not await _engine_ready(run):
        return await run.retry_or_fail(EngineUnavailable("ComfyUI did not answer its health check"))

    in_t0 = time.monotonic()
    try:
        for rec in (job.inputs or {}).values():
            data = await asyncio.to_thread(ctx.storage.get, rec["key"])
            await ctx.comfy.upload_image(data, rec["comfy_name"])
    except ComfyUnavailable as e:
        return await run.retry_or_fail(EngineUnavailable(f"uploading inputs failed: {e}"))
    meter.input_upload_seconds = time.monotonic() - in_t0

    last = 0.0
    saw_state = False

    async def on_progress(ev: ProgressEvent) -> None:
        nonlocal last, saw_state
        meter.on_event(ev)
        now = time.monotonic()
        # progress_state (current ComfyUI) gives the whole prompt's share; older servers
        # only the running node's steps. A server sending both is followed by the first.
        if ev.type == "progress" and saw_state:
            return
        fraction = ev.fraction
        if ev.type == "progress_state":
            saw_state = True
        if fraction is None or now - last < ctx.progress_min_interval_s:
            return
        last = now
        frac = min(0.99, float(fraction))
        await ctx.db.write(lifecycle.set_running, job.id, progress=frac)

    meter.submitted_at = time.monotonic()
    try:
        result = await ctx.comfy.run(
            job.graph,
            client_id=job.id,
            on_progress=on_progress,
            timeout=float(t.limits.max_run_seconds),
            cancel=cancel,
        )
    except ComfyInterrupted:
        if await run.status() == RUNNING:
            return await run.fail(JobTimedOut("the job was interrupted"))
        # Cancelled, or timed out by the supervisor: charge what it used.
        return await run.settle_as_is()
    except ComfyTimeout:
        return await run.fail(
            JobTimedOut(f"the job ran past its limit of {t.limits.max_run_seconds} s")
        )
    except ComfyValidationError as e:
        fields = node_errors_to_fields(t, ctx.graphs.bindings(t), e.node_errors)
        return await run.fail(
            ExecutionFailed(f"ComfyUI refused the graph: {e}", extra={"errors": fields})
        )
    except ComfyExecutionError as e:
        return await run.fail(
            ExecutionFailed(f"node {e.node_id} ({e.node_type}) failed: {e.message}")
        )
    except ComfyUnavailable as e:
        return await run.retry_or_fail(EngineUnavailable(f"ComfyUI went away mid-job: {e}"))

    # The client's stamps bracket the prompt even when it fell back to polling.
    meter.submitted_at = result.queued_at
    meter.ran(result.started, result.finished)
    if cancel.is_set():
        return await run.settle_as_is()
    refs = result.outputs
    if len(refs) > t.limits.max_outputs:
        return await run.fail(
            ExecutionFailed(
                f"the graph made {len(refs)} outputs; the limit is {t.limits.max_outputs}"
            ),
        )
    up_t0 = time.monotonic()
    outputs: list[dict[str, Any]] = []
    try:
        fmt, quality = output_choice(job.params)
        for i, ref in enumerate(refs):
            outputs.append(await store_output(ctx, ref, fmt, quality, job.id, i))
    except ComfyUnavailable as e:
        await _drop_outputs(ctx, outputs)
        return await run.retry_or_fail(EngineUnavailable(f"fetching outputs failed: {e}"))
    meter.upload_seconds = time.monotonic() - up_t0
    done = await run.finish(
        SUCCEEDED,
        outputs=outputs,
        progress=1.0,
        finished_at=utcnow(),
        execution_s=result.execution_seconds,
        comfy_version=ctx.comfy_version,
        comfy_prompt_id=result.prompt_id,
    )
    if not done:
        # Cancelled (or timed out by the supervisor) while we finished: keep nothing.
        await _drop_outputs(ctx, outputs)
        return await run.status() or CANCELLED
    await _notify(ctx, job.id, SUCCEEDED)
    return SUCCEEDED


async def store_output(
    ctx: WorkerContext, ref: OutputRef, fmt: OutputFormat, quality: int, job_id: str, i: int
) -> dict[str, Any]:
    """Output `i` of a job: fetched from ComfyUI, re-encoded and stored (the two in one trip to
    a worker thread); its record on the job."""
    raw = await ctx.comfy.view(ref)
    img, key = await asyncio.to_thread(_encode_and_store, ctx, raw, fmt, quality, job_id, i)
    return {
        "key": key,
        "content_type": img.content_type,
        "width": img.width,
        "height": img.height,
        "bytes": len(img.data),
    }


def _encode_and_store(
    ctx: WorkerContext, raw: bytes, fmt: OutputFormat, quality: int, job_id: str, i: int
) -> tuple[EncodedImage, str]:
    img = encode_output(raw, fmt, quality)
    key = f"jobs/{job_id}/{i}.{img.extension}"
    ctx.storage.put(key, img.data, img.content_type)
    return img, key


async def _drop_outputs(ctx: WorkerContext, outputs: list[dict[str, Any]]) -> None:
    for o in outputs:
        await asyncio.to_thread(ctx.storage.delete, o["key"])


async def _notify(ctx: WorkerContext, job_id: str, status: str) -> None:
    for hook in ctx.hooks:
        r = hook(job_id, status)
        if r is not None:
            await r
