"""The database: an engine and sessions for SQLite (embedded) or PostgreSQL, and the row
helpers every part shares."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import namedtuple
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

import pydantic_core
from sqlalchemy import Table, bindparam, create_engine, event
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from engine.db.tables import Base
from engine.jobs.events import Change, Events

P = ParamSpec("P")
# An item of `Database.in_turn`, and the future its outcome settles.
Waiter = tuple[Any, "asyncio.Future[Any]"]
T = TypeVar("T")


def utcnow() -> datetime:
    """Now, timezone-aware UTC."""
    return datetime.now(UTC)


def json_dumps(value: Any) -> str:
    """JSON columns' text, by pydantic-core (already a dependency, through pydantic): about
    three times as fast as the standard library's encoder on a rendered graph, which every
    submit stores. Same values: NaN and infinities as JavaScript constants (as `json.dumps`),
    integers of any size; text as UTF-8, not `\\u` escapes."""
    return pydantic_core.to_json(value).decode()


def json_loads(text: str | bytes) -> Any:
    """A JSON column's value (pydantic-core's parser, faster than the standard library's)."""
    return pydantic_core.from_json(text)


def insert_ignore(s: Session, model: type[Base], **values: Any) -> bool:
    """Insert a row unless it breaks a unique constraint; True if it was written."""
    stmt = _insert_ignore_row(s.get_bind().dialect.name, model, frozenset(values))
    s.flush()  # pending changes first, as the ORM statement's autoflush would have sent them
    return stmt(s.connection(), values) is not None


@cache
def _insert_ignore_row(dialect: str, model: type[Base], keys: frozenset[str]) -> OneRow:
    """`insert_ignore`'s statement, built once per table and set of columns, on the table, as
    a `OneRow`: the ORM's insert path, and building and executing the statement through
    SQLAlchemy per call, cost more than the insert. ON CONFLICT DO NOTHING, not a caught
    IntegrityError: the caller's transaction (which may also move the job to its terminal
    state) must survive a duplicate. RETURNING tells whether a row was written (psycopg's
    rowcount is not reliable here)."""
    table = cast(Table, model.__table__)
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        base: Any = pg_insert(table)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        base = sqlite_insert(table)
    return OneRow(
        base.values({k: bindparam(k) for k in keys})
        .on_conflict_do_nothing()
        .returning(*sa_inspect(model).primary_key)
    )


def new_id(prefix: str) -> str:
    """A random id with a readable prefix."""
    return f"{prefix}_{uuid.uuid4().hex}"


class OneRow:
    """A prebuilt Core statement of at most one result row, for the hottest paths: a `SELECT`
    (a job by id, the admission read) or a write, with or without `RETURNING` (the submit's).

    Called with a connection and the parameters, it returns the row (attribute access by
    column name) or None. On SQLite it runs on the connection's own sqlite3 handle: the
    statement is compiled once, the values sent and read are converted by the columns' own
    SQLAlchemy processors (JSON, timestamps, booleans), and the connection's
    `before_cursor_execute` listeners still see it, so statement counts stay true.
    SQLAlchemy's execution machinery around such a statement cost about three times the
    statement itself (`bench/RESULTS.md`). Elsewhere it is executed as any statement (on
    PostgreSQL the network round trip dominates), or on psycopg's async connection
    (`pg_sql`, `pg_args`). A driver error is raised as SQLAlchemy's `DBAPIError`, as from any
    statement.
    """

    def __init__(self, stmt: Any) -> None:
        if any(b.expanding for b in stmt.compile().binds.values()):
            # SQLAlchemy rewrites an expanding `IN` at each execution, which this bypasses.
            raise TypeError("OneRow takes no expanding IN; compare with or_() instead")
        self.stmt = stmt
        # A SELECT's columns, or what a write returns (RETURNING; none without it).
        self.columns = list(getattr(stmt, "selected_columns", None) or stmt.exported_columns)
        self.row: Callable[..., Any] = namedtuple(  # type: ignore[misc]
            "OneRowResult", [c.name for c in self.columns]
        )
        self._sqlite: tuple[str, tuple[str, ...], list[Any], list[Any]] | None = None
        self._pg: str | None = None
        self._pg_binds: dict[str, Callable[[Any], Any]] = {}
        self.defaults: dict[str, Any] = {}

    def _compile(self, dialect: Any) -> Any:
        compiled = self.stmt.compile(dialect=dialect)
        # Values fixed in the statement (the caller gives the rest).
        self.defaults = {
            name: b.value
            for b, name in compiled.bind_names.items()
            if b.value is not None and not b.required
        }
        return compiled

    def pg_sql(self, dialect: Any) -> str:
        """The statement compiled once for PostgreSQL (psycopg's `%(name)s` parameters)."""
        if self._pg is None:
            compiled = self._compile(dialect)
            # The columns' own conversions of what is sent (JSON, timestamps, booleans).
            self._pg_binds = dict(compiled._bind_processors)
            self._pg = str(compiled)
        return self._pg

    def args(self, params: dict[str, Any]) -> dict[str, Any]:
        """The caller's parameters with the values fixed in the statement."""
        return {**self.defaults, **params} if self.defaults else params

    def pg_args(self, params: dict[str, Any]) -> dict[str, Any]:
        """`args`, converted for psycopg as SQLAlchemy converts them (after `pg_sql`)."""
        given = self.args(params)
        if not self._pg_binds:
            return given
        procs = self._pg_binds
        return {k: procs[k](v) if k in procs and v is not None else v for k, v in given.items()}

    def sqlite_args(
        self, dialect: Any, params: dict[str, Any]
    ) -> tuple[str, tuple[Any, ...], list[Any]]:
        """The SQLite statement, its positional values converted as SQLAlchemy converts them
        (JSON, timestamps, booleans), and the result columns' converters; compiled once."""
        if self._sqlite is None:
            compiled = self._compile(dialect)
            procs = [col.type._cached_result_processor(dialect, None) for col in self.columns]
            order = tuple(compiled.positiontup or ())
            by_name = dict(compiled._bind_processors)
            self._sqlite = (str(compiled), order, procs, [by_name.get(k) for k in order])
        sql, order, procs, binds = self._sqlite
        given = self.args(params)
        args = tuple(
            f(given[k]) if f is not None and given[k] is not None else given[k]
            for k, f in zip(order, binds, strict=True)
        )
        return sql, args, procs

    def __call__(self, c: Connection, params: dict[str, Any]) -> Any:
        if c.dialect.name != "sqlite":
            result = c.execute(self.stmt, params)
            return result.first() if self.columns else None
        sql, args, procs = self.sqlite_args(c.dialect, params)
        raw = c.connection.driver_connection
        assert raw is not None
        cursor = raw.cursor()
        try:
            if c.dispatch.before_cursor_execute:
                c.dispatch.before_cursor_execute(c, cursor, sql, args, None, False)
            found = cursor.execute(sql, args).fetchone()
        except c.dialect.loaded_dbapi.Error as e:
            raise DBAPIError.instance(sql, args, e, c.dialect.loaded_dbapi.Error) from e
        finally:
            cursor.close()
        if found is None:
            return None
        return self.row(*(f(v) if f is not None else v for f, v in zip(procs, found, strict=True)))


class SharedRead:
    """A read of one row by a key (the job view by id) that concurrent readers on one event
    loop share on PostgreSQL (`Database.shared`).

    `one` reads the row of one key (bound as `key`); `many` reads the rows of several (bound
    as `keys`, a list) and returns each with its key in column `column`. A read that finds
    `_AsyncReads.SHARED_IN_FLIGHT` statements of this kind already running does not send its
    own: it waits, and the next statement (started as one of those ends) reads every key
    waiting by then, once each. Under load one statement answers many requests, which is what
    makes a read of PostgreSQL cost about what a read of the embedded SQLite does
    (`bench/pg_fetch.py`); a lone read runs at once, as `Database.one` would. A reader that
    waits only takes a statement that began after it asked, so it sees every commit made
    before it asked.
    """

    def __init__(self, one: OneRow, many: OneRow, *, key: str, keys: str, column: str) -> None:
        self.one, self.many = one, many
        self.key, self.keys, self.column = key, keys, column


class _Waiting:
    """The shared reads of one `SharedRead` on one event loop: how many statements run, and
    the readers waiting for the next, by key."""

    __slots__ = ("running", "waiting")

    def __init__(self) -> None:
        self.running = 0
        self.waiting: dict[Any, list[asyncio.Future[Any]]] = {}


class Database:
    """An engine plus a session factory, for SQLite (embedded) or PostgreSQL.

    Async code reaches it through `run` (a transaction) and `read` (a read-only one): the one
    thread hop between the event loop and the blocking driver. Every committed change recorded
    with `engine.jobs.events.record` goes out through `events`.

    Connections are not pinged on checkout (a round trip per transaction); a connection the
    server dropped is noticed when it fails, the pool is refreshed, and the transaction is
    tried once more on a fresh connection (`call`).
    """

    def __init__(self, url: str, *, redis_url: str = "") -> None:
        self.url = url
        kwargs: dict[str, Any] = {"json_serializer": json_dumps, "json_deserializer": json_loads}
        if url.startswith("sqlite"):
            if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs.update(pool_size=10, max_overflow=10, pool_timeout=10)
        self.engine: Engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
            # Writers take the write lock at BEGIN, so check-then-write transactions serialise;
            # readers begin deferred and never wait for a writer (WAL).
            event.listen(self.engine, "begin", _sqlite_begin)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        readers = (
            self.engine.execution_options(stencil_read=True) if self.is_sqlite else self.engine
        )
        # `fetch`: one statement per call, run without a transaction of its own (no BEGIN and
        # ROLLBACK around it: on PostgreSQL, two round trips fewer).
        self._fetch_engine = self.engine.execution_options(
            **({"stencil_single": True} if self.is_sqlite else {"isolation_level": "AUTOCOMMIT"})
        )
        self.readers = sessionmaker(readers, expire_on_commit=False)
        # SQLite has one writer at a time. The process's own writers queue here, handed the
        # turn the moment the last one commits, rather than in SQLite's busy handler, which
        # sleeps between retries (up to 100 ms a sleep: the tail of every contended submit).
        # Another process's writer is still waited for by the busy handler.
        self._write_lock = threading.RLock() if self.is_sqlite else None
        self._writer: AbstractContextManager[Any] = self._write_lock or nullcontext()
        self._held = threading.local()  # `fetch`'s connection, one per thread
        self._inline: Connection | None = None  # `write`'s connection on SQLite
        self._held_all: list[Connection] = []
        self._held_lock = threading.Lock()
        # `one`'s connections on PostgreSQL: a pool per event loop (a connection belongs to
        # the loop that opened it).
        self._async_reads: dict[asyncio.AbstractEventLoop, _AsyncReads] = {}
        # What was asked for in this turn of each loop, by what it is handed to (`in_turn`).
        self._turn_groups: dict[tuple[asyncio.AbstractEventLoop, Any], list[Waiter]] = {}
        self.events = Events(self)
        self.events.redis_url = redis_url
        event.listen(self.sessions, "before_commit", self.events.before_commit)
        event.listen(self.sessions, "after_commit", self.events.after_commit)
        event.listen(self.sessions, "after_soft_rollback", self._rolled_back)

    def _rolled_back(self, s: Session, _previous: Any) -> None:
        self.events.after_rollback(s)

    @property
    def is_sqlite(self) -> bool:
        """True for the embedded SQLite store."""
        return self.url.startswith("sqlite")

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: commit on success, roll back on error."""
        with self._writer, self.sessions() as s, s.begin():
            yield s

    @contextmanager
    def reader(self) -> Iterator[Session]:
        """A read-only transaction, ended by closing the session: the connection rolls back and
        what was read stays loaded (a rollback would expire it)."""
        with self.readers() as s:
            yield s

    def call(self, fn: Callable[Concatenate[Session, P], T], *args: P.args, **kw: P.kwargs) -> T:
        """`fn(session, ...)` in one transaction; once more on a fresh connection if the server
        had dropped the one it got before anything was committed."""
        for attempt in (1, 2):
            committing = False
            try:
                with self._writer, self.sessions() as s:
                    s.begin()
                    result = fn(s, *args, **kw)
                    committing = True
                    s.commit()
                    return result
            except DBAPIError as e:
                if attempt == 1 and e.connection_invalidated and not committing:
                    continue
                raise
        raise AssertionError("unreachable")

    def call_read(
        self, fn: Callable[Concatenate[Session, P], T], *args: P.args, **kw: P.kwargs
    ) -> T:
        """`fn(session, ...)` in a read-only transaction, retried once after a dropped
        connection."""
        for attempt in (1, 2):
            try:
                with self.reader() as s:
                    return fn(s, *args, **kw)
            except DBAPIError as e:
                if attempt == 1 and e.connection_invalidated:
                    continue
                raise
        raise AssertionError("unreachable")

    def call_fetch(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kw: P.kwargs
    ) -> T:
        """`fn(connection, ...)` for one read-only statement, with no ORM session: for the
        hottest reads (a job by id), which want rows, not objects. The statement runs without
        a BEGIN (on SQLite a single SELECT is its own snapshot, on PostgreSQL autocommit), so
        `fn` must read once. Retried once after a dropped connection.

        The connection is one this thread keeps between calls: checking one out of the pool
        and returning it cost more than the statement. It holds no snapshot between calls
        (SQLAlchemy's own transaction is ended after each), so it never holds back a SQLite
        checkpoint or PostgreSQL's vacuum. On PostgreSQL, one per thread of the executor that
        `fetch` hops to (a handful), besides the pool."""
        for attempt in (1, 2):
            c: Connection | None = getattr(self._held, "c", None)
            if c is None or c.closed or c.invalidated:
                c = self._held.c = self._fetch_engine.connect()
                with self._held_lock:
                    self._held_all = [*(x for x in self._held_all if not x.closed), c]
            try:
                return fn(c, *args, **kw)
            except DBAPIError as e:
                if attempt == 1 and e.connection_invalidated:
                    continue
                raise
            finally:
                if not c.closed:
                    c.rollback()
        raise AssertionError("unreachable")

    async def fetch(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kw: P.kwargs
    ) -> T:
        """`call_fetch` from async code, on a held connection: inline on SQLite, on a worker
        thread for PostgreSQL (as `read`)."""
        if self.is_sqlite:
            return self.call_fetch(fn, *args, **kw)

        def work() -> T:
            return self.call_fetch(fn, *args, **kw)

        return await asyncio.to_thread(work)

    async def one(self, row: OneRow, params: dict[str, Any]) -> Any:
        """`row`'s result (or None) from async code, for the hottest reads: on SQLite inline
        on `call_fetch`'s held connection; on PostgreSQL on psycopg's own async connection, on the
        event loop (`_AsyncReads`), where a thread hop and SQLAlchemy's execution cost about
        three times as much (`bench/pg_fetch.py`)."""
        if self.is_sqlite:
            return self.call_fetch(row, params)
        return await self._async_pg().one(row, params)

    async def all(self, row: OneRow, params: dict[str, Any]) -> list[Any]:
        """Every row of `row`, read as `one` reads one."""
        if self.is_sqlite:
            return self.call_fetch(_all_rows, row, params)
        return await self._async_pg().all(row, params)

    async def shared(self, read: SharedRead, key: Any) -> Any:
        """`read.one`'s row for `key` (or None), as `one` reads it; on PostgreSQL concurrent
        readers share statements (`SharedRead`)."""
        if self.is_sqlite:
            return self.call_fetch(read.one, {read.key: key})
        return await self._async_pg().shared(read, key)

    async def prepared_transaction(self, steps: Callable[[PreparedTx], Awaitable[T]]) -> T:
        """SQLite: `steps(tx)` in a transaction of prebuilt statements (`PreparedTx.one`), with
        no ORM session and no thread hop, on the event loop's own connection, when the write
        lock is free (`steps` must not wait on anything else: it runs under the lock, and is
        refused if it suspends). Changes recorded with `tx.record` go out as a session's do,
        after the commit. Raises `NoConnection` when another writer holds the lock: the caller
        then takes the session way, which waits its turn on a thread. (On PostgreSQL such a
        write is one statement: `one_write`.)

        The prepared transactions asked for in one turn of the event loop commit together
        (a group commit): one `BEGIN IMMEDIATE` and one `COMMIT` for all of them, each in a
        savepoint of its own, so that one whose steps raise (a submit over its quota) rolls
        back alone and raises to its own caller. A lone one runs as it always did."""
        if not self.is_sqlite:
            raise TypeError("a prepared transaction is SQLite's; PostgreSQL takes one_write")
        return cast(T, await self.in_turn(Database._commit_group, steps))

    async def in_turn(self, flush: Callable[[Database, list[Waiter]], None], item: Any) -> Any:
        """`item`'s outcome from `flush(db, waiters)`, which is handed every item given with the
        same `flush` in this turn of the event loop, once the turn ends (a group commit): it must
        settle each item's future, at once or from a task of its own. An item whose caller was
        cancelled before then is not handed on. What a turn holds is what the requests that
        were ready in it asked for, so a lone request waits for nothing but the turn's end."""
        loop = asyncio.get_running_loop()
        key = (loop, flush)
        group = self._turn_groups.get(key)
        if group is None:
            group = self._turn_groups[key] = []
            loop.call_soon(self._end_turn, key, group)
        done: asyncio.Future[Any] = loop.create_future()
        group.append((item, done))
        return await done

    def _end_turn(self, key: tuple[Any, Any], group: list[Waiter]) -> None:
        if self._turn_groups.get(key) is group:
            del self._turn_groups[key]
        live = [(item, done) for item, done in group if not done.cancelled()]
        if not live:
            return
        try:
            key[1](self, live)
        except Exception as e:  # whatever went wrong, no caller is left waiting
            settle(live, [(False, e)] * len(live))

    def _commit_group(self, live: list[Waiter]) -> None:
        """One turn's prepared transactions as one transaction (`prepared_transaction`)."""
        lock = self._write_lock
        assert lock is not None
        outcomes: list[tuple[bool, Any]]
        if not lock.acquire(blocking=False):
            outcomes = [(False, NoConnection("another writer of this process holds the lock"))]
            outcomes *= len(live)
            changes: list[Change] = []
        else:
            try:
                tx = PreparedTx(self._inline_connection())
                outcomes = tx.run_all([steps for steps, _ in live])
                changes = tx.changes
            except Exception as e:  # the BEGIN or the COMMIT failed: none of them happened
                outcomes = [(False, e)] * len(live)
                changes = []
            finally:
                lock.release()
        # The callers first: each answers its request before the watchers of its job (the local
        # worker's claim among them) take the loop, as a lone submit always did.
        settle(live, outcomes)
        self.events.committed(changes)

    async def one_write(self, row: OneRow, params: dict[str, Any], *, every: bool = False) -> Any:
        """PostgreSQL: one writing statement, its own transaction (autocommit), on psycopg's
        async connection from `one`'s pool; its one row, or None (with `every`, the list of its
        rows). Not tried again after a dropped connection: the statement may have committed
        before the connection went, and only the caller knows how to tell (the error is
        SQLAlchemy's `DBAPIError` with `connection_invalidated` set; the pool has been checked
        by then). Raises `NoConnection` when no pooled connection comes in time."""
        if self.is_sqlite:
            raise TypeError("one_write is PostgreSQL's; SQLite takes prepared_transaction")
        return await self._async_pg().one(row, params, write=True, every=every)

    def _async_pg(self) -> _AsyncReads:
        loop = asyncio.get_running_loop()
        reads = self._async_reads.get(loop)
        if reads is None:
            reads = self._async_reads[loop] = _AsyncReads(self)
        return reads

    async def aclose(self) -> None:
        """Close the async connections this event loop opened (`one`), then `dispose`."""
        reads = self._async_reads.pop(asyncio.get_running_loop(), None)
        if reads is not None:
            await reads.close()
        self.dispose()

    async def run(
        self, fn: Callable[Concatenate[Session, P], T], *args: P.args, **kw: P.kwargs
    ) -> T:
        """`call` on a worker thread: a transaction from async code."""

        def work() -> T:
            return self.call(fn, *args, **kw)

        return await asyncio.to_thread(work)

    async def write(
        self, fn: Callable[Concatenate[Session, P], T], *args: P.args, **kw: P.kwargs
    ) -> T:
        """`run` for a short transaction (a submit's insert, a cancel). On SQLite, when no other
        writer holds the write lock at that moment, it runs inline on the event loop: the hop
        to a worker thread and back cost about as much as the transaction. A writer of this
        process (the in-process lock) or of another process (SQLite's own lock, tried without
        waiting) sends it to a thread, to wait there as `run` does; `fn` must not block."""
        lock = self._write_lock
        if lock is not None and lock.acquire(blocking=False):
            try:
                done, result = self._call_inline(fn, args, kw)
            finally:
                lock.release()
            if done:
                return result  # type: ignore[return-value]
        return await self.run(fn, *args, **kw)

    def _inline_connection(self) -> Connection:
        """The event loop's own SQLite connection for short writes: it never waits for the
        write lock (`busy_timeout=0`: SQLITE_BUSY at once)."""
        c = self._inline
        if c is None or c.closed or c.invalidated:
            c = self._inline = self.engine.connect()
            driver = c.connection.driver_connection
            assert driver is not None
            driver.execute("PRAGMA busy_timeout=0")
            with self._held_lock:
                self._held_all.append(c)
        return c

    def _call_inline(
        self, fn: Callable[..., T], args: tuple[Any, ...], kw: dict[str, Any]
    ) -> tuple[bool, T | None]:
        """`fn` in a transaction on the event loop's own connection, which never waits for the
        write lock; (False, None) when another process holds it (nothing was done)."""
        with self.sessions(bind=self._inline_connection()) as s:
            try:
                s.begin()
                s.connection()  # BEGIN IMMEDIATE now, before any of `fn` runs
            except OperationalError as e:
                if getattr(e.orig, "sqlite_errorcode", None) == _SQLITE_BUSY:
                    return False, None
                raise
            result = fn(s, *args, **kw)
            s.commit()
            return True, result

    async def read(
        self, fn: Callable[Concatenate[Session, P], T], *args: P.args, **kw: P.kwargs
    ) -> T:
        """`call_read` from async code: on a worker thread for PostgreSQL (a network round
        trip); inline on SQLite, where a read in WAL mode never waits for a writer and costs
        less than the hop to a thread would."""
        if self.is_sqlite:
            return self.call_read(fn, *args, **kw)

        def work() -> T:
            return self.call_read(fn, *args, **kw)

        return await asyncio.to_thread(work)

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision."""
        from engine.db.migrate import upgrade

        upgrade(self)

    def ping(self) -> None:
        """Raise if the database cannot answer."""
        with self.engine.connect() as c:
            c.exec_driver_sql("SELECT 1")

    def dispose(self) -> None:
        """Close pooled connections, and those `fetch` holds."""
        with self._held_lock:
            held, self._held_all = self._held_all, []
        for c in held:
            c.close()
        self._held = threading.local()
        self._inline = None
        self.engine.dispose()


class _AsyncReads:
    """`Database.one` on PostgreSQL: psycopg's async connections in a `psycopg_pool` pool,
    opened on first use on this event loop, in autocommit (a lone `SELECT` needs no
    transaction). Rows are psycopg's own values, which are the ones SQLAlchemy returns for
    these columns (psycopg decodes JSON and timestamps itself; `tests/test_events.py` compares
    them). The engine's `before_cursor_execute` listeners see each statement. A connection the
    server dropped fails its statement; the pool is then checked (broken connections are
    dropped) and the statement tried once more, as `Database.call` does."""

    # How long a read waits for one of the pool's connections before it takes the thread way
    # instead: the pool opens connections in the background, so a server that refuses them
    # would otherwise hold every read for the whole wait before its 503.
    CONNECTION_WAIT_S = 2.0

    def __init__(self, db: Database) -> None:
        from psycopg.conninfo import make_conninfo
        from psycopg_pool import AsyncConnectionPool

        self.db = db
        # The connection arguments SQLAlchemy's psycopg dialect would use, its adapters
        # (`context`: how values are loaded and dumped) among them.
        cargs, ckw = db.engine.dialect.create_connect_args(db.engine.url)
        extra = {k: ckw.pop(k) for k in ("context",) if k in ckw}
        conninfo = make_conninfo(str(cargs[0]) if cargs else "", **ckw)
        self.pool = AsyncConnectionPool(
            conninfo, min_size=1, max_size=10, kwargs={"autocommit": True, **extra}, open=False
        )
        self._opened = False
        self._opening = asyncio.Lock()
        self._shared: dict[SharedRead, _Waiting] = {}
        self._batches: set[asyncio.Task[None]] = set()

    async def one(
        self, row: OneRow, params: dict[str, Any], *, write: bool = False, every: bool = False
    ) -> Any:
        """`row`'s one row (or None), or with `every` the list of its rows."""
        import psycopg
        from psycopg_pool import PoolTimeout

        await self._open()
        sql = row.pg_sql(self.db.engine.dialect)
        for attempt in (1, 2):
            try:
                async with self.pool.connection(timeout=self.CONNECTION_WAIT_S) as conn:
                    return await _pg_one(self.db, conn, row, params, every=every)
            except PoolTimeout:
                if write:
                    raise NoConnection("no PostgreSQL connection came in time") from None
                # No connection to be had (every one busy, or the server refusing new ones):
                # the thread way, whose own pool and errors are SQLAlchemy's.
                if every:
                    return await self.db.fetch(_all_rows, row, params)
                return await self.db.fetch(row, params)
            except psycopg.OperationalError as e:
                await self.pool.check()
                if attempt == 1 and not write:
                    continue
                raise DBAPIError.instance(
                    sql, params, e, psycopg.Error, connection_invalidated=True
                ) from e
            except psycopg.Error as e:
                raise DBAPIError.instance(sql, params, e, psycopg.Error) from e
        raise AssertionError("unreachable")

    # Statements of one `SharedRead` running at once on this loop: enough to keep the server
    # busy while this process reads the last answer, few enough that readers under load
    # share them (1, 2 and 4 were measured: `bench/RESULTS.md`).
    SHARED_IN_FLIGHT = 2

    async def shared(self, read: SharedRead, key: Any) -> Any:
        w = self._shared.get(read)
        if w is None:
            w = self._shared[read] = _Waiting()
        if w.running < self.SHARED_IN_FLIGHT:
            w.running += 1
            try:
                return await self.one(read.one, {read.key: key})
            finally:
                w.running -= 1
                if w.waiting:
                    self._next_batch(read, w)
        found: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        w.waiting.setdefault(key, []).append(found)
        return await found

    def _next_batch(self, read: SharedRead, w: _Waiting) -> None:
        batch, w.waiting = w.waiting, {}
        w.running += 1
        task = asyncio.get_running_loop().create_task(self._read_batch(read, w, batch))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    async def _read_batch(
        self, read: SharedRead, w: _Waiting, batch: dict[Any, list[asyncio.Future[Any]]]
    ) -> None:
        try:
            if len(batch) == 1:
                (key,) = batch
                rows = {key: await self.one(read.one, {read.key: key})}
            else:
                found = await self.all(read.many, {read.keys: list(batch)})
                rows = {getattr(r, read.column): r for r in found}
        except asyncio.CancelledError:
            for readers in batch.values():
                for f in readers:
                    f.cancel()
            raise
        except Exception as e:
            for readers in batch.values():
                for f in readers:
                    if not f.done():
                        f.set_exception(e)
        else:
            for key, readers in batch.items():
                row = rows.get(key)
                for f in readers:
                    if not f.done():
                        f.set_result(row)
        finally:
            w.running -= 1
            if w.waiting:
                self._next_batch(read, w)

    async def all(self, stmt: OneRow, params: dict[str, Any]) -> list[Any]:
        """Every row of a prebuilt read, as `one` reads one."""
        return cast(list[Any], await self.one(stmt, params, every=True))

    async def _open(self) -> None:
        if not self._opened:
            async with self._opening:
                if not self._opened:
                    await self.pool.open(wait=False)
                    self._opened = True

    async def close(self) -> None:
        if self._opened:
            await self.pool.close()


def settle(waiters: list[Waiter], outcomes: list[tuple[bool, Any]]) -> None:
    """Each waiter's future given its outcome, (True, value) or (False, exception), unless
    its caller has gone or it was settled already."""
    for (_, done), (ok, value) in zip(waiters, outcomes, strict=True):
        if done.done():
            continue
        if ok:
            done.set_result(value)
        else:
            done.set_exception(value)


class NoConnection(Exception):
    """`Database.prepared_transaction` cannot run now (the lock or a connection is taken)."""


class PreparedTx:
    """A transaction of prebuilt statements (`Database.prepared_transaction`): on the event
    loop's own SQLite connection, each statement run at once on its sqlite3 handle (`OneRow`),
    between a `BEGIN IMMEDIATE` that does not wait and a `COMMIT`."""

    def __init__(self, c: Connection) -> None:
        self._c = c
        self.changes: list[Change] = []

    async def one(self, stmt: OneRow, params: dict[str, Any]) -> Any:
        """Run a prebuilt statement; its one row (RETURNING, or a SELECT's), or None."""
        return stmt(self._c, params)

    def record(self, change: Change) -> None:
        """Announce `change` once this transaction commits (as `events.record` for a session)."""
        self.changes.append(change)

    def _step(self, steps: Callable[[PreparedTx], Awaitable[T]]) -> T:
        coro = steps(self)
        try:
            coro.send(None)  # type: ignore[attr-defined]
        except StopIteration as done:
            return cast(T, done.value)
        coro.close()  # type: ignore[attr-defined]
        raise RuntimeError("a SQLite prepared transaction waited on something else")

    def run_all(self, each: list[Callable[[PreparedTx], Awaitable[Any]]]) -> list[tuple[bool, Any]]:
        """Each of `each` in this one transaction, a savepoint apiece when there are several;
        what each returned or raised, as (True, value) or (False, exception). Raises (and rolls
        back all of them) only when the transaction itself cannot begin or commit."""
        import sqlite3

        raw = self._c.connection.driver_connection
        assert raw is not None
        try:
            raw.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            if e.sqlite_errorcode == _SQLITE_BUSY:
                raise NoConnection("another process holds SQLite's write lock") from None
            raise DBAPIError.instance("BEGIN IMMEDIATE", (), e, sqlite3.Error) from e
        apart = len(each) > 1
        outcomes: list[tuple[bool, Any]] = []
        try:
            for steps in each:
                mark = len(self.changes)
                if apart:
                    raw.execute("SAVEPOINT step")
                try:
                    result = self._step(steps)
                except Exception as e:
                    if not raw.in_transaction:
                        raise  # SQLite rolled it all back (a full disk, say): none happened
                    raw.execute("ROLLBACK TO step" if apart else "ROLLBACK")
                    del self.changes[mark:]
                    outcomes.append((False, e))
                    if not apart:
                        return outcomes
                else:
                    outcomes.append((True, result))
                if apart:
                    raw.execute("RELEASE step")
            raw.execute("COMMIT")
        except BaseException:
            if raw.in_transaction:
                raw.execute("ROLLBACK")
            self.changes.clear()
            raise
        return outcomes


async def _pg_one(
    db: Database, conn: Any, stmt: OneRow, params: dict[str, Any], *, every: bool = False
) -> Any:
    """A prebuilt statement on a psycopg async connection, told to the engine's statement
    listeners, its values converted as SQLAlchemy converts them; its one row, or None (with
    `every`, the list of its rows)."""
    sql, args = stmt.pg_sql(db.engine.dialect), stmt.pg_args(params)
    cur = conn.cursor()
    listeners = db.engine.dispatch.before_cursor_execute
    if listeners:
        listeners(None, cur, sql, args, None, False)
    await cur.execute(sql, args)
    if every:
        return [stmt.row(*r) for r in await cur.fetchall()]
    found = await cur.fetchone() if stmt.columns and cur.description is not None else None
    return None if found is None else stmt.row(*found)


def _all_rows(c: Connection, stmt: OneRow, params: dict[str, Any]) -> list[Any]:
    """Every row of a prebuilt read, through SQLAlchemy (`_AsyncReads.all`'s thread way)."""
    return [stmt.row(*r) for r in c.execute(stmt.stmt, stmt.args(params))]


_SQLITE_BUSY = 5  # sqlite3's SQLITE_BUSY: another connection holds the write lock


def _sqlite_begin(conn: Any) -> None:
    opts = conn.get_execution_options()
    if opts.get("stencil_single", False):
        return  # one SELECT (`fetch`): a statement is its own snapshot, no BEGIN needed
    conn.exec_driver_sql("BEGIN" if opts.get("stencil_read", False) else "BEGIN IMMEDIATE")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # In WAL mode NORMAL is safe from corruption; a power cut may lose the last commits, not
    # the file. FULL would fsync every commit, the cost of every submit.
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
