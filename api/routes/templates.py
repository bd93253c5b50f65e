"""Template routes: what can be called, with params as JSON Schema and measured estimates."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter
from sqlalchemy.orm import Session

from api import schemas
from api.deps import PrincipalDep, ServicesDep
from api.edge import TemplateNamePath
from api.openapi import problems
from api.services import Services
from engine.billing.pricing import rate_for
from engine.billing.usage import Estimate, estimate
from engine.catalog.catalog import Template
from engine.catalog.params import operation_id, params_json_schema
from engine.errors import NotFound

router = APIRouter(prefix="/v1", tags=["templates"])


def _estimates(s: Session, templates: Sequence[Template]) -> dict[tuple[str, int], Estimate]:
    """Each template's measured cost and run time, from the ledger, in one read."""
    return {(t.name, t.major): estimate(s, t.name, t.major) for t in templates}


def estimate_view(e: Estimate) -> schemas.Estimate:
    """p50/p95 cost and run time of the template's recent succeeded jobs, or no data yet."""
    return schemas.Estimate(
        sample_size=e.sample_size,
        note=f"measured over the last {e.sample_size} succeeded jobs"
        if e.sample_size
        else "no data yet",
        usd_p50=str(e.usd_p50) if e.usd_p50 is not None else None,
        usd_p95=str(e.usd_p95) if e.usd_p95 is not None else None,
        run_seconds_p50=float(e.run_seconds_p50) if e.run_seconds_p50 is not None else None,
        run_seconds_p95=float(e.run_seconds_p95) if e.run_seconds_p95 is not None else None,
    )


def template_info(services: Services, t: Template, e: Estimate) -> schemas.TemplateInfo:
    """A template as the API shows it, with its estimate `e` (see `_estimates`)."""
    gpu = services.catalog.gpu_classes[t.gpu_class]
    model = services.request_models[(t.name, t.major)]
    nxt = services.catalog.successor(t)
    return schemas.TemplateInfo(
        name=t.name,
        version=t.version,
        summary=t.summary,
        description=t.description,
        route=f"/v{t.major}/{t.name}",
        gpu_class=t.gpu_class,
        gpu=gpu.gpu,
        usd_per_second=str(rate_for(services.catalog, t.gpu_class).usd_per_second),
        estimate=estimate_view(e),
        params=schemas.ParamsSchema.model_validate(params_json_schema(model)),
        operation_id=operation_id(t),
        deprecated=t.deprecated is not None,
        deprecated_at=t.deprecated,
        sunset_at=t.sunset,
        successor=f"/v{nxt.major}/{nxt.name}" if nxt else None,
    )


@router.get(
    "/templates",
    response_model=schemas.TemplateList,
    name="list_templates",
    response_description="Every template, each major version once.",
)
async def list_templates(_: PrincipalDep, services: ServicesDep) -> schemas.TemplateList:
    """Every template this API serves, with measured cost and run-time estimates."""

    templates = services.catalog.templates
    measured = await services.db.read(_estimates, templates)
    return schemas.TemplateList(
        data=[template_info(services, t, measured[(t.name, t.major)]) for t in templates]
    )


@router.get(
    "/templates/{name}",
    response_model=schemas.TemplateInfo,
    name="get_template",
    response_description="The template's newest major version.",
    responses=problems({404: "No such template."}),
)
async def get_template(
    name: TemplateNamePath, _: PrincipalDep, services: ServicesDep
) -> schemas.TemplateInfo:
    """One template (its newest major version)."""
    t = services.catalog.get(name)
    if t is None:
        raise NotFound(f"No template {name}.")
    measured = await services.db.read(_estimates, [t])
    return template_info(services, t, measured[(t.name, t.major)])
