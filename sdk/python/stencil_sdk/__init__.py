"""Stencil's Python SDK: the generated `stencil_client` with a small layer on top.

from stencil_sdk import Stencil
from stencil_client.models import Txt2ImgV1Request

with Stencil("http://127.0.0.1:8000", api_key="sk_...") as stencil:
    job = stencil.run("/v1/txt2img", Txt2ImgV1Request(prompt="a lighthouse at dawn"))
    png = stencil.download(job.outputs[0])
"""

from stencil_sdk._client import AsyncStencil, Body, Stencil, unwrap
from stencil_sdk._errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    BudgetExceededError,
    ConflictError,
    InternalServerError,
    JobCancelledError,
    JobError,
    JobFailedError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
    StencilDeprecationWarning,
    StencilError,
    UnsupportedMediaTypeError,
    ValidationError,
    WaitTimeoutError,
    WebhookVerificationError,
)
from stencil_sdk._files import FileInput, upload
from stencil_sdk._retry import RetryPolicy
from stencil_sdk.webhooks import WebhookEvent, parse_webhook, verify_webhook

__all__ = [
    "APIError",
    "AsyncStencil",
    "AuthenticationError",
    "BadRequestError",
    "Body",
    "BudgetExceededError",
    "ConflictError",
    "FileInput",
    "InternalServerError",
    "JobCancelledError",
    "JobError",
    "JobFailedError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitError",
    "RetryPolicy",
    "ServiceUnavailableError",
    "Stencil",
    "StencilDeprecationWarning",
    "StencilError",
    "UnsupportedMediaTypeError",
    "ValidationError",
    "WaitTimeoutError",
    "WebhookEvent",
    "WebhookVerificationError",
    "parse_webhook",
    "unwrap",
    "upload",
    "verify_webhook",
]
