"""Routes with a fast path: the common request answered without FastAPI's request machinery.

FastAPI resolves dependencies and validates parameters for every request, which on the
hottest read (`GET /v1/jobs/{id}`) costs more than reading the job. A `FastPathRoute` keeps
the full route (its document entry, its validation, its errors) and puts a shortcut in front
of it: the endpoint's `fast_path(request)` answers a request it can answer exactly as the full
route would, or returns None to hand the request to the full handler. The shortcut must only
take requests whose every parameter it checks the way the declaration does; anything unusual
(a query string, a malformed path parameter) goes the full way, so each error still comes from
one place.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

FastPath = Callable[[Request], Awaitable[Response | None]]


def fast_path(shortcut: FastPath) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Attach `shortcut` to an endpoint of a router whose `route_class` is `FastPathRoute`."""

    def attach(endpoint: Callable[..., Any]) -> Callable[..., Any]:
        endpoint.fast_path = shortcut  # type: ignore[attr-defined]
        return endpoint

    return attach


class FastPathRoute(APIRoute):
    """An `APIRoute` whose endpoint may carry a `fast_path` (see the module's docstring)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        full = super().get_route_handler()
        shortcut: FastPath | None = getattr(self.endpoint, "fast_path", None)
        if shortcut is None:
            return full

        async def handler(request: Request) -> Response:
            response = await shortcut(request)
            return response if response is not None else await full(request)

        return handler
