"""Typed exceptions: one class per problem status, each carrying the RFC 9457 problem."""

from __future__ import annotations

import json
from typing import Any

import httpx

from stencil_client.models.field_error import FieldError
from stencil_client.models.job import Job
from stencil_client.models.problem import Problem
from stencil_client.types import Unset

PROBLEM_BASE = "https://stencil.dev/problems/"


class StencilError(Exception):
    """Base of every error this SDK raises."""


class APIError(StencilError):
    """The API answered with an error: `problem` is its RFC 9457 body."""

    def __init__(self, status_code: int, headers: httpx.Headers, problem: Problem | None) -> None:
        self.status_code = status_code
        self.headers = headers
        self.problem = problem
        detail = problem.detail if problem else f"HTTP {status_code}"
        super().__init__(f"{status_code} {self.kind or 'error'}: {detail}")

    @property
    def kind(self) -> str | None:
        """The problem's kind: the last part of its `type` (`validation_error`, ...)."""
        if self.problem is None:
            return None
        return str(self.problem.type_).removeprefix(PROBLEM_BASE)

    @property
    def detail(self) -> str:
        """What went wrong this time."""
        return self.problem.detail if self.problem else ""

    @property
    def errors(self) -> list[FieldError]:
        """For validation errors: each bad field and why (empty otherwise)."""
        if self.problem is None or isinstance(self.problem.errors, Unset):
            return []
        return list(self.problem.errors or [])

    @property
    def retry_after(self) -> float | None:
        """Seconds the server asked to wait before trying again, if it said."""
        value = self.headers.get("retry-after")
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None


class BadRequestError(APIError):
    """400: the request could not be read (a bad cursor, a body that is not JSON)."""


class AuthenticationError(APIError):
    """401: the API key is missing, unknown or revoked."""


class BudgetExceededError(APIError):
    """402: the tenant's monthly budget is spent."""


class PermissionDeniedError(APIError):
    """403: the key lacks a scope (`admin`)."""


class NotFoundError(APIError):
    """404: no such job, template, event or file for this tenant."""


class ConflictError(APIError):
    """409: the resource is not in a state that allows this (a finished job)."""


class PayloadTooLargeError(APIError):
    """413: the body is over the server's cap."""


class UnsupportedMediaTypeError(APIError):
    """415: the body is neither JSON nor multipart."""


class ValidationError(APIError):
    """422: invalid params or media; `errors` names each field."""


class RateLimitError(APIError):
    """429: over the key's rate limit or the tenant's active-job quota (after retries)."""


class InternalServerError(APIError):
    """500: the server failed."""


class ServiceUnavailableError(APIError):
    """503: the job store or the engine is unavailable (after retries)."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: BudgetExceededError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
    422: ValidationError,
    429: RateLimitError,
    500: InternalServerError,
    503: ServiceUnavailableError,
}


def error_for(status_code: int, headers: httpx.Headers, content: bytes) -> APIError:
    """The typed exception for an error answer."""
    problem: Problem | None = None
    try:
        body: Any = json.loads(content)
        if isinstance(body, dict) and "type" in body:
            problem = Problem.from_dict(body)
    except (ValueError, KeyError, TypeError):
        problem = None  # not a problem body (a proxy's error page, say)
    cls = _BY_STATUS.get(status_code, APIError)
    return cls(status_code, headers, problem)


def raise_for_response(response: httpx.Response) -> None:
    """Raise the typed exception when the response is an error; its body must be read."""
    if response.is_error:
        raise error_for(response.status_code, response.headers, response.content)


class JobError(StencilError):
    """A job ended without succeeding; `job` is its final state."""

    def __init__(self, job: Job, message: str) -> None:
        super().__init__(message)
        self.job = job


class JobFailedError(JobError):
    """The job failed; `problem` says why."""

    def __init__(self, job: Job) -> None:
        self.problem = job.error if isinstance(job.error, Problem) else None
        why = self.problem.detail if self.problem else "no reason recorded"
        super().__init__(job, f"job {job.id} failed: {why}")


class JobCancelledError(JobError):
    """The job was cancelled before it finished."""

    def __init__(self, job: Job) -> None:
        super().__init__(job, f"job {job.id} was cancelled")


class WaitTimeoutError(StencilError, TimeoutError):
    """The job did not finish within the wait's timeout (it goes on running)."""


class WebhookVerificationError(StencilError):
    """A webhook's signature, timestamp or body does not check out: do not trust it."""


class StencilDeprecationWarning(DeprecationWarning):
    """The route answered with `Deprecation` (and maybe `Sunset`): move to its successor."""
