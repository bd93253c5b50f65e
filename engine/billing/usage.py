"""Reading the ledger: usage grouped by template, day, GPU class or tenant, and estimates."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine.billing.pricing import from_micros
from engine.db.tables import LedgerEntry, Tenant
from engine.jobs.states import SUCCEEDED

GroupBy = Literal["template", "day", "gpu_class", "tenant"]
ESTIMATE_WINDOW = 200  # the most recent succeeded jobs an estimate is measured from


@dataclass(frozen=True)
class UsageRow:
    """Totals for one group: what the tenant was charged and what the platform absorbed."""

    key: str
    jobs: int
    billable_seconds: Decimal
    usd: Decimal
    platform_seconds: Decimal
    platform_usd: Decimal

    def as_dict(self) -> dict[str, Any]:
        """Strings for money and seconds: exact in JSON and CSV."""
        return {
            "key": self.key,
            "jobs": self.jobs,
            "billable_seconds": str(self.billable_seconds),
            "usd": str(self.usd),
            "platform_seconds": str(self.platform_seconds),
            "platform_usd": str(self.platform_usd),
        }


def _seconds(ms: int) -> Decimal:
    return (Decimal(ms) / 1000).quantize(Decimal("0.001"))


def usage(
    s: Session,
    *,
    start: datetime,
    end: datetime,
    group_by: GroupBy,
    tenant_id: str | None = None,
) -> list[UsageRow]:
    """Ledger totals in [start, end) per group, for one tenant or (admin) all of them.

    `jobs` counts the distinct jobs the tenant was charged for; the platform columns hold
    attempts the platform paid for (its own failures, retried attempts).
    """
    col: Any = {
        "template": LedgerEntry.template,
        "day": LedgerEntry.day,
        "gpu_class": LedgerEntry.gpu_class,
        "tenant": Tenant.name,
    }[group_by]
    q = (
        select(
            col,
            LedgerEntry.payer,
            func.count(func.distinct(LedgerEntry.job_id)),
            func.coalesce(func.sum(LedgerEntry.billable_ms), 0),
            func.coalesce(func.sum(LedgerEntry.usd_micros), 0),
        )
        .join(Tenant, Tenant.id == LedgerEntry.tenant_id)
        .where(LedgerEntry.created_at >= start, LedgerEntry.created_at < end)
        .group_by(col, LedgerEntry.payer)
    )
    if tenant_id is not None:
        q = q.where(LedgerEntry.tenant_id == tenant_id)
    acc: dict[str, dict[str, int]] = {}
    for key, payer, jobs, ms, micros in s.execute(q):
        a = acc.setdefault(str(key), {"jobs": 0, "ms": 0, "usd": 0, "p_ms": 0, "p_usd": 0})
        if payer == "tenant":
            a["jobs"] += int(jobs)
            a["ms"] += int(ms)
            a["usd"] += int(micros)
        else:
            a["p_ms"] += int(ms)
            a["p_usd"] += int(micros)
    return [
        UsageRow(
            key=k,
            jobs=a["jobs"],
            billable_seconds=_seconds(a["ms"]),
            usd=from_micros(a["usd"]),
            platform_seconds=_seconds(a["p_ms"]),
            platform_usd=from_micros(a["p_usd"]),
        )
        for k, a in sorted(acc.items())
    ]


def totals(rows: list[UsageRow]) -> UsageRow:
    """The sum of some groups (the jobs of different groups are different jobs)."""
    return UsageRow(
        key="total",
        jobs=sum(r.jobs for r in rows),
        billable_seconds=sum((r.billable_seconds for r in rows), Decimal("0.000")),
        usd=sum((r.usd for r in rows), Decimal("0.000000")),
        platform_seconds=sum((r.platform_seconds for r in rows), Decimal("0.000")),
        platform_usd=sum((r.platform_usd for r in rows), Decimal("0.000000")),
    )


@dataclass(frozen=True)
class Estimate:
    """Measured cost and run time of a template's recent succeeded jobs."""

    sample_size: int
    usd_p50: Decimal | None
    usd_p95: Decimal | None
    run_seconds_p50: Decimal | None
    run_seconds_p95: Decimal | None


def percentile(sorted_values: list[int], p: float) -> int:
    """Nearest-rank percentile of an ascending list (a value that was measured)."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(p * len(sorted_values) / 100))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def estimate(s: Session, template: str, major: int, window: int = ESTIMATE_WINDOW) -> Estimate:
    """p50/p95 of cost and run time over the template's last `window` succeeded jobs."""
    rows = s.execute(
        select(LedgerEntry.usd_micros, LedgerEntry.run_ms)
        .where(
            LedgerEntry.template == template,
            LedgerEntry.template_version.startswith(f"{major}."),
            LedgerEntry.outcome == SUCCEEDED,
            LedgerEntry.payer == "tenant",
        )
        .order_by(LedgerEntry.created_at.desc())
        .limit(window)
    ).all()
    if not rows:
        return Estimate(0, None, None, None, None)
    usd = sorted(int(r[0]) for r in rows)
    run = sorted(int(r[1]) for r in rows)
    return Estimate(
        sample_size=len(rows),
        usd_p50=from_micros(percentile(usd, 50)),
        usd_p95=from_micros(percentile(usd, 95)),
        run_seconds_p50=_seconds(percentile(run, 50)),
        run_seconds_p95=_seconds(percentile(run, 95)),
    )
