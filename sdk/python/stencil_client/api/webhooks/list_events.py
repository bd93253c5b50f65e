from http import HTTPStatus
from typing import Any

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.account_event_list import AccountEventList
from ...models.account_event_type import AccountEventType
from ...models.problem import Problem
from ...types import UNSET, Response, Unset


def _get_kwargs(
    *,
    limit: int | Unset = 20,
    cursor: str | Unset = UNSET,
    type_: AccountEventType | Unset = UNSET,
) -> dict[str, Any]:

    params: dict[str, Any] = {}

    params["limit"] = limit

    params["cursor"] = cursor

    json_type_: str | Unset = UNSET
    if not isinstance(type_, Unset):
        json_type_ = type_.value

    params["type"] = json_type_

    params = {k: v for k, v in params.items() if v is not UNSET and v is not None}

    _kwargs: dict[str, Any] = {
        "method": "get",
        "url": "/v1/events",
        "params": params,
    }

    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> AccountEventList | Problem | None:
    if response.status_code == 200:
        response_200 = AccountEventList.from_dict(response.json())

        return response_200

    if response.status_code == 400:
        response_400 = Problem.from_dict(response.json())

        return response_400

    if response.status_code == 401:
        response_401 = Problem.from_dict(response.json())

        return response_401

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
) -> Response[AccountEventList | Problem]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    *,
    client: AuthenticatedClient,
    limit: int | Unset = 20,
    cursor: str | Unset = UNSET,
    type_: AccountEventType | Unset = UNSET,
) -> Response[AccountEventList | Problem]:
    """List Events

     The tenant's account events (`budget.threshold`), newest first, each with its webhook
    delivery status and attempts.

    Args:
        limit (int | Unset): Events per page. Default: 20.
        cursor (str | Unset): The previous page's `next_cursor`.
        type_ (AccountEventType | Unset): Events of a tenant's account (not of a job).

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[AccountEventList | Problem]
    """

    kwargs = _get_kwargs(
        limit=limit,
        cursor=cursor,
        type_=type_,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    *,
    client: AuthenticatedClient,
    limit: int | Unset = 20,
    cursor: str | Unset = UNSET,
    type_: AccountEventType | Unset = UNSET,
) -> AccountEventList | Problem | None:
    """List Events

     The tenant's account events (`budget.threshold`), newest first, each with its webhook
    delivery status and attempts.

    Args:
        limit (int | Unset): Events per page. Default: 20.
        cursor (str | Unset): The previous page's `next_cursor`.
        type_ (AccountEventType | Unset): Events of a tenant's account (not of a job).

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        AccountEventList | Problem
    """

    return sync_detailed(
        client=client,
        limit=limit,
        cursor=cursor,
        type_=type_,
    ).parsed


async def asyncio_detailed(
    *,
    client: AuthenticatedClient,
    limit: int | Unset = 20,
    cursor: str | Unset = UNSET,
    type_: AccountEventType | Unset = UNSET,
) -> Response[AccountEventList | Problem]:
    """List Events

     The tenant's account events (`budget.threshold`), newest first, each with its webhook
    delivery status and attempts.

    Args:
        limit (int | Unset): Events per page. Default: 20.
        cursor (str | Unset): The previous page's `next_cursor`.
        type_ (AccountEventType | Unset): Events of a tenant's account (not of a job).

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[AccountEventList | Problem]
    """

    kwargs = _get_kwargs(
        limit=limit,
        cursor=cursor,
        type_=type_,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    *,
    client: AuthenticatedClient,
    limit: int | Unset = 20,
    cursor: str | Unset = UNSET,
    type_: AccountEventType | Unset = UNSET,
) -> AccountEventList | Problem | None:
    """List Events

     The tenant's account events (`budget.threshold`), newest first, each with its webhook
    delivery status and attempts.

    Args:
        limit (int | Unset): Events per page. Default: 20.
        cursor (str | Unset): The previous page's `next_cursor`.
        type_ (AccountEventType | Unset): Events of a tenant's account (not of a job).

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        AccountEventList | Problem
    """

    return (
        await asyncio_detailed(
            client=client,
            limit=limit,
            cursor=cursor,
            type_=type_,
        )
    ).parsed
