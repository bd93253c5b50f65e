"""Usage routes: the caller's usage from the ledger, and (admin scope) every tenant's."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select
from sqlalchemy.orm import Session

from api import schemas
from api.deps import AdminDep, PrincipalDep, ServicesDep
from api.edge import EndQuery, StartQuery, TenantFilter
from api.openapi import problems
from engine.billing.budgets import budget_status
from engine.billing.usage import GroupBy, UsageRow, totals, usage
from engine.db.tables import Tenant
from engine.errors import InvalidParams, NotFound

router = APIRouter(prefix="/v1", tags=["usage"])

USAGE_422 = "Invalid range or grouping; `errors` names the field."


def resolve_range(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    """The [start, end) range in UTC (the edge has bounded and converted both), with the
    defaults; 422 naming the field if inverted."""
    now = datetime.now(UTC)
    s = start or now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    e = end or now
    if s >= e:
        raise InvalidParams([{"field": "start", "message": "start must be before end"}])
    return s, e


def _group(r: UsageRow) -> schemas.UsageGroup:
    return schemas.UsageGroup(
        key=r.key,
        jobs=r.jobs,
        billable_seconds=float(r.billable_seconds),
        usd=str(r.usd),
        platform_seconds=float(r.platform_seconds),
        platform_usd=str(r.platform_usd),
    )


def _report(
    s: Session,
    start: datetime,
    end: datetime,
    group_by: GroupBy,
    tenant_id: str | None,
    tenant_name: str | None,
) -> schemas.Usage:
    rows = usage(s, start=start, end=end, group_by=group_by, tenant_id=tenant_id)
    status = budget_status(s, tenant_id) if tenant_id else None
    return schemas.Usage(
        start=start,
        end=end,
        group_by=group_by,
        tenant=tenant_name,
        data=[_group(r) for r in rows],
        total=_group(totals(rows)),
        budget=schemas.BudgetInfo(**status.view()) if status else None,
    )


@router.get(
    "/usage",
    response_model=schemas.Usage,
    name="get_usage",
    response_description="The tenant's usage over the range, grouped.",
    responses=problems({422: USAGE_422}),
)
async def get_usage(
    principal: PrincipalDep,
    services: ServicesDep,
    start: StartQuery = None,
    end: EndQuery = None,
    group_by: Annotated[
        schemas.TenantUsageGroupBy, Query(description="How to group the totals.")
    ] = schemas.TenantUsageGroupBy.TEMPLATE,
) -> schemas.Usage:
    """Your tenant's jobs, billable seconds and USD per group, from the usage ledger."""
    s, e = resolve_range(start, end)
    grouping: GroupBy = group_by.value
    return await services.db.read(
        _report, s, e, grouping, principal.tenant_id, principal.tenant_name
    )


@router.get(
    "/admin/usage",
    response_model=schemas.Usage,
    name="get_admin_usage",
    tags=["admin"],
    response_description="Usage over the range across tenants (or of one), grouped.",
    responses=problems(
        {422: USAGE_422, 403: "The key lacks the admin scope.", 404: "No such tenant."}
    ),
)
async def get_admin_usage(
    _: AdminDep,
    services: ServicesDep,
    start: StartQuery = None,
    end: EndQuery = None,
    group_by: Annotated[
        schemas.UsageGroupBy, Query(description="How to group the totals.")
    ] = schemas.UsageGroupBy.TENANT,
    tenant: TenantFilter = None,
) -> schemas.Usage:
    """Usage across all tenants (admin scope), including what the platform absorbed."""
    s, e = resolve_range(start, end)
    tenant_id: str | None = None
    if tenant is not None:
        tenant_id = await services.db.read(_tenant_id, tenant)
    grouping: GroupBy = group_by.value
    return await services.db.read(_report, s, e, grouping, tenant_id, tenant)


def _tenant_id(s: Session, name: str) -> str:
    tid = s.scalar(select(Tenant.id).where(Tenant.name == name))
    if tid is None:
        raise NotFound(f"No tenant {name}.")
    return tid
