"""Liveness, readiness, and local file downloads."""

from __future__ import annotations

import asyncio
import hmac
import mimetypes
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api import schemas
from api.deps import ServicesDep
from api.fastpath import FastPathRoute, fast_path
from api.openapi import header, problems
from api.services import Services
from engine.errors import NotFound, ServiceUnavailable, Unauthorized
from engine.intake.storage import LocalStorage, StorageError

router = APIRouter(tags=["system"], route_class=FastPathRoute)
_metrics_bearer = HTTPBearer(auto_error=False, description="The metrics token, when one is set.")


PUBLIC: dict[str, Any] = {"security": []}  # no API key: says so in the document, so SDKs send none


@router.get(
    "/health",
    response_model=schemas.Health,
    name="health",
    response_description="The process answers.",
    openapi_extra=PUBLIC,
)
async def health() -> schemas.Health:
    """Liveness: the process answers. No auth."""
    return schemas.Health(status="ok")


@router.get(
    "/ready",
    response_model=schemas.Ready,
    name="ready",
    response_description="The database and the engine answer.",
    responses=problems({503: "The database or the engine does not answer; see `Retry-After`."}),
    openapi_extra=PUBLIC,
)
async def ready(services: ServicesDep) -> schemas.Ready:
    """Readiness: the database and the engine answer."""
    try:
        await asyncio.to_thread(services.db.ping)
    except Exception:
        raise ServiceUnavailable("The database does not answer.") from None
    if services.runner is None:
        raise ServiceUnavailable("The runner has not started.")
    try:
        engine = await services.runner.ready()
    except Exception:
        raise ServiceUnavailable("The engine does not answer.") from None
    return schemas.Ready(status="ready", database=services.db.engine.dialect.name, engine=engine)


# The query string of the URLs `LocalStorage.url` signs, the one the fast path takes.
_SIGNED = re.compile(rb"expires=(0|[1-9][0-9]{0,12})&signature=([0-9a-f]{64})")


async def _signed_download(request: Request) -> Response | None:
    """A download by the URL as it was signed (`expires`, then a hex `signature`, within the
    declaration's bounds), answered without the dependency solver (the route's fast path);
    None sends any other request the full way."""
    m = _SIGNED.fullmatch(request.scope.get("query_string") or b"")
    if m is None or int(m[1]) > 2**40:
        return None
    services: Services = request.app.state.services
    return await _download(services, request.path_params["key"], int(m[1]), m[2].decode())


@router.get(
    "/v1/files/{key:path}",
    name="download_file",
    response_class=Response,
    response_description="The file's bytes, typed by its extension.",
    responses={
        200: {
            "content": {
                ctype: {"schema": {"type": "string", "format": "binary"}}
                for ctype in ("application/octet-stream", "image/png", "image/jpeg", "image/webp")
            },
            "headers": {"Cache-Control": header("Cache-Control", required=True)},
        },
        **problems({404: "Unknown, expired or badly signed URL, or the file is gone."}),
    },
    openapi_extra=PUBLIC,
)
@fast_path(_signed_download)
async def download_file(
    key: str,
    services: ServicesDep,
    expires: Annotated[
        int, Query(ge=0, le=2**40, description="Expiry, unix seconds (from the signed URL).")
    ],
    signature: Annotated[
        str, Query(max_length=128, description="HMAC signature (from the signed URL).")
    ],
) -> Response:
    """A local-storage file behind an HMAC-signed, expiring URL (no API key needed).

    Output URLs on a job already carry `expires` and `signature`: GET the URL as it is (the
    SDKs' `download`). With S3 storage, output URLs point at the bucket instead.
    """
    return await _download(services, key, expires, signature)


async def _download(services: Services, key: str, expires: int, signature: str) -> Response:
    storage = services.storage
    if not isinstance(storage, LocalStorage) or not storage.verify(key, expires, signature):
        raise NotFound("This link is unknown, expired or badly signed; read the job again.")
    try:
        data = await asyncio.to_thread(storage.get, key)
    except StorageError:
        raise NotFound("This file no longer exists.") from None
    ctype = mimetypes.guess_type(key)[0] or "application/octet-stream"
    return Response(data, media_type=ctype, headers={"Cache-Control": "private, max-age=300"})


@router.get(
    "/metrics",
    name="metrics",
    response_class=Response,
    # For Prometheus, not for SDKs; its bearer token is optional, which OpenAPI cannot say.
    include_in_schema=False,
    responses={
        200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition."},
        401: {"model": schemas.Problem, "description": "A metrics token is set and not sent."},
    },
)
async def metrics(
    services: ServicesDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_metrics_bearer)],
) -> Response:
    """Prometheus metrics: jobs, GPU seconds and USD by template (from the database), timings."""
    token = services.settings.metrics_token
    if token and (creds is None or not hmac.compare_digest(creds.credentials, token)):
        raise Unauthorized(
            "Send the metrics token as `Authorization: Bearer <token>`.",
            headers={"WWW-Authenticate": 'Bearer realm="stencil-metrics"'},
        )
    body = await asyncio.to_thread(generate_latest, services.metrics)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
