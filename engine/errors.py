"""The error hierarchy. Each class carries its HTTP status and a stable problem `type`.

StencilError
├── BadRequest (400)            invalid_request
│   └── InvalidParams (422)     validation_error   (lists fields by public name)
│       └── InvalidMedia (422)  invalid_media
├── Unauthorized (401)          unauthorized
├── BudgetExceeded (402)        budget_exceeded    (says budget and spend; Retry-After)
├── Forbidden (403)             forbidden          (the key lacks a scope)
├── NotFound (404)              not_found
├── Conflict (409)              conflict
├── PayloadTooLarge (413)       payload_too_large
├── UnsupportedMediaType (415)  unsupported_media_type
├── QuotaExceeded (429)         quota_exceeded     (Retry-After)
├── RateLimited (429)           rate_limited       (Retry-After, RateLimit-*)
├── TooManyStreams (429)        too_many_streams   (the key's open event streams; Retry-After)
├── ServiceUnavailable (503)    service_unavailable
└── JobFailure                  the error recorded on a failed job (never raised to a client)
    ├── EngineUnavailable       comfyui_unavailable
    ├── ExecutionFailed         execution_failed
    ├── JobTimedOut             timeout
    └── WorkerLost              worker_lost
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PROBLEM_BASE = "https://stencil.dev/problems/"


class StencilError(Exception):
    """Base of every error Stencil turns into an RFC 9457 problem."""

    status: int = 500
    type: str = "internal_error"
    title: str = "Internal error"

    def __init__(
        self,
        detail: str,
        *,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra or {}
        self.headers = headers or {}


class BadRequest(StencilError):
    status, type, title = 400, "invalid_request", "Invalid request"


class InvalidParams(BadRequest):
    """Some fields are wrong; `errors` lists them as {field, message}."""

    status, type, title = 422, "validation_error", "Invalid parameters"

    def __init__(self, errors: list[dict[str, Any]], detail: str | None = None) -> None:
        fields = ", ".join(sorted({str(e["field"]) for e in errors}))
        super().__init__(detail or f"Invalid value for: {fields}", extra={"errors": errors})
        self.errors = errors


class InvalidMedia(InvalidParams):
    status, type, title = 422, "invalid_media", "Invalid media input"

    def __init__(self, field: str, message: str) -> None:
        super().__init__([{"field": field, "message": message}], detail=f"{field}: {message}")


class Unauthorized(StencilError):
    status, type, title = 401, "unauthorized", "Unauthorized"


class BudgetExceeded(StencilError):
    """The tenant's monthly budget is spent; `budget_usd` and `spend_usd` say by how much."""

    status, type, title = 402, "budget_exceeded", "Monthly budget exceeded"


class Forbidden(StencilError):
    status, type, title = 403, "forbidden", "Forbidden"


class NotFound(StencilError):
    status, type, title = 404, "not_found", "Not found"


class Conflict(StencilError):
    status, type, title = 409, "conflict", "Conflict"


class PayloadTooLarge(StencilError):
    status, type, title = 413, "payload_too_large", "Payload too large"


class UnsupportedMediaType(StencilError):
    status, type, title = 415, "unsupported_media_type", "Unsupported media type"


class QuotaExceeded(StencilError):
    status, type, title = 429, "quota_exceeded", "Quota exceeded"


class RateLimited(StencilError):
    status, type, title = 429, "rate_limited", "Rate limit exceeded"


class TooManyStreams(StencilError):
    status, type, title = 429, "too_many_streams", "Too many open streams"


class ServiceUnavailable(StencilError):
    status, type, title = 503, "service_unavailable", "Service unavailable"


class JobFailure(StencilError):
    """Why a job failed; stored on the job as a problem, not raised to a client."""

    status, type, title = 500, "job_failed", "Job failed"
    platform_fault = True  # not the caller's fault; matters for billing


class EngineUnavailable(JobFailure):
    type, title = "comfyui_unavailable", "The engine was unavailable"


class ExecutionFailed(JobFailure):
    type, title = "execution_failed", "The workflow failed while running"
    platform_fault = False


class JobTimedOut(JobFailure):
    type, title = "timeout", "The job ran out of time"
    platform_fault = False


class WorkerLost(JobFailure):
    type, title = "worker_lost", "The worker running the job disappeared"


# The members RFC 9457 defines; the builder sets them, and no extension member can replace one.
STANDARD_MEMBERS = frozenset({"type", "title", "status", "detail", "instance"})


def problem(
    err_type: str,
    title: str,
    status: int,
    detail: str,
    *,
    instance: str | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The one builder of RFC 9457 problem bodies.

    Extension members come as a mapping, never as keyword arguments, so an extension named like
    a standard member (`status`, `type`) cannot collide with the builder's own parameters; the
    standard members are written last and always win. Name extensions for what they are
    (`job_status`, not `status`).
    """
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + err_type,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance is not None:
        body["instance"] = instance
    for k, v in (extensions or {}).items():
        if k not in STANDARD_MEMBERS:
            body[str(k)] = v
    return body


def problem_of(e: StencilError, instance: str | None = None) -> dict[str, Any]:
    """The problem body for an exception."""
    return problem(e.type, e.title, e.status, e.detail, instance=instance, extensions=e.extra)
