"""How the ledger's readers scale: usage report, template estimate and a /metrics scrape.

    python bench/bench_costs.py [--rows 50000] [--database-url postgresql+psycopg://...]

Fills a fresh database with ledger rows (real jobs rows behind them) and times each reader.
Targets (a laptop-class CPU, SQLite): a month's usage report and a /metrics scrape under
250 ms at 50k charges; an estimate (its last 200 charges) under 20 ms.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client import generate_latest  # noqa: E402

from engine.billing.usage import estimate, usage  # noqa: E402
from engine.db.database import Database, new_id, utcnow  # noqa: E402
from engine.db.tables import Job, LedgerEntry  # noqa: E402
from engine.metrics import registry_for  # noqa: E402
from engine.tenants.keys import ensure_tenant  # noqa: E402


def fill(db: Database, rows: int) -> None:
    """`rows` succeeded jobs over the last 30 days, each with its charge."""
    now = utcnow()
    with db.session() as s:
        tenants = [ensure_tenant(s, f"t{i}").id for i in range(20)]
    batch = 2000
    for start in range(0, rows, batch):
        with db.session() as s:
            for i in range(start, min(start + batch, rows)):
                at = now - timedelta(seconds=(i * 2_592_000) // rows)
                template = ("txt2img", "upscale")[i % 2]
                job = Job(
                    id=new_id("job"),
                    tenant_id=tenants[i % len(tenants)],
                    template=template,
                    template_version="1.0.0",
                    status="succeeded",
                    params={},
                    inputs={},
                    graph={},
                    graph_hash="0" * 64,
                    progress=1.0,
                    outputs=[],
                    attempts=1,
                    cancel_requested=False,
                    metering={},
                    created_at=at,
                )
                s.add(job)
                ms = 800 + (i * 7919) % 4000
                s.add(
                    LedgerEntry(
                        id=new_id("chg"),
                        job_id=job.id,
                        attempt=1,
                        tenant_id=job.tenant_id,
                        template=template,
                        template_version="1.0.0",
                        gpu_class="l4",
                        gpu_type="L4",
                        payer="tenant",
                        outcome="succeeded",
                        billable_ms=ms,
                        run_ms=ms,
                        execution_ms=ms - 50,
                        queue_ms=10,
                        cold_start_ms=0,
                        usd_per_second="0.000222",
                        rate={},
                        usd_micros=(ms * 222) // 1000,
                        day=at.strftime("%Y-%m-%d"),
                        month=at.strftime("%Y-%m"),
                        created_at=at,
                    )
                )


def timed(label: str, fn: Callable[[], object], repeat: int = 5) -> None:
    """Best of `repeat` runs, in milliseconds."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    print(f"{label:<40} {best * 1000:8.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--database-url", default="")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(args.database_url or f"sqlite:///{tmp}/bench.db")
        db.migrate()
        t0 = time.perf_counter()
        fill(db, args.rows)
        print(f"filled {args.rows} charges in {time.perf_counter() - t0:.1f} s")
        now = utcnow()
        start = now - timedelta(days=30)

        def report(group_by: str) -> None:
            with db.session() as s:
                usage(s, start=start, end=now, group_by=group_by)  # type: ignore[arg-type]

        def one_tenant() -> None:
            with db.session() as s:
                tid = ensure_tenant(s, "t3").id
                usage(s, start=start, end=now, group_by="template", tenant_id=tid)

        def est() -> None:
            with db.session() as s:
                estimate(s, "txt2img", 1)

        reg = registry_for(db)
        timed("usage, all tenants, by tenant", lambda: report("tenant"))
        timed("usage, all tenants, by day", lambda: report("day"))
        timed("usage, one tenant, by template", one_tenant)
        timed("estimate (last 200 charges)", est)
        timed("/metrics scrape", lambda: generate_latest(reg))
        db.dispose()


if __name__ == "__main__":
    main()
