"""Dependencies, declared once as Annotated aliases."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import SQLAlchemyError

from api.services import Services
from engine.errors import Forbidden, InvalidParams, RateLimited, Unauthorized
from engine.tenants.keys import Principal

log = logging.getLogger("stencil.api")
_BEARER_DESCRIPTION = "An API key: `Authorization: Bearer sk_...`"


async def get_services(request: Request) -> Services:
    """The process's services."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def authenticate(
    request: Request, services: Services, creds: HTTPAuthorizationCredentials | None
) -> Principal:
    """The caller, from the bearer key; 401 when missing, unknown or revoked; 429 when the key
    is over its rate limit."""
    challenge = {"WWW-Authenticate": 'Bearer realm="stencil"'}
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise Unauthorized("Send an API key as `Authorization: Bearer <key>`.", headers=challenge)
    principal = await services.keys.resolve(creds.credentials)
    if principal is None:
        raise Unauthorized("The API key is not valid.", headers=challenge)
    await rate_limit(request, services, principal)
    return principal


class ApiKey(HTTPBearer):
    """The bearer scheme, resolved to the caller in one dependency.

    The document still shows the plain `HTTPBearer` scheme; resolving the key here, rather than
    in a dependency on a dependency on the services, spares every authenticated request two
    turns of FastAPI's dependency solver (each costs more than the key's cache lookup).
    """

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        creds = await super().__call__(request)
        return await authenticate(request, request.app.state.services, creds)


_bearer = HTTPBearer(auto_error=False, description=_BEARER_DESCRIPTION)
_api_key = ApiKey(auto_error=False, scheme_name="HTTPBearer", description=_BEARER_DESCRIPTION)


async def authenticate_request(request: Request) -> Principal:
    """`PrincipalDep` outside the dependency system (a route's fast path)."""
    return await _api_key(request)


async def rate_limit(request: Request, services: Services, principal: Principal) -> None:
    """Count the request against its key's limit; the headers ride on every response."""
    write = request.method not in ("GET", "HEAD", "OPTIONS")
    s = services.settings
    limit = (
        (principal.rate_limit_write or s.rate_limit_write)
        if write
        else (principal.rate_limit_read or s.rate_limit_read)
    )
    kind = "write" if write else "read"
    try:
        verdict = await services.rate_limiter.check(principal.key_id, kind, limit)
    except SQLAlchemyError:
        raise  # the job store is down: a 503 like any other request
    except Exception as e:
        # Redis down: serve without the limit rather than refuse everyone; the active-job quota
        # (in the database) still bounds what a key can start.
        log.warning("rate limiter unavailable (%s); request allowed", type(e).__name__)
        return
    request.state.rate_limit_headers = verdict.headers()
    if not verdict.allowed:
        raise RateLimited(
            f"This API key is over its limit of {limit} for {kind} requests. "
            f"Retry in {verdict.reset_s} s.",
            extra={"limit": limit},
            headers=verdict.headers(),
        )


PrincipalDep = Annotated[Principal, Depends(_api_key)]


async def get_admin(principal: PrincipalDep) -> Principal:
    """The caller, who must hold the `admin` scope; 403 otherwise."""
    if "admin" not in principal.scopes:
        raise Forbidden("This key lacks the admin scope (`stencil keys create --admin`).")
    return principal


AdminDep = Annotated[Principal, Depends(get_admin)]


IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description=(
            "Makes the POST safe to retry: the same key and body within 24 hours returns the "
            "original result instead of doing the work again; the same key with another body "
            "is a 422."
        ),
    ),
]


_KNOWN_QUERY: dict[int, tuple[Any, set[str]]] = {}  # a route's query parameter names


async def reject_unknown_query(request: Request) -> None:
    """A query parameter the route does not take is a 422, not silently ignored (`?limt=5`)."""
    if not request.query_params:
        return
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    entry = _KNOWN_QUERY.get(id(dependant))
    if entry is not None and entry[0] is dependant:
        known = entry[1]
    else:
        known = set()
        todo = [dependant]
        while todo:
            d = todo.pop()
            known |= {p.alias for p in d.query_params}
            todo.extend(d.dependencies)
        # Holding the dependant keeps its id from being reused by another app's route.
        _KNOWN_QUERY[id(dependant)] = (dependant, known)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise InvalidParams(
            [{"field": k or "(empty name)", "message": "unknown query parameter"} for k in unknown]
        )
