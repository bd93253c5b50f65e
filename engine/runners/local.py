"""The local runner: an asyncio worker pool over one supervised ComfyUI subprocess."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from engine.catalog.catalog import Batching
from engine.db.database import Database
from engine.db.tables import Job
from engine.jobs import lifecycle
from engine.jobs.events import JOB, Watch
from engine.jobs.states import QUEUED
from engine.jobs.supervisor import sweep
from engine.runners.base import Runner
from engine.runners.batch import batch_terms, execute_batch, job_key
from engine.runners.worker import WorkerContext, execute_job

log = logging.getLogger("stencil.runner.local")


class LocalRunner(Runner):
    """Claims queued jobs from the store and runs them with the shared worker function."""

    name = "local"

    def __init__(
        self,
        ctx: WorkerContext,
        *,
        concurrency: int = 1,
        poll_interval_s: float = 1.0,
        supervise_interval_s: float = 5.0,
        heartbeat_timeout_s: float = 30.0,
        engine_check: Callable[[], Awaitable[dict[str, Any]]] | None = None,
        batching: str = "off",
        gpu_class: str | None = None,
    ) -> None:
        self.ctx = ctx
        # STENCIL_BATCHING, and the catalog GPU class this engine is (None: the CPU).
        self.batching = batching
        self.gpu_class = gpu_class
        self._gathering = asyncio.Lock()
        self.concurrency = concurrency
        self.poll_interval_s = poll_interval_s
        self.supervise_interval_s = supervise_interval_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self._engine_check = engine_check
        self._tasks: list[asyncio.Task[None]] = []
        self._running: dict[str, tuple[asyncio.Event, asyncio.Task[Any]]] = {}
        self._stopping = False

    @property
    def db(self) -> Database:
        """The job store."""
        return self.ctx.db

    async def start(self) -> None:
        """Start the worker loops and the supervisor."""
        for i in range(self.concurrency):
            self._tasks.append(asyncio.create_task(self._loop(i), name=f"stencil-worker-{i}"))
        self._tasks.append(asyncio.create_task(self._supervise(), name="stencil-supervisor"))

    async def stop(self) -> None:
        """Stop taking jobs; in-flight jobs are left to the supervisor of the next process."""
        self._stopping = True
        for t in self._tasks:
            t.cancel()
        for _, task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(
            *self._tasks, *(t for _, t in self._running.values()), return_exceptions=True
        )
        self._tasks.clear()

    async def submitted(self, job_id: str, gpu_class: str) -> str | None:
        """Nothing to do: the job's `queued` event wakes a worker. No call id here."""
        return None

    async def cancel(self, job_id: str, call_id: str | None, wait_s: float = 15.0) -> None:
        """Interrupt a running job and wait until ComfyUI has let go of it."""
        entry = self._running.get(job_id)
        if entry is None:
            return
        event, task = entry
        event.set()
        if any(not e.is_set() for e, t in self._running.values() if t is task):
            return  # its batch runs on for the others; it keeps no outputs
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=wait_s)
        except (TimeoutError, asyncio.CancelledError, Exception):
            log.warning("job %s did not stop within %.0f s of cancel", job_id, wait_s)

    async def ready(self) -> dict[str, Any]:
        """Engine facts for /ready; raises if the engine does not answer."""
        stats = await self.ctx.comfy.system_stats()
        # Older ComfyUI releases do not report their version; fall back to the installed one.
        version = stats.get("system", {}).get("comfyui_version") or self.ctx.comfy_version
        return {"runner": self.name, "comfyui": version}

    async def _loop(self, i: int) -> None:
        # Woken by every job that enters `queued` (submitted here or in another API process,
        # or re-queued); the slow poll is only the net under a lost notification.
        with self.db.events.watch(JOB) as changes:
            woken = False
            while not self._stopping:
                # A lone loop woken by a queued job claims it without looking first; several
                # loops all wake, and all but one would take the write lock for nothing.
                woken = await self._take_one(changes, look=not woken or self.concurrency > 1)

    async def _take_one(self, changes: Watch, *, look: bool = True) -> bool:
        """Claim and run one job, or wait for one; True when woken by a job queued (the next
        call then claims without looking first)."""
        while True:
            try:
                # Look before taking the write lock (unless a job was just queued): `changes`
                # is already watching, so a job queued after this read still wakes the wait.
                claimed: Job | None = None
                if not look or await self.db.fetch(lifecycle.any_queued, self.name):
                    claimed = await self.db.write(lifecycle.claim, self.ctx.worker_id, self.name)
                break
            except Exception:
                log.exception("claiming a job failed; retrying")
                await asyncio.sleep(self.poll_interval_s)
        if claimed is None:
            deadline = asyncio.get_running_loop().time() + self.poll_interval_s
            while (left := deadline - asyncio.get_running_loop().time()) > 0:
                if await changes.wait(left) and any(
                    c.status in (QUEUED, None) for c in changes.drain()
                ):
                    return True
            return False
        job = claimed.id
        batch = await self._claim_batch(claimed)
        events = {j: asyncio.Event() for j in batch}
        task: asyncio.Task[Any]
        if len(batch) > 1:
            task = asyncio.create_task(execute_batch(self.ctx, batch, events))
        else:
            task = asyncio.create_task(execute_job(self.ctx, job, events[job], claimed))
        for j in batch:
            self._running[j] = (events[j], task)
        try:
            status = await asyncio.shield(task)
            log.info("job %s -> %s", ", ".join(batch), status)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("job %s crashed the worker function", ", ".join(batch))
        finally:
            for j in batch:
                self._running.pop(j, None)
        return False

    async def _claim_batch(self, job: Job) -> list[str]:
        """Jobs to run with the claimed `job`: same-key queued jobs, claimed as they come.

        Up to the template's `max_jobs`, waiting for company until `job` has been waiting
        `max_wait_ms` since it was accepted; `[job.id]` when its template is not batched here.
        """
        first = job.id
        if self.batching == "off" or (self.batching == "auto" and self.gpu_class is None):
            return [first]  # nothing batches here
        t = self.ctx.catalog.get(job.template, int(job.template_version.split(".")[0]))
        terms = batch_terms(t, self.batching, self.gpu_class) if t is not None else None
        if terms is None:
            return [first]
        key = job_key(job, terms)
        waited = ((job.started_at or job.created_at) - job.created_at).total_seconds()
        deadline = time.monotonic() + max(terms.max_wait_ms / 1000 - waited, 0.0)
        batch = [first]
        async with self._gathering:
            while len(batch) < terms.max_jobs:
                more = await self.db.run(self._claim_same, key, terms, terms.max_jobs - len(batch))
                batch += more
                if len(batch) >= terms.max_jobs or time.monotonic() >= deadline:
                    break
                if not more:
                    await asyncio.sleep(min(0.02, max(deadline - time.monotonic(), 0.0)))
        return batch

    def _claim_same(self, s: Session, key: tuple[str, ...], terms: Batching, n: int) -> list[str]:
        """Claim up to `n` queued jobs whose batch key is `key`, oldest first."""
        template, version = key[0], key[1]
        rows = s.scalars(
            select(Job)
            .where(
                Job.status == QUEUED,
                Job.template == template,
                Job.template_version == version,
                or_(Job.runner == self.name, Job.runner.is_(None)),
            )
            .order_by(Job.created_at, Job.id)
            .limit(max(4 * n, 16))
        ).all()
        out: list[str] = []
        for row in rows:
            if len(out) >= n:
                break
            if job_key(row, terms) == key and lifecycle.claim_one(s, row.id, self.ctx.worker_id):
                out.append(row.id)
        return out

    async def _supervise(self) -> None:
        while not self._stopping:
            try:
                actions = await asyncio.to_thread(
                    sweep, self.db, self.ctx.catalog, heartbeat_timeout_s=self.heartbeat_timeout_s
                )
                for a in actions:
                    if a.action == "run_timeout":
                        await self.cancel(a.job_id, a.call_id)
            except Exception:
                log.exception("supervisor sweep failed")
            await asyncio.sleep(self.supervise_interval_s)


def worker_id() -> str:
    """This process's worker id (host and pid)."""
    return f"{socket.gethostname()}:{os.getpid()}"
