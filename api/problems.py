"""RFC 9457 problem responses for every error, and the middleware that guards the edge: a
request id on every request (and in every 500), trusted Host headers, body size and JSON
limits, and the rate-limit headers."""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.jsonbody import parse_json
from engine.errors import BadRequest, PayloadTooLarge, StencilError, problem, problem_of

log = logging.getLogger("stencil.api")
PROBLEM_JSON = "application/problem+json"
# A request id a client or proxy sends is kept when it is this tame; otherwise one is made.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
JSON_BODY = "stencil.json_body"  # where BodyLimits leaves the parsed JSON body in scope state


def problem_response(body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    """A JSONResponse with the problem media type."""
    return JSONResponse(body, status_code=body["status"], headers=headers, media_type=PROBLEM_JSON)


def request_id(scope: Scope) -> str:
    """The id RequestContext gave this request ("-" outside one)."""
    return str(scope.get("state", {}).get("request_id", "-"))


def _field_of(loc: tuple[Any, ...]) -> str:
    parts = [str(x) for x in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:] or parts
    return ".".join(parts) or "body"


def install(app: FastAPI) -> None:
    """Register the exception handlers (found by class) on an app.

    Anything else that escapes is answered by RequestContext, with the request id.
    """

    @app.exception_handler(StencilError)
    async def _stencil(request: Request, e: StencilError) -> JSONResponse:
        if e.status >= 500:
            rid = request_id(request.scope)
            log.error("%s on %s [request %s]: %s", e.type, request.url.path, rid, e.detail)
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
            instance=request.url.path,
            extensions={"errors": errors},
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
        if isinstance(e, Refused):
            return await _stencil(request, e.error)
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
        log.error(
            "database unavailable on %s [request %s]: %s",
            request.url.path,
            request_id(request.scope),
            type(e).__name__,
        )
        body = problem(
            "service_unavailable",
            "Service unavailable",
            503,
            "The job store is unavailable; retry shortly.",
            instance=request.url.path,
        )
        return problem_response(body, {"Retry-After": "5"})


def internal_error(scope: Scope) -> dict[str, Any]:
    """The body of an unexpected 500: nothing about the failure, only the id to quote."""
    rid = request_id(scope)
    return problem(
        "internal_error",
        "Internal error",
        500,
        f"The server failed; it has been logged as request {rid}.",
        instance=scope.get("path"),
        extensions={"request_id": rid},
    )


class RequestContext:
    """The outermost layer: gives each request an id, and answers whatever escaped every other
    handler with a 500 problem carrying that id, which is also in the log line.

    The error is answered here rather than re-raised to the server, so the connection stays
    usable (a keep-alive client's next request on it does not fail too).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get("x-request-id", "")
        rid = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        started = False

        async def watch(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            log.exception(
                "unhandled error on %s %s [request %s]", scope.get("method"), scope.get("path"), rid
            )
            if not started:
                await problem_response(internal_error(scope))(scope, receive, send)


def _host_of(header: str) -> str:
    """The host of a Host header, lowercased, without the port (`[::1]:8000` gives `::1`)."""
    h = header.strip().lower()
    if h.startswith("["):
        return h[1 : h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


class TrustedHosts:
    """Refuse requests whose Host header is not a trusted name (400), when output URLs are
    built from it: a forged Host would otherwise choose where the signed links point."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str]) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("host", "")
        if _host_of(header) in self.hosts:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = problem(
            "untrusted_host",
            "Untrusted host",
            400,
            "The Host header does not name this API; use one of "
            f"{', '.join(sorted(self.hosts))} (or set STENCIL_PUBLIC_BASE_URL).",
            instance=scope.get("path"),
            extensions={"field": "Host"},
        )
        await problem_response(body)(scope, receive, send)


def _is_json(ctype: str) -> bool:
    main = ctype.split(";")[0].strip().lower()
    return main in ("", "application/json") or (
        main.startswith("application/") and main.endswith("+json")
    )


class Refused(StarletteHTTPException):
    """A StencilError raised while the app reads the body, carried as an HTTPException: FastAPI
    turns any other exception out of a body read into a bare 400, but lets these through to the
    handler, which answers with the error's own problem."""

    def __init__(self, error: StencilError) -> None:
        super().__init__(error.status, error.detail)
        self.error = error


class BodyLimits:
    """The body cap (413, by Content-Length or while streaming) and, for JSON bodies, the
    parser limits (400, `api.jsonbody`), checked as the app reads the body: a JSON body is
    parsed once, when its last byte arrives, before any route code sees it; a request refused
    earlier (no key, over its rate limit) is never read, let alone parsed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            error = PayloadTooLarge(f"The request body is over {self.max_bytes} bytes.")
            await problem_response(problem_of(error, scope.get("path")))(scope, receive, send)
            return
        is_json = _is_json(headers.get("content-type", ""))
        chunks: list[bytes] = []
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] != "http.request":
                return msg
            chunk = msg.get("body", b"")
            seen += len(chunk)
            if seen > self.max_bytes:
                raise Refused(PayloadTooLarge(f"The request body is over {self.max_bytes} bytes."))
            if is_json:
                chunks.append(chunk)
                if not msg.get("more_body", False) and seen:
                    raw = b"".join(chunks)
                    chunks.clear()
                    try:
                        scope.setdefault("state", {})[JSON_BODY] = parse_json(raw)
                    except BadRequest as e:
                        raise Refused(e) from None
            return msg

        await self.app(scope, limited, send)


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
