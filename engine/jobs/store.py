"""Jobs in the store: insert under the tenant's quota, read within a tenant, list, and the
compare-and-set state machine. Terminal states never change, and reads never write."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import cache
from typing import Any, cast

from sqlalchemy import (
    Integer,
    Row,
    String,
    Table,
    bindparam,
    exists,
    func,
    insert,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from engine.db.cursors import decode_cursor, encode_cursor
from engine.db.database import (
    Database,
    NoConnection,
    OneRow,
    PreparedTx,
    SharedRead,
    Waiter,
    settle,
    utcnow,
)
from engine.db.tables import (
    Job,
    Tenant,
)
from engine.errors import Conflict, NotFound, QuotaExceeded
from engine.jobs.events import CHANNEL, JOB, Change, record
from engine.jobs.states import (
    ACTIVE,
    QUEUED,
    RUNNING,
    TERMINAL,
)
from engine.webhooks.outbox import terminal_event

# ---- jobs ---------------------------------------------------------------------------------

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
# A job ended: counted out, in the transaction that ended it.
_ENDED = (
    update(_TENANTS)
    .where(_TENANTS.c.id == bindparam("tenant_id"))
    .values(active_jobs=_TENANTS.c.active_jobs - 1)
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
        db.events.committed([changes[i] for i in changes if i in stored])
    outcomes: list[tuple[bool, Any]] = []
    for (values, _), done in ws:
        if values["id"] in stored:
            outcomes.append((True, None))
        elif done.cancelled():
            outcomes.append((True, None))  # its caller has gone: nothing to store it for
        else:
            try:
                await insert_job_at_once(db, values, quota)
                outcomes.append((True, None))
            except Exception as e:
                outcomes.append((False, e))
    settle(ws, outcomes)


def stored_row(values: dict[str, Any]) -> JobRow:
    """A new job's view row from the values it was stored with (the columns it was not given
    are empty, as the store has them)."""
    return cast(JobRow, _VIEW_ROW.row(*[values.get(c.name) for c in _VIEW_ROW.columns]))


def count_active(c: Connection) -> dict[str, tuple[int, int]]:
    """Each tenant's kept count of active jobs beside the count of its jobs, where they differ
    (none should): for tests and an operator's check."""
    counted = (
        select(_JOBS.c.tenant_id, func.count().label("n"))
        .where(_JOBS.c.status.in_(ACTIVE))
        .group_by(_JOBS.c.tenant_id)
        .subquery()
    )
    rows = c.execute(
        select(_TENANTS.c.id, _TENANTS.c.active_jobs, func.coalesce(counted.c.n, 0)).outerjoin(
            counted, counted.c.tenant_id == _TENANTS.c.id
        )
    )
    return {r[0]: (int(r[1]), int(r[2])) for r in rows if int(r[1]) != int(r[2])}


def get_job(s: Session, tenant_id: str, job_id: str) -> Job:
    """A tenant's job; another tenant's job is indistinguishable from a missing one."""
    job = s.scalar(select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id))
    if job is None:
        raise NotFound(f"No job {job_id}.")
    return job


# A job as the API shows it: a plain row of every column but the rendered graph (the largest
# value, read only by workers). Attribute access matches `Job`'s.
JobRow = Row[Any]
_VIEW_COLUMNS = [c for c in _JOBS.c if c.name != "graph"]
_VIEW = select(*_VIEW_COLUMNS).where(
    _JOBS.c.id == bindparam("job_id"), _JOBS.c.tenant_id == bindparam("tenant_id")
)
_VIEW_ROW = OneRow(_VIEW)
# The same columns by id alone, for one job and for several (`read_view`'s shared read).
_VIEW_BY_ID = SharedRead(
    OneRow(select(*_VIEW_COLUMNS).where(_JOBS.c.id == bindparam("job_id"))),
    OneRow(
        select(*_VIEW_COLUMNS).where(
            _JOBS.c.id == func.any(bindparam("job_ids", type_=ARRAY(String)))
        )
    ),
    key="job_id",
    keys="job_ids",
    column="id",
)


async def read_view(db: Database, tenant_id: str, job_id: str) -> JobRow:
    """A job as the hot read paths show it (GET, `?wait=`, SSE): one statement, no ORM, no
    rendered graph, on PostgreSQL no thread hop and one statement for the concurrent reads
    of many jobs (`Database.shared`). Another tenant's job is a missing one."""
    row: JobRow | None = await db.shared(_VIEW_BY_ID, job_id)
    if row is None or row.tenant_id != tenant_id:
        raise NotFound(f"No job {job_id}.")
    return row


def list_jobs(
    s: Session,
    tenant_id: str,
    *,
    limit: int,
    cursor: str | None = None,
    status: str | None = None,
    template: str | None = None,
) -> tuple[list[Job], str | None]:
    """A page of a tenant's jobs, newest first, and the cursor of the next page."""
    q = select(Job).where(Job.tenant_id == tenant_id)
    if status:
        q = q.where(Job.status == status)
    if template:
        q = q.where(Job.template == template)
    if cursor:
        ts, job_id = decode_cursor(cursor)
        q = q.where(or_(Job.created_at < ts, (Job.created_at == ts) & (Job.id < job_id)))
    rows = list(s.scalars(q.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)))
    nxt = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], nxt


def transition(s: Session, job_id: str, from_states: Sequence[str], to: str, **values: Any) -> bool:
    """Compare-and-set a job's status; False if it was not in one of `from_states`.

    A move to a terminal state also writes the job's webhook event to the outbox, in this same
    transaction: the event exists if and only if the state change committed.
    """
    return _move(s, job_id, from_states, to, values)[0]


def end_running(s: Session, job_id: str, to: str, **values: Any) -> Job | JobRow | None:
    """`transition` of a running job to the terminal state `to`; the job as it now is (for
    the caller to settle), or None if it was not running."""
    assert to in TERMINAL
    moved, job = _move(s, job_id, [RUNNING], to, values)
    return job if moved else None


def _move(
    s: Session, job_id: str, from_states: Sequence[str], to: str, values: dict[str, Any]
) -> tuple[bool, Job | JobRow | None]:
    # A Core UPDATE on the table: the ORM's bulk-update path (which would also look for loaded
    # jobs to synchronise) cost more than the statement. A job loaded in `s` is refreshed by the
    # `populate_existing` read below where it matters. Pending changes go first, as the ORM
    # statement's autoflush would have sent them.
    s.flush()
    assert to not in TERMINAL or all(f in ACTIVE for f in from_states)
    c = s.connection()
    # `values` are plain values (a value computed in SQL takes a statement of its own: `_take`).
    params = {f"v_{k}": v for k, v in values.items()}
    params.update({f"from_{i}": f for i, f in enumerate(from_states)}, job_id=job_id, to=to)
    moved = _move_row(frozenset(values), len(from_states))(c, params)
    if moved is None:
        return False, None
    record(s, Change(JOB, job_id, to))
    if to not in TERMINAL:
        return True, None
    _ENDED_ROW(c, {"tenant_id": moved.tenant_id})
    # The job as it now is: the row the UPDATE returned (every column but the rendered graph,
    # which loading the ORM object would have decoded), or, when this session holds the job,
    # that object refreshed, so that what the caller holds shows the move.
    job: Job | JobRow = moved
    if identity_key(Job, job_id) in s.identity_map:
        job = s.get(Job, job_id, populate_existing=True) or moved
    if job.webhook_url:
        s.add(terminal_event(job))
    return True, job


_ENDED_ROW = OneRow(_ENDED)


@cache
def _move_row(keys: frozenset[str], n_from: int) -> OneRow:
    """The compare-and-set `UPDATE` of `_move`, prebuilt per set of columns it sets and number
    of states it moves from (building and compiling it per call cost more than running it)."""
    return OneRow(
        update(_JOBS)
        .where(
            _JOBS.c.id == bindparam("job_id"),
            # No expanding IN (`OneRow` takes none): one comparison per state.
            or_(*(_JOBS.c.status == bindparam(f"from_{i}") for i in range(n_from))),
        )
        .values({"status": bindparam("to"), **{k: bindparam(f"v_{k}") for k in keys}})
        .returning(*_VIEW_COLUMNS)
    )


def set_fields_if(s: Session, job_id: str, status: str, **values: Any) -> bool:
    """Update fields only while the job is still in `status` (plain values)."""
    s.flush()
    params = {f"v_{k}": v for k, v in values.items()}
    params.update(job_id=job_id, in_status=status)
    changed = _set_fields_row(frozenset(values))(s.connection(), params) is not None
    # A heartbeat is not news; progress and the rest are.
    if changed and set(values) - {"heartbeat_at"}:
        record(s, Change(JOB, job_id, status))
    return changed


@cache
def _set_fields_row(keys: frozenset[str]) -> OneRow:
    """`set_fields_if`'s `UPDATE`, prebuilt per set of columns (progress, a heartbeat, a call
    id): the ORM's update statement, built and compiled per call, cost more than running it."""
    return OneRow(
        update(_JOBS)
        .where(_JOBS.c.id == bindparam("job_id"), _JOBS.c.status == bindparam("in_status"))
        .values({k: bindparam(f"v_{k}") for k in keys})
        .returning(_JOBS.c.id)
    )


_FOR_RUNNER = select(_JOBS.c.id).where(
    _JOBS.c.status == QUEUED,
    or_(_JOBS.c.runner == bindparam("runner"), _JOBS.c.runner.is_(None)),
)
_ANY_QUEUED = select(_FOR_RUNNER.exists())


def any_queued(c: Connection, runner: str) -> bool:
    """Whether a job waits for this runner: one read, so an idle worker's look at an empty
    queue takes no write lock (the claim transaction does)."""
    return bool(c.execute(_ANY_QUEUED, {"runner": runner}).scalar())


_OLDEST_QUEUED = OneRow(
    select(_JOBS.c.id)
    .where(
        _JOBS.c.status == QUEUED,
        or_(_JOBS.c.runner == bindparam("runner"), _JOBS.c.runner.is_(None)),
    )
    .order_by(_JOBS.c.created_at, _JOBS.c.id)
    .limit(1)
)


def claim_next(s: Session, worker_id: str, runner: str) -> Job | None:
    """Take the oldest queued job for this runner (CAS queued -> running); the job as the
    claim left it, or None if none is queued."""
    for _ in range(5):
        oldest = _OLDEST_QUEUED(s.connection(), {"runner": runner})
        if oldest is None:
            return None
        job = _take(s, oldest.id, worker_id)
        if job is not None:
            return job
    raise Conflict("could not claim a job")


# The claim's compare-and-set (queued -> running, one attempt more), built once. It returns
# the whole row: the worker needs the job, rendered graph included, and a second read (the ORM
# loading the object) cost four times the claim's own statements.
_TAKE = OneRow(
    update(_JOBS)
    .where(_JOBS.c.id == bindparam("job_id"), _JOBS.c.status == QUEUED)
    .values(
        status=RUNNING,
        started_at=bindparam("now", type_=_JOBS.c.started_at.type),
        heartbeat_at=bindparam("now", type_=_JOBS.c.heartbeat_at.type),
        worker_id=bindparam("worker_id"),
        attempts=_JOBS.c.attempts + 1,
        progress=0.0,
    )
    .returning(*_JOBS.c)
)


def _take(s: Session, job_id: str, worker_id: str) -> Job | None:
    """`transition` queued -> running for this worker (its attempt counted); the job as it now
    is, or None if it was not queued. A job this session holds is refreshed; otherwise the job
    is a new object built from the row the UPDATE returned, not attached to `s`."""
    s.flush()
    params = {"job_id": job_id, "now": utcnow(), "worker_id": worker_id}
    row = _TAKE(s.connection(), params)
    if row is None:
        return None
    record(s, Change(JOB, job_id, RUNNING))
    if identity_key(Job, job_id) in s.identity_map:
        return s.get(Job, job_id, populate_existing=True)
    return Job(**row._asdict())


def claim_job(s: Session, job_id: str, worker_id: str) -> Job | None:
    """Take one specific queued job (CAS queued -> running); None if it is not queued."""
    return _take(s, job_id, worker_id)
