"""The usage ledger: one append-only row per charge, written once per job attempt.

A charge is settled in the transaction that moves the job to its terminal state (or requeues
it), or, when another process made that move (a cancel, a supervisor timeout), by the worker
right after it lets go of the engine. The unique (job, attempt) key with ON CONFLICT DO NOTHING
makes settling idempotent: whoever comes second writes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Row, Table, and_, bindparam, func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from engine.billing.budgets import month_key, note_spend
from engine.billing.pricing import Rate, price, rate_for, seconds, to_micros, usd_str
from engine.catalog.catalog import Catalog
from engine.db.database import Database, OneRow, insert_ignore, new_id, utcnow
from engine.db.tables import Job, LedgerEntry
from engine.jobs.states import FAILED, TERMINAL

log = logging.getLogger("stencil.ledger")

TENANT, PLATFORM = "tenant", "platform"
RETRIED = "retried"  # the outcome of an attempt the platform gave up on and re-queued


@dataclass(frozen=True)
class Charge:
    """A ledger row just written."""

    job_id: str
    template: str
    gpu_class: str
    payer: str
    billable_seconds: Decimal
    usd: Decimal
    cold_start: bool


def payer_of(status: str, error: Mapping[str, Any] | None) -> str:
    """Who pays: the platform for failures it caused (`platform_fault`), else the tenant."""
    if status == FAILED and (error or {}).get("platform_fault", True):
        return PLATFORM
    return TENANT


def _ms(metering: Mapping[str, Any], key: str) -> int:
    return int(seconds(float(metering.get(key) or 0.0)) * 1000)


def _rate(catalog: Catalog, job: Job | Row[Any], gpu_type: str | None) -> Rate:
    t = catalog.get(job.template, int(job.template_version.split(".")[0]))
    if t is None:
        # The template left the catalog while the job ran: record the seconds, price nothing.
        log.warning("job %s: template %s is not in the catalog; charged at 0", job.id, job.template)
        zero = Decimal(0)
        return Rate("unknown", gpu_type or "unknown", zero, zero, zero, zero)
    return rate_for(catalog, t.gpu_class, gpu_type)


def settle(
    s: Session,
    job: Job | Row[Any],
    *,
    catalog: Catalog,
    attempt: int,
    metering: Mapping[str, Any],
    payer: str,
    outcome: str,
    gpu_type: str | None = None,
    now: datetime | None = None,
) -> Charge | None:
    """Price one attempt and append its ledger row; None if it was already settled."""
    now = now or utcnow()
    rate = _rate(catalog, job, gpu_type)
    billable = seconds(float(metering.get("billable_seconds") or 0.0))
    usd = price(billable, rate)
    month = month_key(now)
    written = insert_ignore(
        s,
        LedgerEntry,
        id=new_id("chg"),
        job_id=job.id,
        attempt=attempt,
        tenant_id=job.tenant_id,
        template=job.template,
        template_version=job.template_version,
        gpu_class=rate.gpu_class,
        gpu_type=rate.gpu_type,
        payer=payer,
        outcome=outcome,
        billable_ms=int(billable * 1000),
        run_ms=_ms(metering, "worker_seconds"),
        execution_ms=_ms(metering, "execution_seconds"),
        queue_ms=_ms(metering, "queue_seconds"),
        cold_start_ms=_ms(metering, "cold_start_seconds"),
        usd_per_second=str(rate.usd_per_second),
        rate=rate.snapshot(),
        usd_micros=to_micros(usd),
        day=now.strftime("%Y-%m-%d"),
        month=month,
        created_at=now,
    )
    if not written:
        return None
    if outcome in TERMINAL:
        _record_on_job(s, job.id, rate, billable, usd, payer)
    if payer == TENANT:
        note_spend(s, job.tenant_id, month)
    return Charge(
        job_id=job.id,
        template=job.template,
        gpu_class=rate.gpu_class,
        payer=payer,
        billable_seconds=billable,
        usd=usd,
        cold_start=float(metering.get("cold_start_seconds") or 0.0) > 0,
    )


# What the platform paid for a job's earlier attempts, and the final charge copied onto the
# job: built once, run on the tables as `OneRow`s (the ORM's statement and its unit of work
# cost more to build, compile and flush than to run).
_LEDGER = cast(Table, LedgerEntry.__table__)
_JOBS = cast(Table, Job.__table__)
_PLATFORM_PAID = OneRow(
    select(func.coalesce(func.sum(_LEDGER.c.usd_micros), 0).label("usd_micros")).where(
        _LEDGER.c.job_id == bindparam("job_id"), _LEDGER.c.payer == PLATFORM
    )
)
_SET_COST = OneRow(
    update(_JOBS).where(_JOBS.c.id == bindparam("job_id")).values(cost=bindparam("cost"))
)


def _record_on_job(
    s: Session, job_id: str, rate: Rate, billable: Decimal, usd: Decimal, payer: str
) -> None:
    """Copy the final charge onto the job, with the rate it was priced at."""
    c = s.connection()
    platform = _PLATFORM_PAID(c, {"job_id": job_id}).usd_micros
    cost = {
        "gpu_class": rate.gpu_class,
        "gpu_type": rate.gpu_type,
        "billable_seconds": str(billable),
        "usd": str(usd) if payer == TENANT else "0.000000",
        "platform_usd": usd_str(int(platform or 0)),
        "rate": str(rate.usd_per_second),
        "rate_parts": rate.snapshot(),
        "charged_to": payer,
    }
    s.flush()  # pending changes first, as the ORM's own update would have sent them
    _SET_COST(c, {"job_id": job_id, "cost": cost})
    # The job as this session holds it (if it does) shows the cost too.
    held = s.identity_map.get(identity_key(Job, job_id))
    if held is not None:
        set_committed_value(held, "cost", cost)


def settle_current(
    s: Session,
    job_id: str,
    *,
    catalog: Catalog,
    attempt: int,
    metering: Mapping[str, Any],
    gpu_type: str | None = None,
) -> Charge | None:
    """Settle an attempt whose job is already terminal, whoever made it so; else nothing."""
    job = s.get(Job, job_id, populate_existing=True)
    if job is None or job.status not in TERMINAL:
        return None
    job.metering = {**(job.metering or {}), **metering}
    return settle(
        s,
        job,
        catalog=catalog,
        attempt=attempt,
        metering=metering,
        payer=payer_of(job.status, job.error),
        outcome=job.status,
        gpu_type=gpu_type,
    )


def wall_clock_metering(job: Job, end: datetime | None = None) -> dict[str, Any]:
    """Figures for an attempt whose worker vanished: start to its last heartbeat (estimated)."""
    start = job.started_at
    last = end or job.heartbeat_at or job.finished_at
    held = max((last - start).total_seconds(), 0.0) if start and last else 0.0
    return {
        "worker_seconds": held,
        "billable_seconds": held,
        "queue_seconds": (start - job.created_at).total_seconds() if start else 0.0,
        "estimated": True,
    }


def settle_leftovers(
    db: Database, catalog: Catalog, *, grace_s: float, now: datetime | None = None
) -> list[Charge]:
    """Settle terminal jobs whose last attempt ran but was never charged (its worker died)."""
    now = now or utcnow()
    charged = select(LedgerEntry.id).where(
        and_(LedgerEntry.job_id == Job.id, LedgerEntry.attempt == Job.attempts)
    )
    with db.session() as s:
        ids = list(
            s.scalars(
                select(Job.id)
                .where(
                    Job.status.in_(TERMINAL),
                    Job.attempts > 0,
                    Job.started_at.is_not(None),
                    Job.finished_at < now - timedelta(seconds=grace_s),
                    ~charged.exists(),
                )
                .limit(100)
            )
        )
    out: list[Charge] = []
    for job_id in ids:
        with db.session() as s:
            job = s.get(Job, job_id)
            if job is None:
                continue
            figures = wall_clock_metering(job)
            charge = settle_current(
                s, job_id, catalog=catalog, attempt=job.attempts, metering=figures
            )
            if charge is not None:
                out.append(charge)
    return out
