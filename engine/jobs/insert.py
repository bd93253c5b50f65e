"""A new job into the store, under its tenant's quota: by a session (`insert_job`), in a
prepared transaction on SQLite (`insert_job_prepared`), in one statement on PostgreSQL
(`insert_job_at_once`), and together with the other plain submits of a turn of the event loop
(`insert_job_in_turn`). Each way counts the job into its tenant's `active_jobs` under the
tenant row's lock and refuses it over the quota."""

from __future__ import annotations

import asyncio
from functools import cache
from typing import Any, cast

from sqlalchemy import (
    Integer,
    String,
    Table,
    bindparam,
    exists,
    func,
    insert,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from engine.db.database import (
    Database,
    NoConnection,
    OneRow,
    PreparedTx,
    Waiter,
    settle,
)
from engine.db.tables import Job, Tenant
from engine.errors import NotFound, QuotaExceeded
from engine.jobs.events import CHANNEL, JOB, Change, record

_JOBS = cast(Table, Job.__table__)

# The submit transaction's statements, built once (each is compiled once and cached; building
# them per request cost more than running them) on the tables, not the mapped classes: an ORM
# UPDATE would also look for loaded tenants to synchronise, and ORM statements are compiled
# through the ORM's context, which costs more than the statements take to run.
_TENANTS = cast(Table, Tenant.__table__)
# Locks the tenant row (concurrent submits of one tenant count in turn) and counts the new job
# in: its active jobs after this one, and its own quota.
_SUBMIT_LOCK = (
    update(_TENANTS)
    .where(_TENANTS.c.id == bindparam("tenant_id"))
    .values(submit_seq=_TENANTS.c.submit_seq + 1, active_jobs=_TENANTS.c.active_jobs + 1)
    .returning(_TENANTS.c.active_job_quota, _TENANTS.c.active_jobs)
)


def insert_job(s: Session, job: Job, quota: int) -> Job:
    """Insert a queued job unless the tenant already has `quota` active jobs.

    The tenant's `active_jobs` count is kept in step with its jobs by this insert and by every
    move to a terminal state (`_move`), so no submit counts the tenant's jobs: the cost of a
    submit does not grow with the tenant's queue. The row is written with one Core INSERT of
    the values set on `job` (no unit of work: the object is the caller's record of what was
    stored, not attached to `s`).
    """
    c = s.connection()
    _admitted(job.tenant_id, _SUBMIT_LOCK_ROW(c, {"tenant_id": job.tenant_id}), quota)
    values = _values(job)
    _insert_row(values)(c, values)
    record(s, Change(JOB, job.id, job.status))
    return job


def _admitted(tenant_id: str, counted: Any, quota: int) -> None:
    """The quota check on what `_SUBMIT_LOCK` returned (the tenant's quota, its active jobs
    with the new one counted in). Raised before the commit: the transaction, and the count,
    roll back."""
    if counted is None:
        raise NotFound(f"No tenant {tenant_id}.")
    limit = counted[0] if counted[0] is not None else quota
    active = counted[1] - 1  # before this job
    if active >= limit:
        raise _over_quota(active, limit)


def _over_quota(active: int, limit: int) -> QuotaExceeded:
    return QuotaExceeded(
        f"This tenant has {active} active jobs; the limit is {limit}. Retry when one finishes.",
        extra={"active_jobs": active, "limit": limit},
        headers={"Retry-After": "5"},
    )


def _values(job: Job) -> dict[str, Any]:
    """The column values set on a new `job`."""
    given = vars(job)
    return {col.key: given[col.key] for col in _JOBS.c if col.key in given}


# The submit's two statements, prebuilt, for both ways of running them (a session's
# connection, a prepared transaction).
_SUBMIT_LOCK_ROW = OneRow(_SUBMIT_LOCK)


def _insert_row(values: dict[str, Any]) -> OneRow:
    """The job `INSERT` of these columns (one per set of columns a submit gives)."""
    return _insert_of(frozenset(values))


@cache
def _insert_of(keys: frozenset[str]) -> OneRow:
    return OneRow(insert(_JOBS).values({k: bindparam(k) for k in keys}))


async def insert_job_prepared(tx: PreparedTx, values: dict[str, Any], quota: int) -> None:
    """`insert_job` of a new job's column `values` in a `Database.prepared_transaction`
    (SQLite)."""
    tenant_id = values["tenant_id"]
    _admitted(tenant_id, await tx.one(_SUBMIT_LOCK_ROW, {"tenant_id": tenant_id}), quota)
    await tx.one(_insert_row(values), values)
    tx.record(Change(JOB, values["id"], values["status"]))


# PostgreSQL: the submit's whole transaction as one statement (`insert_job_at_once`), one
# per set of columns and NOTIFY or not.
_TENANT_COUNT = OneRow(
    select(_TENANTS.c.active_job_quota, _TENANTS.c.active_jobs).where(
        _TENANTS.c.id == bindparam("tenant_id")
    )
)
_JOB_STORED = OneRow(select(_JOBS.c.id).where(_JOBS.c.id == bindparam("id")))
_JOBS_STORED = OneRow(
    select(_JOBS.c.id).where(_JOBS.c.id == func.any(bindparam("ids", type_=ARRAY(String()))))
)


@cache
def _at_once(keys: frozenset[str], notify: bool) -> OneRow:
    """`WITH counted AS (UPDATE tenants ... WHERE under quota RETURNING), stored AS (INSERT
    INTO jobs SELECT ... WHERE EXISTS counted RETURNING) SELECT stored.id[, pg_notify(...)]
    FROM stored`: a row only if the job was stored."""
    t = _TENANTS.c
    counted = (
        update(_TENANTS)
        .where(
            t.id == bindparam("tenant_id"),
            # Under the row's lock: a concurrent submit of the same tenant waits for this one's
            # commit, and this condition is then checked again on the row it committed.
            t.active_jobs < func.coalesce(t.active_job_quota, bindparam("quota", type_=Integer)),
        )
        .values(submit_seq=t.submit_seq + 1, active_jobs=t.active_jobs + 1)
        .returning(t.id)
        .cte("counted")
    )
    order = sorted(keys)
    stored = (
        insert(_JOBS)
        .from_select(
            order,
            select(*(bindparam(k, type_=_JOBS.c[k].type) for k in order)).where(
                exists(select(counted.c.id))
            ),
            include_defaults=False,  # the submit gives every column it sets
        )
        .returning(_JOBS.c.id)
        .cte("stored")
    )
    shown: list[Any] = [stored.c.id]
    if notify:
        shown.append(func.pg_notify(CHANNEL, bindparam("change", type_=String)).label("sent"))
    return OneRow(select(*shown).select_from(stored))


async def insert_job_at_once(db: Database, values: dict[str, Any], quota: int) -> None:
    """`insert_job` on PostgreSQL in one statement, its own transaction (`_at_once`: the
    tenant's count and lock, the quota check, the job row, the NOTIFY of the new job), on
    psycopg's async connection (`Database.one_write`): one round trip where a transaction of
    the same statements takes five (`BEGIN`, the two, the NOTIFY, `COMMIT`).

    After a dropped connection the statement may or may not have committed: the job's row
    says which, and it is sent once more only if the row is not there (a copy still running
    when the connection dropped, committed since, makes that second one fail on the job's
    primary key: the job is stored, once)."""
    from sqlalchemy.exc import DBAPIError, IntegrityError

    change = Change(JOB, values["id"], values["status"])
    notify = db.events.transport == "postgres"
    stmt = _at_once(frozenset(values), notify)
    params = {**values, "quota": quota}
    if notify:
        params["change"] = change.dumps(db.events.origin)
    try:
        stored = await db.one_write(stmt, params)
    except DBAPIError as e:
        if not e.connection_invalidated:
            raise
        stored = await db.one(_JOB_STORED, {"id": values["id"]})
        if stored is None:
            try:
                stored = await db.one_write(stmt, params)
            except IntegrityError as again:
                if getattr(getattr(again.orig, "diag", None), "constraint_name", "") != "jobs_pkey":
                    raise
                stored = await db.one(_JOB_STORED, {"id": values["id"]})
    if stored is None:
        # Refused: no such tenant, or one at its quota (its count read again, for the message).
        counted = await db.one(_TENANT_COUNT, {"tenant_id": values["tenant_id"]})
        if counted is None:
            raise NotFound(f"No tenant {values['tenant_id']}.")
        limit = counted.active_job_quota if counted.active_job_quota is not None else quota
        raise _over_quota(max(counted.active_jobs, limit), limit)
    db.events.committed([change])


# PostgreSQL: the plain submits of one turn of the event loop in one statement
# (`insert_job_in_turn`), one per number of jobs, set of columns and NOTIFY or not.
GROUP_MAX = 32


@cache
def _group_at_once(keys: frozenset[str], n: int, notify: bool) -> OneRow:
    """`_at_once` for `n` jobs (their values bound as `{column}_{i}`, their NOTIFY payloads as
    `change_{i}`): every tenant among them counted in by its number of jobs, where all of them
    fit under its quota, and those tenants' jobs stored; a row for each job stored."""
    t = _TENANTS.c
    order = sorted(keys)

    def given_row(i: int) -> Any:
        cols: list[Any] = [bindparam(f"{k}_{i}", type_=_JOBS.c[k].type).label(k) for k in order]
        if notify:
            cols.append(bindparam(f"change_{i}", type_=String).label("change"))
        return select(*cols)

    rows = [given_row(i) for i in range(n)]
    # (`union_all`'s variadic generic signature crashes mypy 2.4: called untyped.)
    given = (cast(Any, union_all)(*rows) if n > 1 else rows[0]).cte("given")
    per = select(given.c.tenant_id, func.count().label("n")).group_by(given.c.tenant_id).cte("per")
    # The tenants' rows locked in one order (by id), so that two such statements in flight
    # wait for each other instead of deadlocking.
    locked = (
        select(t.id)
        .where(t.id.in_(select(per.c.tenant_id)))
        .order_by(t.id)
        .with_for_update()
        .cte("locked")
        .prefix_with("MATERIALIZED")
    )
    counted = (
        update(_TENANTS)
        .where(
            t.id == locked.c.id,
            t.id == per.c.tenant_id,
            # Checked again, under the lock, on the row a concurrent submit committed.
            t.active_jobs + per.c.n
            <= func.coalesce(t.active_job_quota, bindparam("quota", type_=Integer)),
        )
        .values(submit_seq=t.submit_seq + per.c.n, active_jobs=t.active_jobs + per.c.n)
        .returning(t.id)
        .cte("counted")
    )
    stored = (
        insert(_JOBS)
        .from_select(
            order,
            select(*(given.c[k] for k in order)).where(given.c.tenant_id.in_(select(counted.c.id))),
            include_defaults=False,
        )
        .returning(_JOBS.c.id)
        .cte("stored")
    )
    shown: list[Any] = [stored.c.id]
    if notify:
        shown.append(func.pg_notify(CHANNEL, given.c.change).label("sent"))
    return OneRow(select(*shown).select_from(stored.join(given, given.c.id == stored.c.id)))


async def insert_job_in_turn(db: Database, values: dict[str, Any], quota: int) -> None:
    """`insert_job_at_once`, in one statement with the other plain submits of this turn of the
    event loop (a group commit: `Database.in_turn`, `_group_at_once`). A job whose tenant's
    jobs in the group would not all fit under its quota, or whose group statement failed,
    is then sent on its own, so each is admitted or refused exactly as it would be alone."""
    await db.in_turn(_store_group, (values, quota))


_GROUPS: set[asyncio.Task[None]] = set()


def _store_group(db: Database, live: list[Waiter]) -> None:
    task = asyncio.get_running_loop().create_task(_store_groups(db, live))
    _GROUPS.add(task)
    task.add_done_callback(_GROUPS.discard)


async def _store_groups(db: Database, live: list[Waiter]) -> None:
    by_shape: dict[tuple[frozenset[str], int], list[Waiter]] = {}
    for w in live:
        values, quota = w[0]
        by_shape.setdefault((frozenset(values), quota), []).append(w)
    for (keys, quota), ws in by_shape.items():
        for start in range(0, len(ws), GROUP_MAX):
            group = ws[start : start + GROUP_MAX]
            try:
                await _store_one_group(db, keys, quota, group)
            except Exception as e:  # whatever went wrong, no caller is left waiting
                settle(group, [(False, e)] * len(group))


async def _store_one_group(
    db: Database, keys: frozenset[str], quota: int, ws: list[Waiter]
) -> None:
    from sqlalchemy.exc import DBAPIError

    stored: set[str] = set()
    if len(ws) > 1:
        notify = db.events.transport == "postgres"
        params: dict[str, Any] = {"quota": quota}
        changes = {}
        for i, ((values, _), _) in enumerate(ws):
            changes[values["id"]] = change = Change(JOB, values["id"], values["status"])
            params.update({f"{k}_{i}": v for k, v in values.items()})
            if notify:
                params[f"change_{i}"] = change.dumps(db.events.origin)
        try:
            rows = await db.one_write(_group_at_once(keys, len(ws), notify), params, every=True)
            stored = {r.id for r in rows}
        except NoConnection as e:
            settle(ws, [(False, e)] * len(ws))
            return
        except DBAPIError as e:
            if e.connection_invalidated:  # committed or not: the rows say
                ids = list(changes)
                stored = {r.id for r in await db.all(_JOBS_STORED, {"ids": ids})}
            # Otherwise the statement rolled back whole: each is sent on its own below.
        # The callers first, then the watchers of their jobs (as in `Database._commit_group`).
        done = [w for w in ws if w[0][0]["id"] in stored]
        settle(done, [(True, None)] * len(done))
        db.events.committed([changes[i] for i in changes if i in stored])
    for w in ws:
        values, _ = w[0]
        if values["id"] in stored or w[1].done():  # stored, or its caller has gone
            continue
        try:
            await insert_job_at_once(db, values, quota)
            settle([w], [(True, None)])
        except Exception as e:
            settle([w], [(False, e)])
