"""Every committed change, pushed to whoever waits for it: in this process at once, and to every
other process through PostgreSQL `LISTEN/NOTIFY` or, when Redis is configured, Redis pub/sub.

A change is recorded inside the transaction that makes it (`record`); it goes out only once
that transaction commits, and never if it rolls back. On PostgreSQL the `NOTIFY` is part of the
transaction itself, so listeners hear of it exactly when it commits; with Redis it is published
right after the commit. Waiters (a Server-Sent Event stream, a `?wait=` read, the local worker,
the webhook dispatcher, the API-key cache) `watch` a topic and an id (or every id of a topic)
and re-read the store when woken: an event says *that* something changed, the store says what.

A lost notification (a listener reconnecting, a writer on SQLite in another process) is caught
by one periodic check per process, not per waiter: it reads the watched jobs' positions in one
query and wakes the watchers of those that moved (`Events.check_once`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from engine.db.database import Database

log = logging.getLogger("stencil.events")

CHANNEL = "stencil_changes"
JOB, KEY, TENANT = "job", "key", "tenant"
ANY = "*"  # watch every id of a topic
_PENDING = "stencil_changes"  # Session.info key: changes waiting for the commit


@dataclass(frozen=True)
class Change:
    """Something in the store changed: a job (its new status), a key, a tenant."""

    topic: str
    id: str
    status: str | None = None

    def dumps(self, origin: str) -> str:
        """The wire form (a NOTIFY payload or a Redis message; well under 8000 bytes)."""
        return json.dumps({"t": self.topic, "i": self.id, "s": self.status, "o": origin})

    @staticmethod
    def loads(raw: str | bytes) -> tuple[Change, str]:
        """A change and the process it came from."""
        d = json.loads(raw)
        return Change(str(d["t"]), str(d["i"]), d.get("s")), str(d.get("o", ""))


def record(s: Session, change: Change) -> None:
    """Announce `change` once the transaction of `s` commits."""
    s.info.setdefault(_PENDING, []).append(change)


class Watch:
    """One waiter's mailbox: set when a change it watches arrives, cleared by `wait`.

    Make the watch before reading the store, then read, then `wait`: a change that lands
    between the read and the wait is not lost, it makes the wait return at once.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._flag = asyncio.Event()
        self.changes: list[Change] = []

    def _put(self, change: Change) -> None:
        if len(self.changes) < 256:
            self.changes.append(change)
        else:  # a waiter that does not drain gets one "re-read everything" instead
            self.changes = [Change(change.topic, ANY)]
        self._flag.set()

    async def wait(self, timeout: float | None) -> bool:
        """Until a change arrives (True) or `timeout` seconds pass (False)."""
        if not self._flag.is_set():
            # In this task (`asyncio.timeout`), not a task of its own (`wait_for`): the change
            # wakes the waiter in one turn of the loop instead of three.
            try:
                async with asyncio.timeout(timeout):
                    await self._flag.wait()
            except TimeoutError:
                return False
        self._flag.clear()
        return True

    def drain(self) -> list[Change]:
        """The changes received since the last drain."""
        out, self.changes = self.changes, []
        return out


class Events:
    """The change feed of one process over one database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.origin = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.redis_url = ""
        self._watches: dict[tuple[str, str], set[Watch]] = defaultdict(set)
        self._callbacks: dict[
            str, list[tuple[asyncio.AbstractEventLoop, Callable[[Change], None]]]
        ] = defaultdict(list)
        self._lock = threading.Lock()  # watches and callbacks are read from commit threads
        self._tasks: list[asyncio.Task[None]] = []
        self._redis: Any = None
        self._redis_lock = threading.Lock()
        self._seen: dict[str, tuple[str, int, float]] = {}  # job id -> last checked position
        self._key_check_after: datetime | None = None
        self.listening = False  # a cross-process listener is connected
        # The periodic check's interval; None: 1 s alone on SQLite, 10 s under a live channel.
        self.check_interval_s: float | None = None
        self._connected = asyncio.Event()
        self.published = 0  # changes sent to other processes (for tests and metrics)
        self.delivered = 0  # changes handed to watchers in this process

    # ---- the writing side: called by the Database's session hooks -------------------------

    @property
    def transport(self) -> str:
        """How changes reach other processes: `redis`, `postgres`, or `none` (SQLite alone)."""
        if self.redis_url:
            return "redis"
        return "none" if self.db.is_sqlite else "postgres"

    def before_commit(self, s: Session) -> None:
        """On PostgreSQL, NOTIFY inside the transaction: sent if and only if it commits."""
        notify = self.notify_statement(s.info.get(_PENDING) or [])
        if notify is not None:
            s.connection().exec_driver_sql(*notify)

    def notify_statement(self, changes: list[Change]) -> tuple[str, dict[str, str]] | None:
        """The NOTIFY of a transaction's changes, to run inside it (PostgreSQL without Redis),
        in psycopg's own parameter style (a session runs it as driver SQL): one statement for
        every change; pg_notify dedupes nothing we need."""
        if not changes or self.transport != "postgres":
            return None
        params = {f"p{i}": c.dumps(self.origin) for i, c in enumerate(changes)}
        marks = ", ".join(f"pg_notify('{CHANNEL}', %(p{i})s)" for i in range(len(changes)))
        return "SELECT " + marks, params

    def after_commit(self, s: Session) -> None:
        """The transaction committed: wake this process's watchers; publish to Redis."""
        self.committed(s.info.pop(_PENDING, None) or [])

    def committed(self, changes: list[Change]) -> None:
        """A transaction with these changes committed (a session's, or a `PreparedTx`'s)."""
        if not changes:
            return
        for c in changes:
            self.deliver(c)
        if self.transport == "redis":
            self._publish_redis(changes)
        elif self.transport == "postgres":
            self.published += len(changes)

    def after_rollback(self, s: Session) -> None:
        """Nothing happened: forget what the transaction recorded."""
        s.info.pop(_PENDING, None)

    def _publish_redis(self, changes: list[Change]) -> None:
        try:
            with self._redis_lock:
                if self._redis is None:
                    import redis

                    self._redis = redis.Redis.from_url(self.redis_url, socket_timeout=2)
                client = self._redis
            pipe = client.pipeline(transaction=False)
            for c in changes:
                pipe.publish(CHANNEL, c.dumps(self.origin))
            pipe.execute()
            self.published += len(changes)
        except Exception as e:  # the periodic check catches what this loses
            log.warning("publishing %d change(s) to Redis failed: %s", len(changes), e)

    # ---- the waiting side ------------------------------------------------------------------

    def deliver(self, change: Change) -> None:
        """Hand a change to its watchers and callbacks, each on its own event loop; safe from
        any thread (a commit on a worker thread, the loop itself)."""
        with self._lock:
            targets = [
                *self._watches.get((change.topic, change.id), ()),
                *self._watches.get((change.topic, ANY), ()),
            ]
            callbacks = list(self._callbacks.get(change.topic, ()))
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for w in targets:
            _call_on(w._loop, running, w._put, change)
        for loop, fn in callbacks:
            _call_on(loop, running, self._callback, fn, change)
        self.delivered += 1

    @staticmethod
    def _callback(fn: Callable[[Change], None], change: Change) -> None:
        try:
            fn(change)
        except Exception:
            log.exception("a change callback failed")

    def on(self, topic: str, fn: Callable[[Change], None]) -> None:
        """Call `fn` on the calling event loop for every change of `topic` (and every
        resync)."""
        with self._lock:
            self._callbacks[topic].append((asyncio.get_running_loop(), fn))

    @contextlib.contextmanager
    def watch(self, topic: str, id_: str = ANY) -> Iterator[Watch]:
        """Watch a topic's id (or every id with ANY) for as long as the block runs; the watch
        belongs to the calling event loop."""
        w = Watch(asyncio.get_running_loop())
        key = (topic, id_)
        with self._lock:
            self._watches[key].add(w)
        try:
            yield w
        finally:
            with self._lock:
                ws = self._watches.get(key)
                if ws is not None:
                    ws.discard(w)
                    if not ws:
                        del self._watches[key]

    def watched_jobs(self) -> list[str]:
        """The job ids someone in this process waits on."""
        with self._lock:
            return [i for (t, i) in self._watches if t == JOB and i != ANY]

    # ---- listeners and the safety net ------------------------------------------------------

    async def start(self) -> None:
        """Listen for other processes' changes, and run the periodic check."""
        check_interval_s = self.check_interval_s
        self._connected = asyncio.Event()
        listen = {"postgres": self._listen_postgres, "redis": self._listen_redis}.get(
            self.transport
        )
        if listen is not None:
            self._tasks.append(asyncio.create_task(listen(), name="stencil-listen"))
            # Serve once listening (a change made meanwhile would only reach the check).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._connected.wait(), 5.0)
        if check_interval_s is None:
            # With a cross-process channel the check only covers a lost notification.
            check_interval_s = 1.0 if self.transport == "none" else 10.0
        self._tasks.append(
            asyncio.create_task(self._check_loop(check_interval_s), name="stencil-events-check")
        )

    async def stop(self) -> None:
        """Stop listening (tasks started on another event loop are cancelled there)."""
        loop = asyncio.get_running_loop()
        mine = [t for t in self._tasks if t.get_loop() is loop]
        for t in self._tasks:
            if t in mine:
                t.cancel()
            elif not t.get_loop().is_closed():
                t.get_loop().call_soon_threadsafe(t.cancel)
        await asyncio.gather(*mine, return_exceptions=True)
        self._tasks.clear()
        self.listening = False
        if self._redis is not None:
            with contextlib.suppress(Exception):
                self._redis.close()
            self._redis = None

    def _from_other(self, raw: str | bytes) -> None:
        try:
            change, origin = Change.loads(raw)
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed change notification")
            return
        if origin != self.origin:  # our own were delivered at commit
            self.deliver(change)

    def _resync(self) -> None:
        """After a gap in listening: every watcher re-reads (changes may have been missed)."""
        with self._lock:
            keys = [(topic, id_) for (topic, id_) in self._watches]
            topics = list(self._callbacks)
        for topic, id_ in keys:
            self.deliver(Change(topic, id_))
        for topic in topics:
            if not any(k[0] == topic and k[1] == ANY for k in keys):
                self.deliver(Change(topic, ANY))

    async def _listen_postgres(self) -> None:
        import psycopg

        conninfo = self.db.engine.url.set(drivername="postgresql").render_as_string(
            hide_password=False
        )
        backoff = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.listening, backoff = True, 0.5
                    self._connected.set()
                    self._resync()
                    async for n in conn.notifies():
                        self._from_other(n.payload)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("listening for changes on PostgreSQL failed (%s); reconnecting", e)
            self.listening = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    async def _listen_redis(self) -> None:
        import redis.asyncio as aredis

        backoff = 0.5
        while True:
            client = aredis.Redis.from_url(self.redis_url)
            try:
                async with client.pubsub() as ps:
                    await ps.subscribe(CHANNEL)
                    self.listening, backoff = True, 0.5
                    self._connected.set()
                    self._resync()
                    async for msg in ps.listen():
                        if msg.get("type") == "message":
                            self._from_other(msg["data"])
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("listening for changes on Redis failed (%s); reconnecting", e)
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()
            self.listening = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    async def _check_loop(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                for c in await asyncio.to_thread(self.check_once):
                    self.deliver(c)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("the periodic change check failed", exc_info=True)

    def check_once(self) -> list[Change]:
        """One query over every watched job (and one over revoked keys): what moved since the
        last check. The safety net under the notifications."""
        from engine.db.tables import ApiKey, Job

        out: list[Change] = []
        ids = self.watched_jobs()
        seen: dict[str, tuple[str, int, float]] = {}
        with self.db.reader() as s:
            for i in range(0, len(ids), 500):
                rows = s.execute(
                    select(Job.id, Job.status, Job.attempts, Job.progress).where(
                        Job.id.in_(ids[i : i + 500])
                    )
                ).all()
                for job_id, status, attempts, progress in rows:
                    pos = (status, attempts or 0, progress or 0.0)
                    seen[job_id] = pos
                    before = self._seen.get(job_id)
                    # A job first seen here may have moved after its watcher read it: unless it
                    # is still queued (as every job starts), its watchers read it again.
                    if before != pos and (before is not None or status != "queued"):
                        out.append(Change(JOB, job_id, status))
            since = self._key_check_after
            q = select(ApiKey.id, ApiKey.revoked_at).where(ApiKey.revoked_at.is_not(None))
            if since is not None:
                q = q.where(ApiKey.revoked_at >= since)
            latest = since
            for key_id, revoked_at in s.execute(q).all():
                if since is not None:
                    out.append(Change(KEY, key_id))
                if revoked_at is not None and (latest is None or revoked_at > latest):
                    latest = revoked_at
            if latest is None:
                from engine.db.database import utcnow

                latest = utcnow()
            self._key_check_after = latest
        self._seen = seen
        return out


def _call_on(
    loop: asyncio.AbstractEventLoop,
    running: asyncio.AbstractEventLoop | None,
    fn: Callable[..., None],
    *args: Any,
) -> None:
    """`fn(*args)` on `loop`: now if that is the running loop, else scheduled there."""
    if loop is running:
        fn(*args)
    elif not loop.is_closed():
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(fn, *args)
