from http import HTTPStatus
from typing import Any, cast
from urllib.parse import quote

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.problem import Problem
from ...types import UNSET, Response, Unset


def _get_kwargs(
    job_id: str,
    *,
    token: str | Unset = UNSET,
    last_event_id: str | Unset = UNSET,
) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    if not isinstance(last_event_id, Unset):
        headers["Last-Event-ID"] = last_event_id

    params: dict[str, Any] = {}

    params["token"] = token

    params = {k: v for k, v in params.items() if v is not UNSET and v is not None}

    _kwargs: dict[str, Any] = {
        "method": "get",
        "url": "/v1/jobs/{job_id}/events".format(
            job_id=quote(str(job_id), safe=""),
        ),
        "params": params,
    }

    _kwargs["headers"] = headers
    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> Any | Problem | str | None:
    if response.status_code == 200:
        response_200 = response.text
        return response_200

    if response.status_code == 204:
        response_204 = cast(Any, None)
        return response_204

    if response.status_code == 400:
        response_400 = Problem.from_dict(response.json())

        return response_400

    if response.status_code == 401:
        response_401 = Problem.from_dict(response.json())

        return response_401

    if response.status_code == 404:
        response_404 = Problem.from_dict(response.json())

        return response_404

    if response.status_code == 422:
        response_422 = Problem.from_dict(response.json())

        return response_422

    if response.status_code == 429:
        response_429 = Problem.from_dict(response.json())

        return response_429

    if response.status_code == 503:
        response_503 = Problem.from_dict(response.json())

        return response_503

    if client.raise_on_unexpected_status:
        raise errors.UnexpectedStatus(response.status_code, response.content)
    else:
        return None


def _build_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> Response[Any | Problem | str]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    job_id: str,
    *,
    client: AuthenticatedClient,
    token: str | Unset = UNSET,
    last_event_id: str | Unset = UNSET,
) -> Response[Any | Problem | str]:
    """Stream Job Events

     Follow a job: its state changes and progress as Server-Sent Events, ending when it is
    done.

    Args:
        job_id (str): The job id (`job_...`), from the submit answer.
        token (str | Unset): The signed token of the job's `events_url`, for clients that cannot
            send `Authorization` (a browser's `EventSource`); it is valid for this job only.
        last_event_id (str | Unset): The `id` of the last event received: the stream resumes after
            it (browsers' EventSource sends it when they reconnect).

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[Any | Problem | str]
    """

    kwargs = _get_kwargs(
        job_id=job_id,
        token=token,
        last_event_id=last_event_id,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    job_id: str,
    *,
    client: AuthenticatedClient,
    token: str | Unset = UNSET,
    last_event_id: str | Unset = UNSET,
) -> Any | Problem | str | None:
    """Stream Job Events

     Follow a job: its state changes and progress as Server-Sent Events, ending when it is
    done.

    Args:
        job_id (str): The job id (`job_...`), from the submit answer.
        token (str | Unset): The signed token of the job's `events_url`, for clients that cannot
            send `Authorization` (a browser's `EventSource`); it is valid for this job only.
        last_event_id (str | Unset): The `id` of the last event received: the stream resumes after
            it (browsers' EventSource sends it when they reconnect).

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Any | Problem | str
    """

    return sync_detailed(
        job_id=job_id,
        client=client,
        token=token,
        last_event_id=last_event_id,
    ).parsed


async def asyncio_detailed(
    job_id: str,
    *,
    client: AuthenticatedClient,
    token: str | Unset = UNSET,
    last_event_id: str | Unset = UNSET,
) -> Response[Any | Problem | str]:
    """Stream Job Events

     Follow a job: its state changes and progress as Server-Sent Events, ending when it is
    done.

    Args:
        job_id (str): The job id (`job_...`), from the submit answer.
        token (str | Unset): The signed token of the job's `events_url`, for clients that cannot
            send `Authorization` (a browser's `EventSource`); it is valid for this job only.
        last_event_id (str | Unset): The `id` of the last event received: the stream resumes after
            it (browsers' EventSource sends it when they reconnect).

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[Any | Problem | str]
    """

    kwargs = _get_kwargs(
        job_id=job_id,
        token=token,
        last_event_id=last_event_id,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    job_id: str,
    *,
    client: AuthenticatedClient,
    token: str | Unset = UNSET,
    last_event_id: str | Unset = UNSET,
) -> Any | Problem | str | None:
    """Stream Job Events

     Follow a job: its state changes and progress as Server-Sent Events, ending when it is
    done.

    Args:
        job_id (str): The job id (`job_...`), from the submit answer.
        token (str | Unset): The signed token of the job's `events_url`, for clients that cannot
            send `Authorization` (a browser's `EventSource`); it is valid for this job only.
        last_event_id (str | Unset): The `id` of the last event received: the stream resumes after
            it (browsers' EventSource sends it when they reconnect).

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Any | Problem | str
    """

    return (
        await asyncio_detailed(
            job_id=job_id,
            client=client,
            token=token,
            last_event_id=last_event_id,
        )
    ).parsed
