from http import HTTPStatus
from io import BytesIO
from typing import Any
from urllib.parse import quote

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.problem import Problem
from ...types import UNSET, File, Response


def _get_kwargs(
    key: str,
    *,
    expires: int,
    signature: str,
) -> dict[str, Any]:

    params: dict[str, Any] = {}

    params["expires"] = expires

    params["signature"] = signature

    params = {k: v for k, v in params.items() if v is not UNSET and v is not None}

    _kwargs: dict[str, Any] = {
        "method": "get",
        "url": "/v1/files/{key}".format(
            key=quote(str(key), safe=""),
        ),
        "params": params,
    }

    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> File | Problem | None:
    if response.status_code == 200:
        response_200 = File(payload=BytesIO(response.content))

        return response_200

    if response.status_code == 400:
        response_400 = Problem.from_dict(response.json())

        return response_400

    if response.status_code == 404:
        response_404 = Problem.from_dict(response.json())

        return response_404

    if response.status_code == 422:
        response_422 = Problem.from_dict(response.json())

        return response_422

    if response.status_code == 503:
        response_503 = Problem.from_dict(response.json())

        return response_503

    if client.raise_on_unexpected_status:
        raise errors.UnexpectedStatus(response.status_code, response.content)
    else:
        return None


def _build_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> Response[File | Problem]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    key: str,
    *,
    client: AuthenticatedClient | Client,
    expires: int,
    signature: str,
) -> Response[File | Problem]:
    """Download File

     A local-storage file behind an HMAC-signed, expiring URL (no API key needed).

    Output URLs on a job already carry `expires` and `signature`: GET the URL as it is (the
    SDKs' `download`). With S3 storage, output URLs point at the bucket instead.

    Args:
        key (str):
        expires (int): Expiry, unix seconds (from the signed URL).
        signature (str): HMAC signature (from the signed URL).

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[File | Problem]
    """

    kwargs = _get_kwargs(
        key=key,
        expires=expires,
        signature=signature,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    key: str,
    *,
    client: AuthenticatedClient | Client,
    expires: int,
    signature: str,
) -> File | Problem | None:
    """Download File

     A local-storage file behind an HMAC-signed, expiring URL (no API key needed).

    Output URLs on a job already carry `expires` and `signature`: GET the URL as it is (the
    SDKs' `download`). With S3 storage, output URLs point at the bucket instead.

    Args:
        key (str):
        expires (int): Expiry, unix seconds (from the signed URL).
        signature (str): HMAC signature (from the signed URL).

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        File | Problem
    """

    return sync_detailed(
        key=key,
        client=client,
        expires=expires,
        signature=signature,
    ).parsed


async def asyncio_detailed(
    key: str,
    *,
    client: AuthenticatedClient | Client,
    expires: int,
    signature: str,
) -> Response[File | Problem]:
    """Download File

     A local-storage file behind an HMAC-signed, expiring URL (no API key needed).

    Output URLs on a job already carry `expires` and `signature`: GET the URL as it is (the
    SDKs' `download`). With S3 storage, output URLs point at the bucket instead.

    Args:
        key (str):
        expires (int): Expiry, unix seconds (from the signed URL).
        signature (str): HMAC signature (from the signed URL).

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[File | Problem]
    """

    kwargs = _get_kwargs(
        key=key,
        expires=expires,
        signature=signature,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    key: str,
    *,
    client: AuthenticatedClient | Client,
    expires: int,
    signature: str,
) -> File | Problem | None:
    """Download File

     A local-storage file behind an HMAC-signed, expiring URL (no API key needed).

    Output URLs on a job already carry `expires` and `signature`: GET the URL as it is (the
    SDKs' `download`). With S3 storage, output URLs point at the bucket instead.

    Args:
        key (str):
        expires (int): Expiry, unix seconds (from the signed URL).
        signature (str): HMAC signature (from the signed URL).

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        File | Problem
    """

    return (
        await asyncio_detailed(
            key=key,
            client=client,
            expires=expires,
            signature=signature,
        )
    ).parsed
