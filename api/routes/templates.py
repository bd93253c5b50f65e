"""Template routes: what can be called, with params as JSON Schema."""

from __future__ import annotations

from fastapi import APIRouter

from api import schemas
from api.deps import PrincipalDep, ServicesDep
from api.services import Services
from engine.catalog import Template
from engine.errors import NotFound

router = APIRouter(prefix="/v1", tags=["templates"])


def template_info(services: Services, t: Template) -> schemas.TemplateInfo:
    """A template as the API shows it."""
    gpu = services.catalog.gpu_classes[t.gpu_class]
    model = services.request_models[(t.name, t.major)]
    return schemas.TemplateInfo(
        name=t.name,
        version=t.version,
        summary=t.summary,
        description=t.description,
        route=f"/v{t.major}/{t.name}",
        gpu_class=t.gpu_class,
        gpu=gpu.gpu,
        usd_per_second=str(gpu.usd_per_second),
        params=model.model_json_schema(),
    )


@router.get("/templates", response_model=schemas.TemplateList, name="list_templates")
async def list_templates(_: PrincipalDep, services: ServicesDep) -> schemas.TemplateList:
    """Every template this API serves."""
    return schemas.TemplateList(
        data=[template_info(services, t) for t in services.catalog.templates]
    )


@router.get(
    "/templates/{name}",
    response_model=schemas.TemplateInfo,
    name="get_template",
    responses={404: {"model": schemas.Problem, "description": "No such template."}},
)
async def get_template(name: str, _: PrincipalDep, services: ServicesDep) -> schemas.TemplateInfo:
    """One template (its newest major version)."""
    t = services.catalog.get(name)
    if t is None:
        raise NotFound(f"No template {name}.")
    return template_info(services, t)
