"""`Stencil` and `AsyncStencil`: the generated client with retries and typed errors, plus the
calls people make most (run and wait, upload, follow events, page through jobs, download).

Every generated operation stays one import away and shares the retrying HTTP client:
`run_txt2img_v1.sync(client=stencil.client, body=...)`.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator, Mapping
from enum import Enum
from typing import Any, Protocol, TypeVar, runtime_checkable
from urllib.parse import urljoin

import httpx

from stencil_client import AuthenticatedClient
from stencil_client.api.jobs import cancel_job, get_job, list_jobs
from stencil_client.api.templates import get_template
from stencil_client.api.webhooks import list_events
from stencil_client.models.account_event import AccountEvent
from stencil_client.models.account_event_list import AccountEventList
from stencil_client.models.account_event_type import AccountEventType
from stencil_client.models.job import Job
from stencil_client.models.job_event import JobEvent
from stencil_client.models.job_event_type import JobEventType
from stencil_client.models.job_list import JobList
from stencil_client.models.job_status import JobStatus
from stencil_client.models.output import Output
from stencil_client.models.problem import Problem
from stencil_client.models.template_info import TemplateInfo
from stencil_client.types import UNSET, RequestFiles, Response, Unset
from stencil_sdk._errors import (
    JobCancelledError,
    JobFailedError,
    StencilDeprecationWarning,
    StencilError,
    WaitTimeoutError,
    error_for,
    raise_for_response,
)
from stencil_sdk._files import is_file_input, upload
from stencil_sdk._retry import AsyncRetryTransport, RetryPolicy, RetryTransport
from stencil_sdk._sse import Decoder

__all__ = ["AsyncStencil", "Body", "Stencil", "unwrap"]

VERSION = "1.0.0"
DEFAULT_BASE_URL = "http://127.0.0.1:8000"
TERMINAL_EVENTS = frozenset(
    {JobEventType.JOB_SUCCEEDED, JobEventType.JOB_FAILED, JobEventType.JOB_CANCELLED}
)
TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
MAX_RECONNECTS = 5

T = TypeVar("T")


@runtime_checkable
class MultipartModel(Protocol):
    """A generated multipart request model (`UpscaleV1Multipart`)."""

    def to_multipart(self) -> RequestFiles: ...


@runtime_checkable
class JsonModel(Protocol):
    """A generated JSON request model (`Txt2ImgV1Request`)."""

    def to_dict(self) -> dict[str, Any]: ...


Body = Mapping[str, Any] | MultipartModel | JsonModel
"""A template's request: a generated model, or a mapping whose file values (bytes, a path, an
open binary file, `upload(...)`) make it go as multipart."""


def unwrap(response: Response[T | Problem]) -> T:
    """The parsed body of a generated `*_detailed` call, or its problem raised as the typed
    exception (`NotFoundError`, `ValidationError`, ...)."""
    parsed = response.parsed
    if response.status_code >= 400 or parsed is None or isinstance(parsed, Problem):
        raise error_for(response.status_code, httpx.Headers(response.headers), response.content)
    return parsed


def _text(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _request_kwargs(body: Body) -> dict[str, Any]:
    if isinstance(body, MultipartModel):
        return {"files": body.to_multipart()}
    if isinstance(body, Mapping):
        fields = {k: v for k, v in body.items() if v is not None and not isinstance(v, Unset)}
        if not any(is_file_input(v) for v in fields.values()):
            return {"json": {k: v.value if isinstance(v, Enum) else v for k, v in fields.items()}}
        files: RequestFiles = []
        for key, value in fields.items():
            if is_file_input(value):
                files.append((key, upload(value).to_tuple()))
            else:
                files.append((key, (None, _text(value).encode(), "text/plain")))
        return {"files": files}
    return {"json": body.to_dict()}


def _raise_errors(response: httpx.Response) -> None:
    # Before the generated code parses a body: an error (after retries) is a typed exception,
    # even when a proxy's body is no problem at all.
    if response.is_error:
        response.read()
        raise_for_response(response)


async def _araise_errors(response: httpx.Response) -> None:
    if response.is_error:
        await response.aread()
        raise_for_response(response)


def _job_id(job: str | Job) -> str:
    return job if isinstance(job, str) else job.id


def _final(job: Job) -> Job:
    if job.status == JobStatus.FAILED:
        raise JobFailedError(job)
    if job.status == JobStatus.CANCELLED:
        raise JobCancelledError(job)
    return job


def _event(data: str) -> JobEvent:
    return JobEvent.from_dict(json.loads(data))


def _next_cursor(page: JobList | AccountEventList) -> str | None:
    cursor = page.next_cursor
    return cursor if isinstance(cursor, str) and cursor else None


class _Base:
    def __init__(self, base_url: str | None, api_key: str | None, timeout: float) -> None:
        self.base_url = (base_url or os.environ.get("STENCIL_BASE_URL") or DEFAULT_BASE_URL).rstrip(
            "/"
        )
        key = api_key or os.environ.get("STENCIL_API_KEY")
        if not key:
            raise StencilError("an API key is needed: pass api_key= or set STENCIL_API_KEY")
        self._key = key
        self._timeout = httpx.Timeout(timeout)
        self._routes: dict[str, str] = {}
        self._warned: set[str] = set()
        self._headers = {"User-Agent": f"stencil-sdk-python/{VERSION}"}

    def _client(self, transport: Any, hook: Any) -> AuthenticatedClient:
        return AuthenticatedClient(
            base_url=self.base_url,
            token=self._key,
            timeout=self._timeout,
            headers=self._headers,
            httpx_args={"transport": transport, "event_hooks": {"response": [hook]}},
        )

    def _after_submit(self, route: str, response: httpx.Response) -> Job:
        raise_for_response(response)
        if "deprecation" in response.headers and route not in self._warned:
            self._warned.add(route)
            sunset = response.headers.get("sunset")
            link = response.headers.get("link")
            warnings.warn(
                f"POST {route} is deprecated"
                + (f" and will stop being served on {sunset}" if sunset else "")
                + (f"; its successor: {link}" if link else ""),
                StencilDeprecationWarning,
                stacklevel=4,
            )
        return Job.from_dict(response.json())

    def _url(self, output: Output | str) -> str:
        url = output if isinstance(output, str) else output.url
        return urljoin(self.base_url + "/", url)

    @staticmethod
    def _stream_headers(last: int | None) -> dict[str, str]:
        headers = {"Accept": "text/event-stream"}
        if last is not None:
            headers["Last-Event-ID"] = str(last)
        return headers


class Stencil(_Base):
    """A Stencil API client.

    `Stencil(base_url, api_key)`, or from `STENCIL_BASE_URL` and `STENCIL_API_KEY`. Calls are
    retried on 429 and 5xx, honouring `Retry-After`; errors raise typed exceptions.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        max_retries: int = 3,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout)
        policy = RetryPolicy(max_retries=max_retries)
        self.client = self._client(RetryTransport(transport, policy), _raise_errors)
        """The generated client, for every operation: `get_job.sync(job_id, client=...)`;
        an error answer raises its typed exception."""
        self._files = httpx.Client(
            transport=RetryTransport(transport, policy),
            timeout=self._timeout,
            headers=self._headers,
        )

    @property
    def http(self) -> httpx.Client:
        """The retrying, authenticated `httpx.Client` under `client`."""
        return self.client.get_httpx_client()

    def close(self) -> None:
        """Close the connections."""
        self.http.close()
        self._files.close()

    def __enter__(self) -> Stencil:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- templates and jobs ------------------------------------------------------------------

    def template(self, name: str) -> TemplateInfo:
        """A template's newest major version: its route, params schema, price and estimate."""
        return unwrap(get_template.sync_detailed(name, client=self.client))

    def route(self, template: str) -> str:
        """`/v1/txt2img` for `/v1/txt2img`; for a bare name, its newest major version's route."""
        if template.startswith("/"):
            return template
        if template not in self._routes:
            self._routes[template] = self.template(template).route
        return self._routes[template]

    def submit(self, template: str, body: Body, *, idempotency_key: str | None = None) -> Job:
        """Submit a job: `submit("/v1/txt2img", Txt2ImgV1Request(prompt=...))`.

        Files in a mapping body (bytes, a path, an open file) send it as multipart. An
        `Idempotency-Key` is always sent (a fresh one unless given), so retries never start a
        second job.
        """
        route = self.route(template)
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        response = self.http.post(route, headers=headers, **_request_kwargs(body))
        return self._after_submit(route, response)

    def run(
        self,
        template: str,
        body: Body,
        *,
        timeout: float | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Submit and wait: the succeeded job, or `JobFailedError` / `JobCancelledError`."""
        job = self.submit(template, body, idempotency_key=idempotency_key)
        return _final(self.wait(job, timeout=timeout))

    def get_job(self, job: str | Job) -> Job:
        """A job as it is now (output URLs signed afresh)."""
        return unwrap(get_job.sync_detailed(_job_id(job), client=self.client))

    def cancel(self, job: str | Job) -> Job:
        """Cancel a job (a no-op on a cancelled one; `ConflictError` on a finished one)."""
        return unwrap(cancel_job.sync_detailed(_job_id(job), client=self.client))

    def wait(self, job: str | Job, *, timeout: float | None = None) -> Job:
        """Follow the job's events until it ends; its final state (whatever it is)."""
        last: Job | None = None
        for event in self.events(job, timeout=timeout):
            last = event.job
        return last if last is not None else self.get_job(job)

    def events(
        self, job: str | Job, *, last_event_id: int | None = None, timeout: float | None = None
    ) -> Iterator[JobEvent]:
        """The job's events as they happen, ending after its terminal state.

        Reconnects with `Last-Event-ID` if the stream breaks; pass `last_event_id` to resume
        after an event seen earlier. `timeout` bounds the whole wait (`WaitTimeoutError`).
        """
        job_id = _job_id(job)
        deadline = time.monotonic() + timeout if timeout is not None else None
        last, failures = last_event_id, 0
        while True:
            got = False
            try:
                with self.http.stream(
                    "GET", f"/v1/jobs/{job_id}/events", headers=self._stream_headers(last)
                ) as r:
                    if r.is_error:
                        r.read()
                        raise_for_response(r)
                    decoder = Decoder()
                    for line in r.iter_lines():
                        if deadline is not None and time.monotonic() > deadline:
                            raise WaitTimeoutError(f"job {job_id} did not finish in {timeout} s")
                        sse = decoder.feed(line)
                        if sse is None or not sse.data:
                            continue
                        event = _event(sse.data)
                        last, got, failures = event.id, True, 0
                        yield event
                        if event.type_ in TERMINAL_EVENTS:
                            return
            except httpx.TransportError:
                failures += 1
                if failures > MAX_RECONNECTS:
                    raise
                time.sleep(min(2.0**failures / 4, 5.0))
                continue
            if not got:  # an empty stream: nothing after `last`; done if the job is
                if self.get_job(job_id).status in TERMINAL_STATUSES:
                    return
                failures += 1
                if failures > MAX_RECONNECTS:
                    raise StencilError(f"the event stream of job {job_id} keeps ending early")

    def list_jobs(
        self,
        *,
        limit: int = 20,
        cursor: str | None = None,
        status: JobStatus | None = None,
        template: str | None = None,
    ) -> JobList:
        """One page of the caller's jobs, newest first."""
        return unwrap(
            list_jobs.sync_detailed(
                client=self.client,
                limit=limit,
                cursor=cursor if cursor is not None else UNSET,
                status=status if status is not None else UNSET,
                template=template if template is not None else UNSET,
            )
        )

    def jobs(
        self,
        *,
        status: JobStatus | None = None,
        template: str | None = None,
        page_size: int = 20,
    ) -> Iterator[Job]:
        """Every job of the caller, newest first, fetching pages as it goes."""
        cursor: str | None = None
        while True:
            page = self.list_jobs(limit=page_size, cursor=cursor, status=status, template=template)
            yield from page.data
            cursor = _next_cursor(page)
            if cursor is None:
                return

    def account_events(
        self, *, type: AccountEventType | None = None, page_size: int = 20
    ) -> Iterator[AccountEvent]:
        """Every account event of the tenant (`budget.threshold`), newest first."""
        cursor: str | None = None
        while True:
            page = unwrap(
                list_events.sync_detailed(
                    client=self.client,
                    limit=page_size,
                    cursor=cursor if cursor is not None else UNSET,
                    type_=type if type is not None else UNSET,
                )
            )
            yield from page.data
            cursor = _next_cursor(page)
            if cursor is None:
                return

    def download(self, output: Output | str) -> bytes:
        """An output's bytes, from its signed URL (no API key is sent with it)."""
        r = self._files.get(self._url(output))
        r.read()
        raise_for_response(r)
        return r.content


class AsyncStencil(_Base):
    """The asyncio twin of `Stencil`: the same calls, awaited; events as an async iterator."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        max_retries: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout)
        policy = RetryPolicy(max_retries=max_retries)
        self.client = self._client(AsyncRetryTransport(transport, policy), _araise_errors)
        """The generated client: `await get_job.asyncio(job_id, client=...)`; an error
        answer raises its typed exception."""
        self._files = httpx.AsyncClient(
            transport=AsyncRetryTransport(transport, policy),
            timeout=self._timeout,
            headers=self._headers,
        )

    @property
    def http(self) -> httpx.AsyncClient:
        """The retrying, authenticated `httpx.AsyncClient` under `client`."""
        return self.client.get_async_httpx_client()

    async def aclose(self) -> None:
        """Close the connections."""
        await self.http.aclose()
        await self._files.aclose()

    async def __aenter__(self) -> AsyncStencil:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def template(self, name: str) -> TemplateInfo:
        """A template's newest major version."""
        return unwrap(await get_template.asyncio_detailed(name, client=self.client))

    async def route(self, template: str) -> str:
        """The route of a template given by route or by name (its newest major version)."""
        if template.startswith("/"):
            return template
        if template not in self._routes:
            self._routes[template] = (await self.template(template)).route
        return self._routes[template]

    async def submit(self, template: str, body: Body, *, idempotency_key: str | None = None) -> Job:
        """Submit a job (see `Stencil.submit`)."""
        route = await self.route(template)
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        response = await self.http.post(route, headers=headers, **_request_kwargs(body))
        return self._after_submit(route, response)

    async def run(
        self,
        template: str,
        body: Body,
        *,
        timeout: float | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Submit and wait: the succeeded job, or `JobFailedError` / `JobCancelledError`."""
        job = await self.submit(template, body, idempotency_key=idempotency_key)
        return _final(await self.wait(job, timeout=timeout))

    async def get_job(self, job: str | Job) -> Job:
        """A job as it is now."""
        return unwrap(await get_job.asyncio_detailed(_job_id(job), client=self.client))

    async def cancel(self, job: str | Job) -> Job:
        """Cancel a job."""
        return unwrap(await cancel_job.asyncio_detailed(_job_id(job), client=self.client))

    async def wait(self, job: str | Job, *, timeout: float | None = None) -> Job:
        """Follow the job's events until it ends; its final state."""
        last: Job | None = None
        async for event in self.events(job, timeout=timeout):
            last = event.job
        return last if last is not None else await self.get_job(job)

    async def events(
        self, job: str | Job, *, last_event_id: int | None = None, timeout: float | None = None
    ) -> AsyncIterator[JobEvent]:
        """The job's events as they happen (`async for`), ending after its terminal state."""
        job_id = _job_id(job)
        deadline = time.monotonic() + timeout if timeout is not None else None
        last, failures = last_event_id, 0
        while True:
            got = False
            try:
                async with self.http.stream(
                    "GET", f"/v1/jobs/{job_id}/events", headers=self._stream_headers(last)
                ) as r:
                    if r.is_error:
                        await r.aread()
                        raise_for_response(r)
                    decoder = Decoder()
                    async for line in r.aiter_lines():
                        if deadline is not None and time.monotonic() > deadline:
                            raise WaitTimeoutError(f"job {job_id} did not finish in {timeout} s")
                        sse = decoder.feed(line)
                        if sse is None or not sse.data:
                            continue
                        event = _event(sse.data)
                        last, got, failures = event.id, True, 0
                        yield event
                        if event.type_ in TERMINAL_EVENTS:
                            return
            except httpx.TransportError:
                failures += 1
                if failures > MAX_RECONNECTS:
                    raise
                await asyncio.sleep(min(2.0**failures / 4, 5.0))
                continue
            if not got:
                if (await self.get_job(job_id)).status in TERMINAL_STATUSES:
                    return
                failures += 1
                if failures > MAX_RECONNECTS:
                    raise StencilError(f"the event stream of job {job_id} keeps ending early")

    async def list_jobs(
        self,
        *,
        limit: int = 20,
        cursor: str | None = None,
        status: JobStatus | None = None,
        template: str | None = None,
    ) -> JobList:
        """One page of the caller's jobs, newest first."""
        return unwrap(
            await list_jobs.asyncio_detailed(
                client=self.client,
                limit=limit,
                cursor=cursor if cursor is not None else UNSET,
                status=status if status is not None else UNSET,
                template=template if template is not None else UNSET,
            )
        )

    async def jobs(
        self,
        *,
        status: JobStatus | None = None,
        template: str | None = None,
        page_size: int = 20,
    ) -> AsyncIterator[Job]:
        """Every job of the caller, newest first (`async for`)."""
        cursor: str | None = None
        while True:
            page = await self.list_jobs(
                limit=page_size, cursor=cursor, status=status, template=template
            )
            for job in page.data:
                yield job
            cursor = _next_cursor(page)
            if cursor is None:
                return

    async def download(self, output: Output | str) -> bytes:
        """An output's bytes, from its signed URL (no API key is sent with it)."""
        r = await self._files.get(self._url(output))
        raise_for_response(r)
        return r.content
