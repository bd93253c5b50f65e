from http import HTTPStatus
from typing import Any

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.job import Job
from ...models.problem import Problem
from ...models.txt_2_img_v1_request import Txt2ImgV1Request
from ...types import UNSET, Response, Unset


def _get_kwargs(
    *,
    body: Txt2ImgV1Request,
    idempotency_key: str | Unset = UNSET,
) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    if not isinstance(idempotency_key, Unset):
        headers["Idempotency-Key"] = idempotency_key

    _kwargs: dict[str, Any] = {
        "method": "post",
        "url": "/v1/txt2img",
    }

    _kwargs["json"] = body.to_dict()

    headers["Content-Type"] = "application/json"

    _kwargs["headers"] = headers
    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> Job | Problem | None:
    if response.status_code == 202:
        response_202 = Job.from_dict(response.json())

        return response_202

    if response.status_code == 400:
        response_400 = Problem.from_dict(response.json())

        return response_400

    if response.status_code == 401:
        response_401 = Problem.from_dict(response.json())

        return response_401

    if response.status_code == 402:
        response_402 = Problem.from_dict(response.json())

        return response_402

    if response.status_code == 413:
        response_413 = Problem.from_dict(response.json())

        return response_413

    if response.status_code == 415:
        response_415 = Problem.from_dict(response.json())

        return response_415

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
    *,
    client: AuthenticatedClient,
    body: Txt2ImgV1Request,
    idempotency_key: str | Unset = UNSET,
) -> Response[Job | Problem]:
    """Generate images from a text prompt (SD1.5-class checkpoint).

     Text to image with a Stable Diffusion 1.5-class checkpoint. Width and height are multiples of 8;
    leave `seed` out for a random one, which the job reports back. `style` applies a vetted LoRA.

    Args:
        idempotency_key (str | Unset): Makes the POST safe to retry: the same key and body within
            24 hours returns the original result instead of doing the work again; the same key with
            another body is a 422.
        body (Txt2ImgV1Request): Generate images from a text prompt (SD1.5-class checkpoint)
            (template txt2img 1.1.0).

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[Job | Problem]
    """

    kwargs = _get_kwargs(
        body=body,
        idempotency_key=idempotency_key,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    *,
    client: AuthenticatedClient,
    body: Txt2ImgV1Request,
    idempotency_key: str | Unset = UNSET,
) -> Job | Problem | None:
    """Generate images from a text prompt (SD1.5-class checkpoint).

     Text to image with a Stable Diffusion 1.5-class checkpoint. Width and height are multiples of 8;
    leave `seed` out for a random one, which the job reports back. `style` applies a vetted LoRA.

    Args:
        idempotency_key (str | Unset): Makes the POST safe to retry: the same key and body within
            24 hours returns the original result instead of doing the work again; the same key with
            another body is a 422.
        body (Txt2ImgV1Request): Generate images from a text prompt (SD1.5-class checkpoint)
            (template txt2img 1.1.0).

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Job | Problem
    """

    return sync_detailed(
        client=client,
        body=body,
        idempotency_key=idempotency_key,
    ).parsed


async def asyncio_detailed(
    *,
    client: AuthenticatedClient,
    body: Txt2ImgV1Request,
    idempotency_key: str | Unset = UNSET,
) -> Response[Job | Problem]:
    """Generate images from a text prompt (SD1.5-class checkpoint).

     Text to image with a Stable Diffusion 1.5-class checkpoint. Width and height are multiples of 8;
    leave `seed` out for a random one, which the job reports back. `style` applies a vetted LoRA.

    Args:
        idempotency_key (str | Unset): Makes the POST safe to retry: the same key and body within
            24 hours returns the original result instead of doing the work again; the same key with
            another body is a 422.
        body (Txt2ImgV1Request): Generate images from a text prompt (SD1.5-class checkpoint)
            (template txt2img 1.1.0).

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[Job | Problem]
    """

    kwargs = _get_kwargs(
        body=body,
        idempotency_key=idempotency_key,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    *,
    client: AuthenticatedClient,
    body: Txt2ImgV1Request,
    idempotency_key: str | Unset = UNSET,
) -> Job | Problem | None:
    """Generate images from a text prompt (SD1.5-class checkpoint).

     Text to image with a Stable Diffusion 1.5-class checkpoint. Width and height are multiples of 8;
    leave `seed` out for a random one, which the job reports back. `style` applies a vetted LoRA.

    Args:
        idempotency_key (str | Unset): Makes the POST safe to retry: the same key and body within
            24 hours returns the original result instead of doing the work again; the same key with
            another body is a 422.
        body (Txt2ImgV1Request): Generate images from a text prompt (SD1.5-class checkpoint)
            (template txt2img 1.1.0).

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Job | Problem
    """

    return (
        await asyncio_detailed(
            client=client,
            body=body,
            idempotency_key=idempotency_key,
        )
    ).parsed
