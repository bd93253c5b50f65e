"""Retries at the transport, so every call (generated or not) gets them: 429 and 5xx answers
that say `Retry-After` are retried after that long, others with capped exponential backoff.

A POST is retried only when it carries an `Idempotency-Key` (the server then answers a retry
with the first result) or when the answer was 429 (the server did nothing).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import httpx

RETRY_STATUSES = frozenset({429, 502, 503, 504})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


@dataclass(frozen=True)
class RetryPolicy:
    """How many times to retry, and how long to wait at most."""

    max_retries: int = 3
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    max_retry_after_s: float = 120.0  # a longer `Retry-After` is raised, not slept through

    def delay(self, attempt: int, response: httpx.Response | None) -> float | None:
        """Seconds to wait before retry `attempt` (1-based); None: do not retry."""
        if attempt > self.max_retries:
            return None
        said = retry_after(response) if response is not None else None
        if said is not None:
            return said if said <= self.max_retry_after_s else None
        step: float = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        return step * (0.5 + random.random() / 2)  # jitter, not crypto


def retry_after(response: httpx.Response) -> float | None:
    """`Retry-After` in seconds (delta-seconds or an HTTP-date), if the response has one."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _may_retry(request: httpx.Request, response: httpx.Response | None) -> bool:
    replay_safe = request.method in SAFE_METHODS or "idempotency-key" in request.headers
    if response is None:  # no answer at all: only what is safe to send twice
        return replay_safe
    if response.status_code not in RETRY_STATUSES:
        return False
    return response.status_code == 429 or replay_safe


class RetryTransport(httpx.BaseTransport):
    """Wraps a transport with retries (see the module docstring)."""

    def __init__(
        self, wrapped: httpx.BaseTransport | None = None, policy: RetryPolicy | None = None
    ) -> None:
        self._wrapped = wrapped or httpx.HTTPTransport()
        self._policy = policy or RetryPolicy()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()  # a body that can be sent again
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._wrapped.handle_request(request)
            except httpx.TransportError:
                wait = self._policy.delay(attempt, None) if _may_retry(request, None) else None
                if wait is None:
                    raise
                time.sleep(wait)
                continue
            if _may_retry(request, response):
                wait = self._policy.delay(attempt, response)
                if wait is not None:
                    response.close()
                    time.sleep(wait)
                    continue
            return response

    def close(self) -> None:
        self._wrapped.close()


class AsyncRetryTransport(httpx.AsyncBaseTransport):
    """The asyncio twin of `RetryTransport`."""

    def __init__(
        self,
        wrapped: httpx.AsyncBaseTransport | None = None,
        policy: RetryPolicy | None = None,
    ) -> None:
        self._wrapped = wrapped or httpx.AsyncHTTPTransport()
        self._policy = policy or RetryPolicy()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._wrapped.handle_async_request(request)
            except httpx.TransportError:
                wait = self._policy.delay(attempt, None) if _may_retry(request, None) else None
                if wait is None:
                    raise
                await asyncio.sleep(wait)
                continue
            if _may_retry(request, response):
                wait = self._policy.delay(attempt, response)
                if wait is not None:
                    await response.aclose()
                    await asyncio.sleep(wait)
                    continue
            return response

    async def aclose(self) -> None:
        await self._wrapped.aclose()
