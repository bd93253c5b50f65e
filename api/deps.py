"""Dependencies, declared once as Annotated aliases."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.services import Services
from engine.errors import Unauthorized
from engine.store import Principal, resolve_key

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer sk_...`")


def get_services(request: Request) -> Services:
    """The process's services."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_principal(
    services: ServicesDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller, from the bearer key; 401 when missing, unknown or revoked."""
    challenge = {"WWW-Authenticate": 'Bearer realm="stencil"'}
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise Unauthorized("Send an API key as `Authorization: Bearer <key>`.", headers=challenge)
    token = creds.credentials

    def lookup() -> Principal | None:
        with services.db.session() as s:
            return resolve_key(s, token)

    principal = await asyncio.to_thread(lookup)
    if principal is None:
        raise Unauthorized("The API key is not valid.", headers=challenge)
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


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
