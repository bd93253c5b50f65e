import datetime
from http import HTTPStatus
from typing import Any

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.problem import Problem
from ...models.usage import Usage
from ...models.usage_group_by import UsageGroupBy
from ...types import UNSET, Response, Unset


def _get_kwargs(
    *,
    start: datetime.datetime | Unset = UNSET,
    end: datetime.datetime | Unset = UNSET,
    group_by: UsageGroupBy | Unset = UNSET,
    tenant: str | Unset = UNSET,
) -> dict[str, Any]:

    params: dict[str, Any] = {}

    json_start: str | Unset = UNSET
    if not isinstance(start, Unset):
        json_start = start.isoformat()
    params["start"] = json_start

    json_end: str | Unset = UNSET
    if not isinstance(end, Unset):
        json_end = end.isoformat()
    params["end"] = json_end

    json_group_by: str | Unset = UNSET
    if not isinstance(group_by, Unset):
        json_group_by = group_by.value

    params["group_by"] = json_group_by

    params["tenant"] = tenant

    params = {k: v for k, v in params.items() if v is not UNSET and v is not None}

    _kwargs: dict[str, Any] = {
        "method": "get",
        "url": "/v1/admin/usage",
        "params": params,
    }

    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> Problem | Usage | None:
    if response.status_code == 200:
        response_200 = Usage.from_dict(response.json())

        return response_200

    if response.status_code == 400:
        response_400 = Problem.from_dict(response.json())

        return response_400

    if response.status_code == 401:
        response_401 = Problem.from_dict(response.json())

        return response_401

    if response.status_code == 403:
        response_403 = Problem.from_dict(response.json())

        return response_403

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
) -> Response[Problem | Usage]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    *,
    client: AuthenticatedClient,
    start: datetime.datetime | Unset = UNSET,
    end: datetime.datetime | Unset = UNSET,
    group_by: UsageGroupBy | Unset = UNSET,
    tenant: str | Unset = UNSET,
) -> Response[Problem | Usage]:
    """Get Admin Usage

     Usage across all tenants (admin scope), including what the platform absorbed.

    Args:
        start (datetime.datetime | Unset): Start (inclusive), an ISO date or date-time; UTC when
            no offset is given, from 1970-01-01 to before 3000-01-01. Default: the first day of this
            month.
        end (datetime.datetime | Unset): End (exclusive), an ISO date or date-time, from
            1970-01-01 to before 3000-01-01. Default: now.
        group_by (UsageGroupBy | Unset): How usage totals are grouped; `tenant` is for the admin
            report only.
        tenant (str | Unset): Only this tenant (by name).

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[Problem | Usage]
    """

    kwargs = _get_kwargs(
        start=start,
        end=end,
        group_by=group_by,
        tenant=tenant,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    *,
    client: AuthenticatedClient,
    start: datetime.datetime | Unset = UNSET,
    end: datetime.datetime | Unset = UNSET,
    group_by: UsageGroupBy | Unset = UNSET,
    tenant: str | Unset = UNSET,
) -> Problem | Usage | None:
    """Get Admin Usage

     Usage across all tenants (admin scope), including what the platform absorbed.

    Args:
        start (datetime.datetime | Unset): Start (inclusive), an ISO date or date-time; UTC when
            no offset is given, from 1970-01-01 to before 3000-01-01. Default: the first day of this
            month.
        end (datetime.datetime | Unset): End (exclusive), an ISO date or date-time, from
            1970-01-01 to before 3000-01-01. Default: now.
        group_by (UsageGroupBy | Unset): How usage totals are grouped; `tenant` is for the admin
            report only.
        tenant (str | Unset): Only this tenant (by name).

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Problem | Usage
    """

    return sync_detailed(
        client=client,
        start=start,
        end=end,
        group_by=group_by,
        tenant=tenant,
    ).parsed


async def asyncio_detailed(
    *,
    client: AuthenticatedClient,
    start: datetime.datetime | Unset = UNSET,
    end: datetime.datetime | Unset = UNSET,
    group_by: UsageGroupBy | Unset = UNSET,
    tenant: str | Unset = UNSET,
) -> Response[Problem | Usage]:
    """Get Admin Usage

     Usage across all tenants (admin scope), including what the platform absorbed.

    Args:
        start (datetime.datetime | Unset): Start (inclusive), an ISO date or date-time; UTC when
            no offset is given, from 1970-01-01 to before 3000-01-01. Default: the first day of this
            month.
        end (datetime.datetime | Unset): End (exclusive), an ISO date or date-time, from
            1970-01-01 to before 3000-01-01. Default: now.
        group_by (UsageGroupBy | Unset): How usage totals are grouped; `tenant` is for the admin
            report only.
        tenant (str | Unset): Only this tenant (by name).

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[Problem | Usage]
    """

    kwargs = _get_kwargs(
        start=start,
        end=end,
        group_by=group_by,
        tenant=tenant,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    *,
    client: AuthenticatedClient,
    start: datetime.datetime | Unset = UNSET,
    end: datetime.datetime | Unset = UNSET,
    group_by: UsageGroupBy | Unset = UNSET,
    tenant: str | Unset = UNSET,
) -> Problem | Usage | None:
    """Get Admin Usage

     Usage across all tenants (admin scope), including what the platform absorbed.

    Args:
        start (datetime.datetime | Unset): Start (inclusive), an ISO date or date-time; UTC when
            no offset is given, from 1970-01-01 to before 3000-01-01. Default: the first day of this
            month.
        end (datetime.datetime | Unset): End (exclusive), an ISO date or date-time, from
            1970-01-01 to before 3000-01-01. Default: now.
        group_by (UsageGroupBy | Unset): How usage totals are grouped; `tenant` is for the admin
            report only.
        tenant (str | Unset): Only this tenant (by name).

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Problem | Usage
    """

    return (
        await asyncio_detailed(
            client=client,
            start=start,
            end=end,
            group_by=group_by,
            tenant=tenant,
        )
    ).parsed
