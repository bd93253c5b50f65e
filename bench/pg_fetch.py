"""Three ways for async code to read one job row from PostgreSQL, under 16 concurrent readers.

    .venv/bin/python bench/pg_fetch.py [--seconds 2] [--rounds 3]

On one event loop, 16 tasks each read their own job (the `GET /v1/jobs/{id}` statement) as
fast as they can, for `--seconds`, by each way in turn, `--rounds` times:

- `thread`: what the engine does (`Database.fetch`): the blocking driver on a worker thread,
  on a connection the thread keeps;
- `sqlalchemy-async`: SQLAlchemy's asyncio extension (`create_async_engine`, `run_sync`) on
  psycopg's async connection; needs `greenlet` (`pip install greenlet==3.5.6`, not a project
  dependency: the way is skipped without it);
- `psycopg-async`: psycopg's own `AsyncConnection`, one per reader, the statement compiled
  once by SQLAlchemy;
- `engine-one`: `Database.one`, that way from a `psycopg_pool` pool, with the engine's
  statement listeners and retry;
- `engine-shared`: `read_view` as the API calls it (`Database.shared`): the same, with the
  reads that arrive while two statements run answered together by the next one.

Prints reads per second and the process CPU per read. Needs the PostgreSQL server at
`127.0.0.1:5432` (a scratch database is created).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PG = "postgresql+psycopg://postgres@127.0.0.1:5432"


async def _measure(fn: Callable[[int], Awaitable[Any]], seconds: float) -> tuple[float, float]:
    n = 0
    t0 = time.perf_counter()
    cpu0 = time.process_time()

    async def reader(i: int) -> None:
        nonlocal n
        while time.perf_counter() - t0 < seconds:
            await fn(i)
            n += 1

    await asyncio.gather(*(reader(i) for i in range(16)))
    return n / (time.perf_counter() - t0), (time.process_time() - cpu0) / n


async def main(seconds: float, rounds: int) -> None:
    import psycopg
    from psycopg.rows import namedtuple_row

    from engine.db.database import Database, utcnow
    from engine.db.tables import Job
    from engine.jobs.store import _VIEW, _VIEW_ROW, read_view
    from engine.tenants.keys import create_key

    name = f"stencil_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(f"{PG}/test", isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    db = Database(f"{PG}/{name}")
    db.migrate()
    with db.session() as s:
        tenant = create_key(s, "bench")[1].tenant_id
        for i in range(16):
            s.add(
                Job(
                    id=f"job_bench{i}", tenant_id=tenant, template="txt2img",
                    template_version="1.0.0", status="queued", params={"prompt": "x"},
                    inputs={}, graph={}, graph_hash="h", progress=0.0, outputs=[], attempts=0,
                    cancel_requested=False, metering={}, created_at=utcnow(),
                )
            )  # fmt: skip
    params = [{"job_id": f"job_bench{i}", "tenant_id": tenant} for i in range(16)]
    ways: dict[str, Callable[[int], Awaitable[Any]]] = {}

    async def thread(i: int) -> Any:
        return await db.fetch(_VIEW_ROW, params[i])

    ways["thread"] = thread
    try:
        import greenlet  # noqa: F401
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(f"{PG}/{name}", pool_size=16).execution_options(
            isolation_level="AUTOCOMMIT"
        )

        async def sqlalchemy_async(i: int) -> Any:
            async with engine.connect() as c:
                return await c.run_sync(_VIEW_ROW, params[i])

        ways["sqlalchemy-async"] = sqlalchemy_async
    except ImportError:
        print("sqlalchemy-async: skipped (no greenlet)")
    sql = str(_VIEW.compile(dialect=db.engine.dialect))
    free: asyncio.Queue[Any] = asyncio.Queue()
    for _ in range(16):
        free.put_nowait(
            await psycopg.AsyncConnection.connect(
                f"postgresql://postgres@127.0.0.1:5432/{name}",
                autocommit=True,
                row_factory=namedtuple_row,
            )
        )

    async def psycopg_async(i: int) -> Any:
        c = await free.get()
        try:
            cur = await c.execute(sql, params[i])
            return await cur.fetchone()
        finally:
            free.put_nowait(c)

    ways["psycopg-async"] = psycopg_async

    async def engine_one(i: int) -> Any:
        return await db.one(_VIEW_ROW, params[i])

    async def engine_shared(i: int) -> Any:
        return await read_view(db, tenant, f"job_bench{i}")

    ways["engine-one"] = engine_one
    ways["engine-shared"] = engine_shared
    for i in (0, 7):
        expected = tuple(await thread(i))
        for way, fn in ways.items():
            assert tuple(await fn(i)) == expected, way  # the same row, the same values
    results: dict[str, list[tuple[float, float]]] = {w: [] for w in ways}
    for _ in range(rounds):
        for way, fn in ways.items():
            results[way].append(await _measure(fn, seconds))
    print(f"16 concurrent readers, {seconds:g} s a way, median of {rounds} rounds")
    base = sorted(r for r, _ in results["thread"])[rounds // 2]
    for way, rs in results.items():
        rate = sorted(r for r, _ in rs)[rounds // 2]
        cpu = sorted(c for _, c in rs)[rounds // 2]
        ratio = rate / base
        print(f"  {way:<16} {rate:6.0f} reads/s ({ratio:4.2f}x)  CPU {cpu * 1e6:4.0f} us/read")
    await db.aclose()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    asyncio.run(main(a.seconds, a.rounds))
