from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.job import Job
from ...models.problem import Problem
from ...types import UNSET, Response, Unset


def _get_kwargs(
    job_id: str,
    *,
    wait: int | Unset = 0,
) -> dict[str, Any]:

    params: dict[str, Any] = {}

    params["wait"] = wait

    params = {k: v for k, v in params.items() if v is not UNSET and v is not None}

    _kwargs: dict[str, Any] = {
        "method": "get",
        "url": "/v1/jobs/{job_id}".format(
            job_id=quote(str(job_id), safe=""),
        ),
        "params": params,
    }

    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> Job | Problem | None:
    if response.status_code == 200:
        response_200 = Job.from_dict(response.json())

        return response_200

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
) -> Response[Job | Problem]:
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
    wait: int | Unset = 0,
) -> Response[Job | Problem]:
    """Get Job

     Read a job: status, progress, timings and freshly signed output URLs; with `wait`, once
    it is done (a long poll, answered the moment it finishes).

    Args:
        job_id (str): The job id (`job_...`), from the submit answer.
        wait (int | Unset): Seconds to wait for the job to finish: the answer comes as soon as it
            is terminal, or with its current state after this many seconds (0: at once). Default: 0.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[Job | Problem]
    """

    kwargs = _get_kwargs(
        job_id=job_id,
        wait=wait,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    job_id: str,
    *,
    client: AuthenticatedClient,
    wait: int | Unset = 0,
) -> Job | Problem | None:
    """Get Job

     Read a job: status, progress, timings and freshly signed output URLs; with `wait`, once
    it is done (a long poll, answered the moment it finishes).

    Args:
        job_id (str): The job id (`job_...`), from the submit answer.
        wait (int | Unset): Seconds to wait for the job to finish: the answer comes as soon as it
            is terminal, or with its current state after this many seconds (0: at once). Default: 0.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Job | Problem
    """

    return sync_detailed(
        job_id=job_id,
        client=client,
        wait=wait,
    ).parsed


async def asyncio_detailed(
    job_id: str,
    *,
    client: AuthenticatedClient,
    wait: int | Unset = 0,
) -> Response[Job | Problem]:
    """Get Job

     Read a job: status, progress, timings and freshly signed output URLs; with `wait`, once
    it is done (a long poll, answered the moment it finishes).

    Args:
        job_id (str): The job id (`job_...`), from the submit answer.
        wait (int | Unset): Seconds to wait for the job to finish: the answer comes as soon as it
            is terminal, or with its current state after this many seconds (0: at once). Default: 0.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[Job | Problem]
    """

    kwargs = _get_kwargs(
        job_id=job_id,
        wait=wait,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    job_id: str,
    *,
    client: AuthenticatedClient,
    wait: int | Unset = 0,
) -> Job | Problem | None:
    """Get Job

     Read a job: status, progress, timings and freshly signed output URLs; with `wait`, once
    it is done (a long poll, answered the moment it finishes).

    Args:
        job_id (str): The job id (`job_...`), from the submit answer.
        wait (int | Unset): Seconds to wait for the job to finish: the answer comes as soon as it
            is terminal, or with its current state after this many seconds (0: at once). Default: 0.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Job | Problem
    """

    return (
        await asyncio_detailed(
            job_id=job_id,
            client=client,
            wait=wait,
        )
    ).parsed
