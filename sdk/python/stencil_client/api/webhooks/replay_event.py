from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.account_event import AccountEvent
from ...models.problem import Problem
from ...types import UNSET, Response, Unset


def _get_kwargs(
    event_id: str,
    *,
    idempotency_key: str | Unset = UNSET,
) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    if not isinstance(idempotency_key, Unset):
        headers["Idempotency-Key"] = idempotency_key

    _kwargs: dict[str, Any] = {
        "method": "post",
        "url": "/v1/events/{event_id}/replay".format(
            event_id=quote(str(event_id), safe=""),
        ),
    }

    _kwargs["headers"] = headers
    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> AccountEvent | Problem | None:
    if response.status_code == 202:
        response_202 = AccountEvent.from_dict(response.json())

        return response_202

    if response.status_code == 400:
        response_400 = Problem.from_dict(response.json())

        return response_400

    if response.status_code == 401:
        response_401 = Problem.from_dict(response.json())

        return response_401

    if response.status_code == 404:
        response_404 = Problem.from_dict(response.json())

        return response_404

    if response.status_code == 409:
        response_409 = Problem.from_dict(response.json())

        return response_409

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
) -> Response[AccountEvent | Problem]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    event_id: str,
    *,
    client: AuthenticatedClient,
    idempotency_key: str | Unset = UNSET,
) -> Response[AccountEvent | Problem]:
    """Replay Event

     Deliver an account event again now, to the current endpoint (same `webhook-id`, fresh
    retry window); an event recorded while there was no endpoint gets its first delivery.

    Args:
        event_id (str): The event id (`evt_...`), from `GET /v1/events`.
        idempotency_key (str | Unset): Makes the POST safe to retry: the same key and body within
            24 hours returns the original result instead of doing the work again; the same key with
            another body is a 422.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[AccountEvent | Problem]
    """

    kwargs = _get_kwargs(
        event_id=event_id,
        idempotency_key=idempotency_key,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    event_id: str,
    *,
    client: AuthenticatedClient,
    idempotency_key: str | Unset = UNSET,
) -> AccountEvent | Problem | None:
    """Replay Event

     Deliver an account event again now, to the current endpoint (same `webhook-id`, fresh
    retry window); an event recorded while there was no endpoint gets its first delivery.

    Args:
        event_id (str): The event id (`evt_...`), from `GET /v1/events`.
        idempotency_key (str | Unset): Makes the POST safe to retry: the same key and body within
            24 hours returns the original result instead of doing the work again; the same key with
            another body is a 422.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        AccountEvent | Problem
    """

    return sync_detailed(
        event_id=event_id,
        client=client,
        idempotency_key=idempotency_key,
    ).parsed


async def asyncio_detailed(
    event_id: str,
    *,
    client: AuthenticatedClient,
    idempotency_key: str | Unset = UNSET,
) -> Response[AccountEvent | Problem]:
    """Replay Event

     Deliver an account event again now, to the current endpoint (same `webhook-id`, fresh
    retry window); an event recorded while there was no endpoint gets its first delivery.

    Args:
        event_id (str): The event id (`evt_...`), from `GET /v1/events`.
        idempotency_key (str | Unset): Makes the POST safe to retry: the same key and body within
            24 hours returns the original result instead of doing the work again; the same key with
            another body is a 422.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[AccountEvent | Problem]
    """

    kwargs = _get_kwargs(
        event_id=event_id,
        idempotency_key=idempotency_key,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    event_id: str,
    *,
    client: AuthenticatedClient,
    idempotency_key: str | Unset = UNSET,
) -> AccountEvent | Problem | None:
    """Replay Event

     Deliver an account event again now, to the current endpoint (same `webhook-id`, fresh
    retry window); an event recorded while there was no endpoint gets its first delivery.

    Args:
        event_id (str): The event id (`evt_...`), from `GET /v1/events`.
        idempotency_key (str | Unset): Makes the POST safe to retry: the same key and body within
            24 hours returns the original result instead of doing the work again; the same key with
            another body is a 422.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        AccountEvent | Problem
    """

    return (
        await asyncio_detailed(
            event_id=event_id,
            client=client,
            idempotency_key=idempotency_key,
        )
    ).parsed
