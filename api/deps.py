"""Dependencies, declared once as Annotated aliases."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.services import Services
from engine.errors import Forbidden, Unauthorized
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


async def get_admin(principal: PrincipalDep) -> Principal:
    """The caller, who must hold the `admin` scope; 403 otherwise."""
    if "admin" not in principal.scopes:
        raise Forbidden("This key lacks the admin scope (`stencil keys create --admin`).")
    return principal


AdminDep = Annotated[Principal, Depends(get_admin)]
