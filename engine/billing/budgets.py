"""Monthly budgets per tenant: the refusal at submit and the once-a-month threshold event."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, select
from sqlalchemy.orm import Session

from engine.billing.pricing import to_micros, usd_str
from engine.db.database import OneRow, insert_ignore, new_id, utcnow
from engine.db.tables import LedgerEntry, Tenant, TenantBudget, TenantEvent
from engine.errors import BadRequest, BudgetExceeded, NotFound
from engine.webhooks.outbox import account_delivery

THRESHOLD_EVENT = "budget.threshold"


def month_key(at: datetime) -> str:
    """The UTC calendar month of a moment, `YYYY-MM`: the budget period."""
    return at.strftime("%Y-%m")


def next_month_start(at: datetime) -> datetime:
    """Midnight UTC on the first day of the month after `at`."""
    first = at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return (first + timedelta(days=32)).replace(day=1)


def set_budget(
    s: Session, tenant_name: str, usd: Decimal | None, threshold: Decimal | None = None
) -> TenantBudget | None:
    """Set (or with `usd=None` remove) a tenant's monthly budget and soft threshold."""
    tenant = s.scalar(select(Tenant).where(Tenant.name == tenant_name))
    if tenant is None:
        raise NotFound(f"No tenant {tenant_name}.")
    current = s.get(TenantBudget, tenant.id)
    if usd is None:
        if current is not None:
            s.delete(current)
        return None
    if usd < 0:
        raise BadRequest("The budget must not be negative.", extra={"field": "usd"})
    if threshold is not None and not (Decimal(0) < threshold <= Decimal(1)):
        raise BadRequest("The threshold is a fraction in (0, 1].", extra={"field": "threshold"})
    if current is None:
        current = TenantBudget(tenant_id=tenant.id)
        s.add(current)
    current.monthly_usd_micros = to_micros(usd)
    current.threshold = str(threshold) if threshold is not None else None
    current.updated_at = utcnow()
    s.flush()
    return current


def month_spend_micros(s: Session, tenant_id: str, month: str) -> int:
    """What the tenant was charged in a month (platform-paid rows excluded)."""
    total = s.scalar(
        select(func.coalesce(func.sum(LedgerEntry.usd_micros), 0)).where(
            LedgerEntry.tenant_id == tenant_id,
            LedgerEntry.month == month,
            LedgerEntry.payer == "tenant",
        )
    )
    return int(total or 0)


@dataclass(frozen=True)
class BudgetStatus:
    """A tenant's budget and what it was charged in one month."""

    month: str
    budget_micros: int
    spend_micros: int
    threshold: str | None

    @property
    def over_budget(self) -> bool:
        """Spend has reached the budget: new submissions are refused."""
        return self.spend_micros >= self.budget_micros

    def view(self) -> dict[str, Any]:
        """As shown to people: USD strings."""
        return {
            "month": self.month,
            "budget_usd": usd_str(self.budget_micros),
            "spend_usd": usd_str(self.spend_micros),
            "threshold": self.threshold,
            "over_budget": self.over_budget,
        }


def budget_status(s: Session, tenant_id: str, now: datetime | None = None) -> BudgetStatus | None:
    """The tenant's budget, threshold and spend this month; None without a budget."""
    budget = s.get(TenantBudget, tenant_id)
    if budget is None:
        return None
    month = month_key(now or utcnow())
    return BudgetStatus(
        month=month,
        budget_micros=budget.monthly_usd_micros,
        spend_micros=month_spend_micros(s, tenant_id, month),
        threshold=budget.threshold,
    )


def check_budget(s: Session, tenant_id: str, now: datetime | None = None) -> None:
    """Refuse (402) a submission while the tenant's spend this month is at or over budget."""
    now = now or utcnow()
    status = budget_status(s, tenant_id, now)
    if status is None or not status.over_budget:
        return
    v = status.view()
    retry = max(int((next_month_start(now) - now).total_seconds()), 1)
    raise BudgetExceeded(
        f"This tenant's monthly budget of ${v['budget_usd']} is spent "
        f"(${v['spend_usd']} charged in {v['month']}). Raise the budget or wait for "
        "the next month.",
        extra={"budget_usd": v["budget_usd"], "spend_usd": v["spend_usd"], "month": v["month"]},
        headers={"Retry-After": str(retry)},
    )


_BUDGETS = cast(Table, TenantBudget.__table__)
_THRESHOLD = OneRow(
    select(_BUDGETS.c.monthly_usd_micros, _BUDGETS.c.threshold).where(
        _BUDGETS.c.tenant_id == bindparam("tenant_id")
    )
)


def note_spend(s: Session, tenant_id: str, month: str) -> bool:
    """After a charge: record `budget.threshold` once per month when spend crosses it.

    The event lands in `tenant_events` in the charge's transaction, at most once per tenant and
    month (a unique key). When the tenant has a webhook endpoint, its delivery is written to the
    webhook outbox in the same transaction, so the dispatcher sends it like a job event; without
    one, the event is only recorded (`GET /v1/events`). Returns True when this call wrote it.
    """
    # A Core read of the two fields, built once (a `OneRow`): the ORM's lookup cost more than
    # the rest of a charge for a tenant without a budget (every charge reads it).
    budget = _THRESHOLD(s.connection(), {"tenant_id": tenant_id})
    if budget is None or budget.threshold is None:
        return False
    spend = month_spend_micros(s, tenant_id, month)
    limit = Decimal(budget.monthly_usd_micros) * Decimal(budget.threshold)
    if Decimal(spend) < limit:
        return False
    tenant = s.get(Tenant, tenant_id)
    if tenant is None:
        return False
    payload = {
        "type": THRESHOLD_EVENT,
        "tenant_id": tenant_id,
        "tenant": tenant.name,
        "month": month,
        "budget_usd": usd_str(budget.monthly_usd_micros),
        "threshold": budget.threshold,
        "spend_usd": usd_str(spend),
    }
    event_id = new_id("evt")
    written = insert_ignore(
        s,
        TenantEvent,
        id=event_id,
        tenant_id=tenant_id,
        type=THRESHOLD_EVENT,
        dedupe_key=month,
        payload=payload,
        created_at=utcnow(),
        delivered_at=None,
    )
    if written and tenant.webhook_url:
        event = s.get(TenantEvent, event_id)
        assert event is not None
        s.add(account_delivery(event, tenant, tenant.webhook_url))
        s.flush()
    return written
