"""The FastAPI app: routes generated from the catalog, problems for every error."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from api import problems
from api.deps import reject_unknown_query
from api.logs import install_redaction
from api.routes import jobs, stream, system, templates, usage, webhooks
from api.services import Services
from api.settings import Settings
from engine.params import model_name
from engine.runners.base import Runner

API_VERSION = "1.0.0"


def operation_id(route: APIRoute) -> str:
    """Stable, readable operationIds: the route's name (`run_txt2img_v1`, `get_job`)."""
    return route.name


_PROBLEM = {"$ref": "#/components/schemas/Problem"}


def document_problems(schema: dict[str, Any]) -> None:
    """Every error answer, documented as what it is: an RFC 9457 problem.

    FastAPI documents error models as `application/json` and knows nothing of the 401, 429 and
    503 that dependencies and handlers can answer; SDKs and schemathesis need all of them.
    """
    for path, item in schema["paths"].items():
        for op in item.values():
            responses = op.setdefault("responses", {})
            defaults: dict[str, str] = {}
            if path != "/health":
                defaults["503"] = "The job store is unavailable; retry after `Retry-After`."
            if op.get("security"):
                defaults["401"] = "Missing or invalid API key."
                defaults["429"] = "Over the API key's rate limit; see `Retry-After`."
            if op.get("parameters") or op.get("requestBody"):
                defaults["422"] = "Invalid parameters; `errors` names each field."
            # Host: refused when output URLs would be built from it (see TrustedHosts).
            defaults["400"] = (
                "The body is not acceptable JSON (syntax, nesting depth, number size), or the "
                "Host header is not a trusted name."
                if op.get("requestBody")
                else "The Host header is not a trusted name."
            )
            for code, desc in defaults.items():
                responses.setdefault(code, {"description": desc})
            for code, resp in responses.items():
                if int(code) >= 400:
                    resp["content"] = {"application/problem+json": {"schema": _PROBLEM}}
    comps = schema.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        comps.pop(unused, None)


def create_app(
    settings: Settings | None = None,
    *,
    runner: Runner | None = None,
    start_engine: bool = True,
) -> FastAPI:
    """Build the app; a broken catalog raises here, before anything serves."""
    settings = settings or Settings()
    settings.require_api_safe()
    install_redaction()  # before anything logs: keys and signatures never reach a log line
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    # httpx logs every request at INFO, which would log each ComfyUI health check.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    services = Services.build(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if start_engine:
            await services.start(runner)
        else:
            import asyncio

            await asyncio.to_thread(services.db.migrate)
        await services.start_dispatcher()
        try:
            yield
        finally:
            await services.stop()

    app = FastAPI(
        title="Stencil",
        version=API_VERSION,
        description=(
            "Typed, versioned endpoints for vetted ComfyUI workflows. Submit with "
            "`POST /v{major}/{template}`, then poll `GET /v1/jobs/{id}`. Errors are RFC 9457 "
            "problems."
        ),
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
        dependencies=[Depends(reject_unknown_query)],
    )
    app.state.services = services
    problems.install(app)
    # Added innermost first: RequestContext sees every request and every escaped error.
    app.add_middleware(problems.BodyLimits, max_bytes=settings.max_body_bytes)
    app.add_middleware(problems.RateLimitHeaders)
    trusted = settings.trusted_host_names
    if trusted is not None:
        app.add_middleware(problems.TrustedHosts, hosts=trusted)
    app.add_middleware(problems.RequestContext)
    app.include_router(system.router)
    app.include_router(templates.router)
    jobs.add_template_routes(app, services)
    app.include_router(jobs.router)
    app.include_router(stream.router)
    app.include_router(usage.router)
    app.include_router(webhooks.router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        comps = schema.setdefault("components", {}).setdefault("schemas", {})
        for t in services.catalog.templates:
            model = services.request_models[(t.name, t.major)]
            body = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, sub in body.pop("$defs", {}).items():
                comps[name] = sub
            comps[model_name(t)] = body
        schema["components"]["securitySchemes"] = {
            "HTTPBearer": {"type": "http", "scheme": "bearer", "description": "An API key."}
        }
        document_problems(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    _build_routes(app)
    return app


def _build_routes(app: FastAPI) -> None:
    """Analyse every included route now, in the thread that builds the app.

    FastAPI analyses an included router's routes lazily, on the first request. The routers are
    module-level, so their parameter declarations are shared by every app in the process, and
    two apps serving their first requests at once (several API instances in one process)
    analyse the same declarations concurrently, which pydantic reports as a misplaced alias.
    A match attempt on a path no route has builds them all, once, here.
    """
    scope = {"type": "http", "path": "/.stencil-build-routes", "method": "GET", "root_path": ""}
    for route in app.router.routes:
        route.matches(scope)
