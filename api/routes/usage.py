"""Usage routes: the caller's usage from the ledger, and (admin scope) every tenant's."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BeforeValidator
from sqlalchemy import select

from api import schemas
from api.deps import AdminDep, PrincipalDep, ServicesDep
from api.openapi import problems
from api.services import Services
from engine.budgets import budget_status
from engine.errors import InvalidParams, NotFound
from engine.store import Tenant
from engine.usage import GroupBy, UsageRow, totals, usage

router = APIRouter(prefix="/v1", tags=["usage"])

USAGE_422 = "Invalid range or grouping; `errors` names the field."


def _iso_only(v: object) -> object:
    # pydantic would read a bare number as a unix time; the API documents ISO 8601 only.
    if isinstance(v, str) and re.fullmatch(r"[\d.eE+-]+", v.strip()) and not _ISO_DATE.match(v):
        raise ValueError("expected an ISO 8601 date or date-time")
    return v


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")

StartQ = Annotated[
    datetime | None,
    BeforeValidator(_iso_only),
    Query(
        description="Start (inclusive), an ISO date or date-time; UTC when no offset is given. "
        "Default: the first day of this month."
    ),
]
EndQ = Annotated[
    datetime | None,
    BeforeValidator(_iso_only),
    Query(description="End (exclusive), an ISO date or date-time. Default: now."),
]


def _utc(d: datetime) -> datetime:
    return d.replace(tzinfo=UTC) if d.tzinfo is None else d.astimezone(UTC)


def resolve_range(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    """The [start, end) range in UTC, with the defaults; 422 naming the field if inverted."""
    now = datetime.now(UTC)
    s = _utc(start) if start else now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    e = _utc(end) if end else now
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
    services: Services,
    start: datetime,
    end: datetime,
    group_by: GroupBy,
    tenant_id: str | None,
    tenant_name: str | None,
) -> schemas.Usage:
    with services.db.session() as s:
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
    start: StartQ = None,
    end: EndQ = None,
    group_by: Annotated[
        schemas.TenantUsageGroupBy, Query(description="How to group the totals.")
    ] = schemas.TenantUsageGroupBy.TEMPLATE,
) -> schemas.Usage:
    """Your tenant's jobs, billable seconds and USD per group, from the usage ledger."""
    s, e = resolve_range(start, end)
    grouping: GroupBy = group_by.value
    return await asyncio.to_thread(
        _report, services, s, e, grouping, principal.tenant_id, principal.tenant_name
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
    start: StartQ = None,
    end: EndQ = None,
    group_by: Annotated[
        schemas.UsageGroupBy, Query(description="How to group the totals.")
    ] = schemas.UsageGroupBy.TENANT,
    tenant: Annotated[
        str | None, Query(max_length=100, description="Only this tenant (by name).")
    ] = None,
) -> schemas.Usage:
    """Usage across all tenants (admin scope), including what the platform absorbed."""
    s, e = resolve_range(start, end)
    tenant_id: str | None = None
    if tenant is not None:
        tenant_id = await asyncio.to_thread(_tenant_id, services, tenant)
    grouping: GroupBy = group_by.value
    return await asyncio.to_thread(_report, services, s, e, grouping, tenant_id, tenant)


def _tenant_id(services: Services, name: str) -> str:
    with services.db.session() as s:
        tid = s.scalar(select(Tenant.id).where(Tenant.name == name))
    if tid is None:
        raise NotFound(f"No tenant {name}.")
    return tid
