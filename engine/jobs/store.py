"""Jobs in the store: read within a tenant, list, claim, and the compare-and-set state machine
(a new job goes in through `jobs/insert`). Terminal states never change, and reads never
write."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any, cast

from sqlalchemy import (
    Row,
    String,
    Table,
    bindparam,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from engine.db.cursors import decode_cursor, encode_cursor
from engine.db.database import (
    Database,
    OneRow,
    SharedRead,
    utcnow,
)
from engine.db.tables import (
    Job,
    Tenant,
)
from engine.errors import Conflict, NotFound
from engine.jobs.events import JOB, Change, record
from engine.jobs.states import (
    ACTIVE,
    QUEUED,
    RUNNING,
    TERMINAL,
)
from engine.webhooks.outbox import terminal_event

# ---- jobs ---------------------------------------------------------------------------------

_JOBS = cast(Table, Job.__table__)
_TENANTS = cast(Table, Tenant.__table__)
# A job ended: counted out, in the transaction that ended it.
_ENDED = (
    update(_TENANTS)
    .where(_TENANTS.c.id == bindparam("tenant_id"))
    .values(active_jobs=_TENANTS.c.active_jobs - 1)
)


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
