"""The FastAPI app: routes generated from the catalog, problems for every error."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.routing import APIRoute

from api import problems
from api.deps import reject_unknown_query
from api.logs import install_redaction
from api.openapi import API_VERSION, DESCRIPTION, build_document
from api.routes import jobs, stream, system, templates, usage, webhooks
from api.services import Services
from api.settings import Settings
from engine.runners.base import Runner


def operation_id(route: APIRoute) -> str:
    """Stable, readable operationIds: the route's name (`run_txt2img_v1`, `get_job`)."""
    return route.name


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
        await services.start_events()
        await services.start_dispatcher()
        # What was built to start (the catalog, the routes, the libraries' own tables: about
        # 140,000 objects) lives as long as the process: the collector leaves it alone from
        # now on, so a full collection scans only what serving made. Each one otherwise
        # stopped the event loop for 40-90 ms, the p99 of every route (`bench/RESULTS.md`).
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()  # an app stopped in a process that goes on (tests) is collectable
            await services.stop()

    app = FastAPI(
        title="Stencil",
        version=API_VERSION,
        description=DESCRIPTION,
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
    app.webhooks.include_router(webhooks.receiver)

    def openapi() -> dict[str, Any]:
        if not app.openapi_schema:
            app.openapi_schema = build_document(app, services.catalog, services.request_models)
        return app.openapi_schema

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
