"""The Modal runner: dispatch each job to its template's GPU class, cancel it there.

The API process never runs ComfyUI in this mode. `submitted` spawns the GPU class's `run`
method (`engine.modal_worker` inside the container claims the job from the store and runs the
shared worker function) and hands back the FunctionCall id, which the API stores on the job.
Every call to Modal's servers goes through a `ModalLookup`, so tests replace exactly
`spawn`, `FunctionCall.from_id` and `cancel` and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import select

from engine.catalog.catalog import Catalog
from engine.db.database import Database, utcnow
from engine.db.tables import Job
from engine.jobs import lifecycle
from engine.jobs.states import QUEUED
from engine.jobs.supervisor import Action, sweep
from engine.runners.base import Runner
from engine.runners.batch import batch_terms, batcher_cls_name

log = logging.getLogger("stencil.runner.modal")

APP_NAME = "stencil"
RUNNER_NAME = "modal"
# Actions of a sweep after which the job's Modal call must not go on running.
_STOP_CALL = frozenset({"queue_timeout", "run_timeout", "worker_lost", "requeued"})


def worker_cls_name(gpu_class: str) -> str:
    """The Modal class serving a catalog GPU class (`l4` -> `Worker_l4`)."""
    return f"Worker_{gpu_class}"


class SpawnedCall(Protocol):
    """What `spawn` returns: a FunctionCall."""

    @property
    def object_id(self) -> str:
        """The call id stored on the job."""
        ...


class RunMethod(Protocol):
    """A GPU class's `run` method."""

    def spawn(self, job_id: str) -> SpawnedCall:
        """Queue one call without waiting for it."""
        ...


class CancellableCall(Protocol):
    """A FunctionCall found by id."""

    def cancel(self) -> None:
        """Cancel the call; the container sees its input cancelled."""
        ...


class ModalLookup(Protocol):
    """The boundary to Modal's servers."""

    def run_method(self, app_name: str, cls_name: str) -> RunMethod:
        """`modal.Cls.from_name(app_name, cls_name)().run`."""
        ...

    def function_call(self, call_id: str) -> CancellableCall:
        """`modal.FunctionCall.from_id(call_id)`."""
        ...


class SdkLookup:
    """The real lookup through the `modal` client (credentials come from its config)."""

    def run_method(self, app_name: str, cls_name: str) -> RunMethod:
        """The deployed class's `run` method (lazy: nothing is sent until `spawn`)."""
        import modal

        method: RunMethod = modal.Cls.from_name(app_name, cls_name)().run
        return method

    def function_call(self, call_id: str) -> CancellableCall:
        """A FunctionCall handle by id."""
        import modal

        call: CancellableCall = modal.FunctionCall.from_id(call_id)
        return call


class ModalRunner(Runner):
    """Jobs run on Modal GPU classes; the store is the only state shared with the workers."""

    name = RUNNER_NAME

    def __init__(
        self,
        db: Database,
        catalog: Catalog,
        *,
        app_name: str = APP_NAME,
        lookup: ModalLookup | None = None,
        dispatch_grace_s: float = 30.0,
        batching: str = "off",
    ) -> None:
        # STENCIL_BATCHING (the service passes its setting): a template batched on its GPU
        # class goes to the class's batching class (deploy/modal_app.py).
        self.batching = batching
        self.db = db
        self.catalog = catalog
        self.app_name = app_name
        self.lookup: ModalLookup = lookup or SdkLookup()
        self.dispatch_grace_s = dispatch_grace_s
        self._methods: dict[str, RunMethod] = {}

    async def start(self) -> None:
        """Nothing to start: Modal scales the GPU classes."""
        log.info("jobs run on Modal app %r", self.app_name)

    async def stop(self) -> None:
        """Nothing to stop: calls in flight belong to Modal."""

    async def submitted(self, job_id: str, gpu_class: str) -> str | None:
        """Spawn the job on its GPU class; the call id, or None when Modal refused (retried)."""
        try:
            return await asyncio.to_thread(self._spawn, job_id, gpu_class)
        except Exception:
            # The job is stored as queued: the supervisor cron dispatches it again, so a Modal
            # hiccup delays the job instead of failing a request whose job already exists.
            log.exception(
                "spawning job %s on %s failed; the supervisor will retry", job_id, gpu_class
            )
            return None

    async def cancel(self, job_id: str, call_id: str | None, wait_s: float = 15.0) -> None:
        """Cancel the job's Modal call; the worker interrupts ComfyUI and stores nothing."""
        if call_id is None:
            call_id = await asyncio.to_thread(self._stored_call_id, job_id)
        if call_id is None:
            # Not dispatched yet, or its call id not saved yet: the worker's heartbeat sees the
            # cancelled row and stops the job itself.
            return
        if await asyncio.to_thread(self._batched, job_id):
            # Its Modal input is one of a batch the others still need: the batch's heartbeat
            # sees the cancelled row, and the job keeps no outputs.
            return
        try:
            await asyncio.wait_for(asyncio.to_thread(self._cancel, call_id), timeout=wait_s)
        except Exception:
            log.warning("cancelling Modal call %s of job %s failed", call_id, job_id, exc_info=True)

    async def ready(self) -> dict[str, Any]:
        """Static facts: which app and classes jobs go to (asking Modal costs a round trip)."""
        return {
            "runner": self.name,
            "app": self.app_name,
            "classes": {name: worker_cls_name(name) for name in self.catalog.gpu_classes},
        }

    async def supervise(
        self, *, heartbeat_timeout_s: float, now: datetime | None = None
    ) -> list[Action]:
        """One supervisor pass: sweep, stop the calls of swept jobs, (re)dispatch queued jobs."""
        now = now or utcnow()
        actions: list[Action] = await asyncio.to_thread(
            sweep, self.db, self.catalog, heartbeat_timeout_s=heartbeat_timeout_s, now=now
        )
        for a in actions:
            if a.action in _STOP_CALL and a.call_id:
                await self.cancel(a.job_id, a.call_id)
            if a.action == "requeued":
                # The worker vanished; no pool polls the queue on Modal, so spawn a new call.
                await self.dispatch(a.job_id)
        for job_id in await asyncio.to_thread(self._undispatched, now):
            log.warning("job %s was never dispatched; spawning it", job_id)
            await self.dispatch(job_id)
        return actions

    async def dispatch(self, job_id: str) -> str | None:
        """Spawn a queued job again and store the new call id; None if it is not dispatchable."""
        gpu_class = await asyncio.to_thread(self._queued_gpu_class, job_id)
        if gpu_class is None:
            return None
        call_id = await self.submitted(job_id, gpu_class)
        if call_id is not None:
            await asyncio.to_thread(self._save_call_id, job_id, call_id)
        return call_id

    # ---- blocking helpers, run in threads ------------------------------------------------

    def _spawn(self, job_id: str, gpu_class: str) -> str:
        if gpu_class not in self.catalog.gpu_classes:
            raise ValueError(f"unknown GPU class {gpu_class!r}")
        batched = self._batched(job_id)
        cls_name = batcher_cls_name(gpu_class) if batched else worker_cls_name(gpu_class)
        method = self._methods.get(cls_name)
        if method is None:
            method = self._methods[cls_name] = self.lookup.run_method(self.app_name, cls_name)
        call = method.spawn(job_id)
        log.info("job %s spawned on %s as %s", job_id, cls_name, call.object_id)
        return call.object_id

    def _cancel(self, call_id: str) -> None:
        self.lookup.function_call(call_id).cancel()

    def _batched(self, job_id: str) -> bool:
        """Whether the job's template is batched on its GPU class (so on its batcher)."""
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is None:
                return False
            template, version = job.template, job.template_version
        t = self.catalog.get(template, int(version.split(".")[0]))
        return t is not None and batch_terms(t, self.batching, t.gpu_class) is not None

    def _stored_call_id(self, job_id: str) -> str | None:
        with self.db.session() as s:
            job = s.get(Job, job_id)
            return job.call_id if job is not None else None

    def _save_call_id(self, job_id: str, call_id: str) -> None:
        self.db.call(lifecycle.redispatched, job_id, call_id)

    def _queued_gpu_class(self, job_id: str) -> str | None:
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is None or job.status != QUEUED:
                return None
            template, version = job.template, job.template_version
        t = self.catalog.get(template, int(version.split(".")[0]))
        # A template no longer served is left to the queue timeout, which fails it.
        return t.gpu_class if t is not None else None

    def _undispatched(self, now: datetime) -> Sequence[str]:
        cutoff = now - timedelta(seconds=self.dispatch_grace_s)
        with self.db.session() as s:
            return list(
                s.scalars(
                    select(Job.id).where(
                        Job.status == QUEUED,
                        Job.runner == RUNNER_NAME,
                        Job.call_id.is_(None),
                        Job.created_at < cutoff,
                    )
                )
            )
