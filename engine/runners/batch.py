"""The worker's batch unit: one ComfyUI prompt carrying several claimed jobs of one shape.

`execute_batch` runs jobs the runner claimed together (all `running`, one template, one batch
key) as the one prompt `engine.runners.batching.build_batch` makes of them, and gives each job
what `execute_job` gives a lone one: progress, outputs, metering, its charge and its webhook.
The batch's seconds are divided among its jobs by `split_batch`, in proportion to the images
each asked for. A batch is one attempt for every job in it.

Cancelling one job does not stop the prompt (its neighbours still need it): that job keeps no
outputs and pays its share of what ran. Cancelling every job of the batch interrupts it.
A job whose graph makes the prompt fail is failed alone; its neighbours' lost attempt is
charged to the platform and they run again without it (alone, when ComfyUI's error names no
one job).
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from engine.billing.metering import PromptMeter, split_batch
from engine.catalog.catalog import Batching, Catalog, Template
from engine.comfy import (
    ComfyExecutionError,
    ComfyInterrupted,
    ComfyTimeout,
    ComfyUnavailable,
    ComfyValidationError,
    ProgressEvent,
)
from engine.db.database import Database, utcnow
from engine.db.tables import Job
from engine.errors import EngineUnavailable, ExecutionFailed, JobTimedOut
from engine.jobs import lifecycle
from engine.jobs.states import CANCELLED, RUNNING, SUCCEEDED
from engine.metrics import observe_attempt
from engine.runners.batching import BatchRefused, batch_key, build_batch
from engine.runners.outputs import output_choice
from engine.runners.worker import (
    WorkerContext,
    _Attempt,
    _drop_outputs,
    _engine_ready,
    _heartbeat,
    _notify,
    execute_job,
    node_errors_to_fields,
    store_output,
)

log = logging.getLogger("stencil.batch")

MODES = ("off", "auto", "force")
_COPY = re.compile(r"^(?:stencil_split\.)?(?P<node>.+)\.j(?P<index>\d+)$")


def batch_terms(t: Template, mode: str, gpu_class: str | None) -> Batching | None:
    """The batching terms for `t` on a runner, or None when its jobs run alone.

    `mode` is STENCIL_BATCHING; `gpu_class` is the catalog class the runner serves, None for
    the local CPU runner (where batching does not pay, so `auto` never batches there).
    """
    b = t.batching
    if b is None or mode == "off":
        return None
    if mode == "force":
        return b
    return b if gpu_class is not None and b.on(gpu_class) else None


def job_key(job: Job, terms: Batching) -> tuple[str, str, str, str]:
    """What two queued jobs must share to be batched: template, version, key params, graph."""
    params = {k: (job.params or {}).get(k) for k in terms.key}
    try:
        shape = batch_key(job.graph)
    except BatchRefused:
        shape = f"alone:{job.id}"  # a graph that cannot be batched has no company
    return (job.template, job.template_version, repr(sorted(params.items())), shape)


def new_batch_id() -> str:
    """A batch id (`bat_...`), shared by the jobs of one batched prompt."""
    return "bat_" + secrets.token_hex(12)


class _Member(_Attempt):
    """One job's attempt inside a batch: its share of the batch's meter."""

    def __init__(self, batch: _Batch, job: Job, index: int) -> None:
        super().__init__(batch.ctx, job, batch.meter)
        self.batch, self.index = batch, index

    def metering(self) -> dict[str, Any]:
        """This job's share of the batch's figures plus its own queue wait."""
        return {**self.batch.shares()[self.index], "queue_seconds": self.queue_seconds}


class _Batch:
    """The jobs of one batched prompt, the shared meter and its split."""

    def __init__(self, ctx: WorkerContext, jobs: Sequence[Job], graph: Mapping[str, Any]) -> None:
        self.ctx = ctx
        self.meter = PromptMeter(graph)
        self.members = [_Member(self, job, i) for i, job in enumerate(jobs)]
        self.weights: list[float] = [1.0] * len(jobs)
        self._shares: list[dict[str, Any]] | None = None

    def shares(self) -> list[dict[str, Any]]:
        """Each job's part of the prompt's seconds, split once (the meter closes)."""
        if self._shares is None:
            self._shares = split_batch(self.meter.figures(), self.weights)
        return self._shares


async def execute_batch(
    ctx: WorkerContext,
    job_ids: Sequence[str],
    cancels: Mapping[str, asyncio.Event] | None = None,
) -> dict[str, str]:
    """Run claimed (`running`) jobs as one prompt; returns each job's final state."""
    cancels = dict(cancels or {})
    for job_id in job_ids:
        cancels.setdefault(job_id, asyncio.Event())
    jobs: list[Job] = []
    states: dict[str, str] = {}
    for job_id in job_ids:
        job: Job | None = await ctx.db.read(lifecycle.load, job_id)
        if job is None or job.status != RUNNING:
            states[job_id] = job.status if job else "missing"
        else:
            jobs.append(job)
    if len(jobs) <= 1:
        for job in jobs:
            states[job.id] = await execute_job(ctx, job.id, cancels[job.id])
        return states
    t = ctx.catalog.get(jobs[0].template, int(jobs[0].template_version.split(".")[0]))
    try:
        if t is None or len({(j.template, j.template_version) for j in jobs}) != 1:
            raise BatchRefused("the jobs are not of one served template version")
        built = build_batch([(j.id, j.graph) for j in jobs])
    except BatchRefused as e:
        log.info("jobs %s run alone: %s", ", ".join(j.id for j in jobs), e)
        states.update(await _alone(ctx, jobs, cancels))
        return states

    batch = _Batch(ctx, jobs, built.graph)
    batch.weights = [float(built.rows[j.id]) for j in jobs]
    batch_id = new_batch_id()
    for job in jobs:
        await ctx.db.write(lifecycle.set_running, job.id, batch_id=batch_id, batch_size=len(jobs))
    # Container start/restore seconds are paid by the first prompt the container runs.
    batch.meter.container_boot_seconds, ctx.container_boot_seconds = (
        ctx.container_boot_seconds,
        0.0,
    )
    stop = asyncio.Event()
    everyone = asyncio.Event()  # every job cancelled: interrupt the prompt
    watch = asyncio.create_task(_all_cancelled([cancels[j.id] for j in jobs], everyone))
    beats = [asyncio.create_task(_heartbeat(ctx, j.id, cancels[j.id], stop)) for j in jobs]
    try:
        states.update(await _run(batch, t, built.outputs, batch_id, cancels, everyone))
    finally:
        stop.set()
        watch.cancel()
        await asyncio.gather(*beats, watch, return_exceptions=True)
    return states


async def _all_cancelled(events: Iterable[asyncio.Event], out: asyncio.Event) -> None:
    await asyncio.gather(*(e.wait() for e in events))
    out.set()


def _culprits(batch: _Batch, node_ids: Iterable[str]) -> set[int]:
    """The jobs whose own nodes (`<node>.j<i>` copies) an error names."""
    out: set[int] = set()
    for n in node_ids:
        m = _COPY.match(str(n))
        if m and int(m["index"]) < len(batch.members):
            out.add(int(m["index"]))
    return out


async def _alone(
    ctx: WorkerContext, jobs: Sequence[Job], cancels: Mapping[str, asyncio.Event]
) -> dict[str, str]:
    states: dict[str, str] = {}
    for job in jobs:
        states[job.id] = await execute_job(ctx, job.id, cancels[job.id])
    return states


async def _isolate(
    batch: _Batch,
    t: Template,
    bad: dict[int, ExecutionFailed],
    cancels: Mapping[str, asyncio.Event],
) -> dict[str, str]:
    """Fail the jobs that broke the prompt; re-run the others without them, on the platform."""
    states: dict[str, str] = {}
    for i, err in bad.items():
        states[batch.members[i].job.id] = await batch.members[i].fail(err)
    again: list[str] = []
    for i, m in enumerate(batch.members):
        if i in bad:
            continue
        metering = m.metering()
        if await batch.ctx.db.write(lifecycle.rerun_in_batch, m.job, m.charge(metering)):
            observe_attempt(m.job.template, metering)
            again.append(m.job.id)
        else:  # cancelled meanwhile: settle what it used
            states[m.job.id] = await m.settle_as_is()
    if again:
        log.warning("re-running %s without the job that failed their batch", ", ".join(again))
        if bad:
            states.update(await execute_batch(batch.ctx, again, cancels))
        else:
            fresh = [j for j in [await batch.ctx.db.read(lifecycle.load, i) for i in again] if j]
            states.update(await _alone(batch.ctx, fresh, cancels))
    return states


async def _run(
    batch: _Batch,
    t: Template,
    outputs_of: dict[str, list[str]],
    batch_id: str,
    cancels: Mapping[str, asyncio.Event],
    everyone: asyncio.Event,
) -> dict[str, str]:
    ctx, meter, members = batch.ctx, batch.meter, batch.members
    lead = members[0]
    if not await _engine_ready(lead):
        err = EngineUnavailable("ComfyUI did not answer its health check")
        return {m.job.id: await m.retry_or_fail(err) for m in members}

    in_t0 = time.monotonic()
    try:
        for m in members:
            for rec in (m.job.inputs or {}).values():
                data = await asyncio.to_thread(ctx.storage.get, rec["key"])
                await ctx.comfy.upload_image(data, rec["comfy_name"])
    except ComfyUnavailable as e:
        err = EngineUnavailable(f"uploading inputs failed: {e}")
        return {m.job.id: await m.retry_or_fail(err) for m in members}
    meter.input_upload_seconds = time.monotonic() - in_t0

    last = 0.0
    saw_state = False

    async def on_progress(ev: ProgressEvent) -> None:
        nonlocal last, saw_state
        meter.on_event(ev)
        now = time.monotonic()
        if ev.type == "progress" and saw_state:
            return
        if ev.type == "progress_state":
            saw_state = True
        if ev.fraction is None or now - last < ctx.progress_min_interval_s:
            return
        last = now
        frac = min(0.99, float(ev.fraction))
        for m in members:
            await ctx.db.write(lifecycle.set_running, m.job.id, progress=frac)

    meter.submitted_at = time.monotonic()
    try:
        result = await ctx.comfy.run(
            dict(meter.graph),
            client_id=batch_id,
            on_progress=on_progress,
            timeout=float(t.limits.max_run_seconds),
            cancel=everyone,
        )
    except ComfyInterrupted:
        out: dict[str, str] = {}
        for m in members:
            if await ctx.db.read(lifecycle.status_of, m.job.id) == RUNNING:
                out[m.job.id] = await m.fail(JobTimedOut("the job was interrupted"))
            else:
                out[m.job.id] = await m.settle_as_is()
        return out
    except ComfyTimeout:
        late = JobTimedOut(f"the job ran past its limit of {t.limits.max_run_seconds} s")
        return {m.job.id: await m.fail(late) for m in members}
    except ComfyValidationError as e:
        bad_nodes = _culprits(batch, e.node_errors or {})
        bad: dict[int, ExecutionFailed] = {}
        for i in bad_nodes:
            mine = {
                _COPY.match(n)["node"]: v  # type: ignore[index]
                for n, v in (e.node_errors or {}).items()
                if _COPY.match(n) and int(_COPY.match(n)["index"]) == i  # type: ignore[index]
            }
            fields = node_errors_to_fields(t, ctx.graphs.bindings(t), mine)
            bad[i] = ExecutionFailed(f"ComfyUI refused the graph: {e}", extra={"errors": fields})
        return await _isolate(batch, t, bad, cancels)
    except ComfyExecutionError as e:
        who = _culprits(batch, [e.node_id] if e.node_id else [])
        msg = f"node {e.node_id} ({e.node_type}) failed: {e.message}"
        return await _isolate(batch, t, {i: ExecutionFailed(msg) for i in who}, cancels)
    except ComfyUnavailable as e:
        err = EngineUnavailable(f"ComfyUI went away mid-job: {e}")
        return {m.job.id: await m.retry_or_fail(err) for m in members}

    meter.submitted_at = result.queued_at
    meter.ran(result.started, result.finished)
    node_of = {n: m for m in members for n in outputs_of[m.job.id]}
    refs_of: dict[str, list[Any]] = {m.job.id: [] for m in members}
    for ref in result.outputs:
        owner = node_of.get(str(ref.node_id))
        if owner is not None:
            refs_of[owner.job.id].append(ref)

    up_t0 = time.monotonic()
    stored: dict[str, list[dict[str, Any]]] = {}
    states: dict[str, str] = {}
    failed: dict[str, ExecutionFailed] = {}
    lost: EngineUnavailable | None = None
    for m in members:
        job = m.job
        await ctx.db.write(lifecycle.set_running, job.id, comfy_prompt_id=result.prompt_id)
        if cancels[job.id].is_set() or await ctx.db.read(lifecycle.status_of, job.id) != RUNNING:
            continue  # cancelled mid-batch: none of its images are kept
        refs = refs_of[job.id]
        if len(refs) > t.limits.max_outputs:
            failed[job.id] = ExecutionFailed(
                f"the graph made {len(refs)} outputs; the limit is {t.limits.max_outputs}"
            )
            continue
        outputs: list[dict[str, Any]] = []
        stored[job.id] = outputs
        try:
            fmt, quality = output_choice(job.params)
            for i, ref in enumerate(refs):
                outputs.append(await store_output(ctx, ref, fmt, quality, job.id, i))
        except ComfyUnavailable as e:
            lost = EngineUnavailable(f"fetching outputs failed: {e}")
            break
    meter.upload_seconds = time.monotonic() - up_t0
    if lost is not None:
        for outputs in stored.values():
            await _drop_outputs(ctx, outputs)
        return {m.job.id: await m.retry_or_fail(lost) for m in members}

    for m in members:
        job = m.job
        if job.id in failed:
            states[job.id] = await m.fail(failed[job.id])
            continue
        if job.id not in stored:
            states[job.id] = await m.settle_as_is()
            continue
        done = await m.finish(
            SUCCEEDED,
            outputs=stored[job.id],
            progress=1.0,
            finished_at=utcnow(),
            execution_s=result.execution_seconds,
            comfy_version=ctx.comfy_version,
        )
        if not done:
            await _drop_outputs(ctx, stored[job.id])
            states[job.id] = await m.status() or CANCELLED
            continue
        await _notify(ctx, job.id, SUCCEEDED)
        states[job.id] = SUCCEEDED
    return states


# ---- Modal: dynamic batching on the GPU classes ----------------------------------------------


def batcher_cls_name(gpu_class: str) -> str:
    """The Modal class batching a catalog GPU class's jobs (`l4` -> `Batcher_l4`)."""
    return f"Batcher_{gpu_class}"


def batched_classes(catalog: Catalog, mode: str) -> dict[str, tuple[int, int]]:
    """GPU classes with a template batched on them: (max_batch_size, wait_ms) for each.

    Modal's `@modal.batched` takes one size and one window per class: the largest of its
    templates' `max_jobs` and `max_wait_ms` (each batch is then cut to its template's own
    `max_jobs` by `group_jobs`).
    """
    out: dict[str, tuple[int, int]] = {}
    for name in catalog.gpu_classes:
        terms = [
            b
            for t in catalog.templates
            if t.gpu_class == name and (b := batch_terms(t, mode, name)) is not None
        ]
        if terms:
            out[name] = (max(b.max_jobs for b in terms), max(b.max_wait_ms for b in terms))
    return out


def group_jobs(
    db: Database, catalog: Catalog, job_ids: Sequence[str], mode: str, gpu_class: str | None
) -> list[list[str]]:
    """Claimed jobs grouped into batches: one batch key each, at most `max_jobs` a batch."""
    groups: dict[tuple[str, ...], list[str]] = {}
    with db.session() as s:
        for job_id in job_ids:
            job = s.get(Job, job_id)
            t = catalog.get(job.template, int(job.template_version.split(".")[0])) if job else None
            terms = batch_terms(t, mode, gpu_class) if t is not None else None
            if job is None or terms is None:
                groups[("alone", job_id)] = [job_id]
                continue
            key = job_key(job, terms)
            n = 0
            while len(groups.setdefault((*key, str(n)), [])) >= terms.max_jobs:
                n += 1
            groups[(*key, str(n))].append(job_id)
    return list(groups.values())
