"""The supervisor: fails jobs past their limits and recovers jobs whose worker vanished."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from engine.billing.ledger import settle_leftovers
from engine.catalog.catalog import Catalog
from engine.db.database import Database, utcnow
from engine.db.tables import Job
from engine.errors import JobTimedOut, WorkerLost, problem_of
from engine.jobs import lifecycle
from engine.jobs.states import QUEUED, RUNNING

log = logging.getLogger("stencil.supervisor")


@dataclass(frozen=True)
class Action:
    """What one sweep did to one job."""

    job_id: str
    action: str  # "queue_timeout" | "run_timeout" | "requeued" | "worker_lost" | "settled"
    call_id: str | None = None


def sweep(
    db: Database,
    catalog: Catalog,
    *,
    heartbeat_timeout_s: float,
    max_attempts: int = 2,
    settle_grace_s: float | None = None,
    now: datetime | None = None,
) -> list[Action]:
    """One pass over active jobs; every change is a compare-and-set, so sweeps may overlap.

    A job whose worker vanished is charged from database times (start to last heartbeat) as
    platform cost, since no monotonic figures survive the worker; finished jobs whose charge
    was never settled (their worker died after a cancel or timeout) are settled the same way
    once `settle_grace_s` has passed (default: the heartbeat timeout plus 15 s).
    """
    now = now or utcnow()
    actions: list[Action] = []
    with db.session() as s:
        active = list(s.scalars(select(Job).where(Job.status.in_([QUEUED, RUNNING]))))
    for job in active:
        t = catalog.get(job.template, int(job.template_version.split(".")[0]))
        max_queue = t.limits.max_queue_seconds if t else 600
        max_run = t.limits.max_run_seconds if t else 300
        with db.session() as s:
            if job.status == QUEUED and job.created_at < now - timedelta(seconds=max_queue):
                err = problem_of(JobTimedOut(f"the job waited in the queue over {max_queue} s"))
                err["platform_fault"] = True
                if lifecycle.expire(s, job.id, QUEUED, err, now):
                    actions.append(Action(job.id, "queue_timeout", job.call_id))
            elif job.status == RUNNING:
                started = job.started_at or job.created_at
                beat = job.heartbeat_at or started
                # A little grace: the worker enforces the run limit itself first.
                if started < now - timedelta(seconds=max_run + 30):
                    err = problem_of(JobTimedOut(f"the job ran over its limit of {max_run} s"))
                    err["platform_fault"] = False
                    if lifecycle.expire(s, job.id, RUNNING, err, now):
                        actions.append(Action(job.id, "run_timeout", job.call_id))
                elif beat < now - timedelta(seconds=heartbeat_timeout_s):
                    err = problem_of(
                        WorkerLost(f"no heartbeat from the worker for {heartbeat_timeout_s:.0f} s")
                    )
                    err["platform_fault"] = True
                    what = lifecycle.recover_lost(
                        s, job, catalog=catalog, error=err, max_attempts=max_attempts, now=now
                    )
                    if what is not None:
                        actions.append(Action(job.id, what, job.call_id))
    grace = settle_grace_s if settle_grace_s is not None else heartbeat_timeout_s + 15
    for charge in settle_leftovers(db, catalog, grace_s=grace, now=now):
        actions.append(Action(charge.job_id, "settled"))
    for a in actions:
        log.warning("supervisor: job %s %s", a.job_id, a.action)
    return actions
