"""RFC 9457 problem responses for every error, and the request body cap."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.errors import PayloadTooLarge, StencilError, problem, problem_of

log = logging.getLogger("stencil.api")
PROBLEM_JSON = "application/problem+json"


def problem_response(body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    """A JSONResponse with the problem media type."""
    return JSONResponse(body, status_code=body["status"], headers=headers, media_type=PROBLEM_JSON)


def _field_of(loc: tuple[Any, ...]) -> str:
    parts = [str(x) for x in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:] or parts
    return ".".join(parts) or "body"


def install(app: FastAPI) -> None:
    """Register the exception handlers (found by class) on an app."""

    @app.exception_handler(StencilError)
    async def _stencil(request: Request, e: StencilError) -> JSONResponse:
        if e.status >= 500:
            log.error("%s on %s: %s", e.type, request.url.path, e.detail)
        headers = dict(e.headers)
        if e.status == 503:
            headers.setdefault("Retry-After", "5")  # a 503 always says when to come back
        return problem_response(problem_of(e, request.url.path), headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, e: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": _field_of(tuple(err["loc"])), "message": err["msg"], "type": err["type"]}
            for err in e.errors()
        ]
        fields = ", ".join(sorted({x["field"] for x in errors}))
        body = problem(
            "validation_error",
            "Invalid parameters",
            422,
            f"Invalid value for: {fields}",
            errors=errors,
            instance=request.url.path,
        )
        return problem_response(body)

    def allowed_methods(path: str) -> list[str]:
        """Every method some route serves on this path (Starlette's 405 names only one route's)."""
        from starlette.routing import Match, Route

        methods: set[str] = set()
        scope = {"type": "http", "path": path, "method": "GET"}
        for route in app.routes:
            if isinstance(route, Route) and route.matches(scope)[0] != Match.NONE:
                methods |= set(route.methods or ())
        return sorted(methods)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException) -> JSONResponse:
        kinds = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}
        body = problem(
            kinds.get(e.status_code, "http_error"),
            str(e.detail) if e.status_code < 500 else "Internal error",
            e.status_code,
            str(e.detail) if e.status_code < 500 else "The server failed.",
            instance=request.url.path,
        )
        headers = dict(e.headers or {})
        if e.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request.url.path))
        return problem_response(body, headers)

    @app.exception_handler(OperationalError)
    @app.exception_handler(PoolTimeout)
    async def _db_down(request: Request, e: Exception) -> JSONResponse:
        log.error("database unavailable on %s: %s", request.url.path, type(e).__name__)
        body = problem(
            "service_unavailable",
            "Service unavailable",
            503,
            "The job store is unavailable; retry shortly.",
            instance=request.url.path,
        )
        return problem_response(body, {"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, e: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        body = problem(
            "internal_error",
            "Internal error",
            500,
            "The server failed; it has been logged.",
            instance=request.url.path,
        )
        return problem_response(body)


class BodyLimit:
    """Refuse bodies over the cap with 413, by Content-Length or while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    await self._refuse(scope, receive, send)
                    return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    # Raised inside the route's body read, so the problem handler answers 413.
                    raise PayloadTooLarge(f"The request body is over {self.max_bytes} bytes.")
            return msg

        await self.app(scope, limited, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = problem(
            "payload_too_large",
            "Payload too large",
            413,
            f"The request body is over {self.max_bytes} bytes.",
            instance=scope.get("path"),
        )
        await problem_response(body)(scope, receive, send)


class RateLimitHeaders:
    """Adds the RateLimit-* headers a request's rate-limit check left, to whatever answers it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})

        async def with_headers(msg: Message) -> None:
            extra = state.get("rate_limit_headers")
            if msg["type"] == "http.response.start" and extra:
                have = {k.lower() for k, _ in msg.get("headers", [])}
                msg["headers"] = list(msg.get("headers", [])) + [
                    (k.lower().encode(), v.encode())
                    for k, v in extra.items()
                    if k.lower().encode() not in have
                ]
            await send(msg)

        await self.app(scope, receive, with_headers)
