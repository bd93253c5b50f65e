"""1,000 open event streams on one API process: its CPU and its database statements per second.

    .venv/bin/python bench/sse_streams.py [--streams 1000] [--db sqlite|postgres|both]

Starts one API process (uvicorn, no engine) that counts every SQL statement it sends, creates
N queued jobs, and opens one `GET /v1/jobs/{id}/events` stream per job from a client process.
Then, for each phase, reports the server's CPU seconds per second and statements per second:

- idle: every stream open, nothing changing (an open stream should cost nothing);
- changing: another process moves every job queued -> running -> succeeded, as a worker
  would; each change reaches its stream (events counted at the client).

A stream that polled its row every 250 ms would send 4 statements a second each: 4,000/s for
1,000 streams before anything changed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
STATEMENTS = 0


def make_app() -> object:
    """The served app (`--factory`), counting statements, with a stats route for the bench."""
    from fastapi import FastAPI
    from sqlalchemy import event

    from api.app import create_app
    from api.settings import Settings

    app: FastAPI = create_app(Settings(), start_engine=False)  # type: ignore[assignment]

    def count(*_: Any) -> None:
        global STATEMENTS
        STATEMENTS += 1

    event.listen(app.state.services.db.engine, "before_cursor_execute", count)

    @app.get("/_bench/stats", include_in_schema=False)
    async def stats() -> dict[str, float]:
        t = os.times()
        return {"cpu_s": t.user + t.system, "statements": STATEMENTS}

    return app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _database(kind: str, tmp: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp / 'stencil.db'}"
    from sqlalchemy import create_engine, text

    name = f"stencil_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name


async def _follow(c: httpx.AsyncClient, job_id: str, h: dict[str, str], seen: list[int]) -> None:
    async with c.stream("GET", f"/v1/jobs/{job_id}/events", headers=h) as r:
        assert r.status_code == 200, await r.aread()
        async for line in r.aiter_lines():
            if line.startswith("event:"):
                seen[0] += 1
                if line.endswith("succeeded"):
                    return


def bench(kind: str, n: int, phase_s: float) -> dict[str, dict[str, float]]:
    from engine.db.database import Database, new_id, utcnow
    from engine.db.tables import Job
    from engine.jobs.store import transition
    from engine.tenants.keys import create_key

    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        db_url = _database(kind, tmp)
        port = _free_port()
        env = {
            **os.environ,
            "STENCIL_HOME": str(tmp / "home"),
            "STENCIL_DATABASE_URL": db_url,
            "STENCIL_CATALOG": str(ROOT / "catalog.yaml"),
            "STENCIL_URL_SIGNING_SECRET": "bench-secret",
            "STENCIL_ACTIVE_JOB_QUOTA": "100000000",
            "STENCIL_RATE_LIMIT_READ": "100000000/minute",
            "STENCIL_STREAMS_PER_KEY": str(min(n, 1000)),
            "STENCIL_WEBHOOK_DISPATCH": "false",
            "STENCIL_LOG_LEVEL": "warning",
            "STENCIL_TRUSTED_HOSTS": "127.0.0.1",
            "PYTHONPATH": str(ROOT),
        }
        server = subprocess.Popen(
            [
                sys.executable, "-m", "uvicorn", "--factory", "bench.sse_streams:make_app",
                "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
                "--no-access-log", "--backlog", "4096",
            ],
            cwd=ROOT,
            env=env,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{base}/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("the API did not start")
                time.sleep(0.2)
            db = Database(db_url)
            with db.session() as s:
                token, key = create_key(s, "bench")
                ids = [new_id("job") for _ in range(n)]
                for job_id in ids:
                    s.add(
                        Job(
                            id=job_id, tenant_id=key.tenant_id, template="txt2img",
                            template_version="1.1.0", status="queued", params={}, inputs={},
                            graph={}, graph_hash="0" * 64, progress=0.0, outputs=[],
                            attempts=0, cancel_requested=False, metering={},
                            created_at=utcnow(),
                        )
                    )  # fmt: skip
            h = {"Authorization": f"Bearer {token}"}
            return asyncio.run(_phases(base, ids, h, db, phase_s, transition))
        finally:
            server.terminate()
            server.wait(30)


async def _phases(
    base: str, ids: list[str], h: dict[str, str], db: Any, phase_s: float, transition: Any
) -> dict[str, dict[str, float]]:
    from engine.db.database import utcnow

    limits = httpx.Limits(max_connections=len(ids) + 10, max_keepalive_connections=10)
    timeout = httpx.Timeout(300.0, connect=60.0)
    async with (
        httpx.AsyncClient(base_url=base, limits=limits, timeout=timeout) as c,
        httpx.AsyncClient(base_url=base) as stats_client,
    ):
        seen = [0]
        tasks = [asyncio.create_task(_follow(c, job_id, h, seen)) for job_id in ids]
        while seen[0] < len(ids):  # every stream has sent its first event
            await asyncio.sleep(0.2)

        async def stats() -> dict[str, float]:
            return (await stats_client.get("/_bench/stats")).json()  # type: ignore[no-any-return]

        out: dict[str, dict[str, float]] = {}
        before, t0 = await stats(), time.monotonic()
        await asyncio.sleep(phase_s)
        after, t1 = await stats(), time.monotonic()
        out["idle"] = {
            "cpu": (after["cpu_s"] - before["cpu_s"]) / (t1 - t0),
            "statements_per_s": (after["statements"] - before["statements"]) / (t1 - t0),
            "events": 0,
        }

        def move_all() -> None:
            for to, frm in (("running", "queued"), ("succeeded", "running")):
                for job_id in ids:
                    with db.session() as s:
                        values = {"started_at": utcnow(), "attempts": 1} if to == "running" else {}
                        transition(s, job_id, [frm], to, **values)

        seen[0] = 0
        before, t0 = await stats(), time.monotonic()
        await asyncio.to_thread(move_all)
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=300)
        after, t1 = await stats(), time.monotonic()
        out["changing"] = {
            "cpu": (after["cpu_s"] - before["cpu_s"]) / (t1 - t0),
            "statements_per_s": (after["statements"] - before["statements"]) / (t1 - t0),
            "events": float(seen[0]),
            "seconds": t1 - t0,
        }
        return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    ap.add_argument("--phase-seconds", type=float, default=10.0)
    a = ap.parse_args()
    for kind in ["sqlite", "postgres"] if a.db == "both" else [a.db]:
        res = bench(kind, a.streams, a.phase_seconds)
        print(f"{kind}: {a.streams} open event streams on one API process")
        for phase, r in res.items():
            extra = (
                f", {r['events']:.0f} events in {r['seconds']:.1f} s" if phase == "changing" else ""
            )
            print(
                f"  {phase:<9} server CPU {r['cpu']:5.2f} s/s   "
                f"SQL statements {r['statements_per_s']:8.1f}/s{extra}"
            )


if __name__ == "__main__":
    main()
