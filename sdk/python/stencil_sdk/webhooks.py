"""Verifying Stencil's webhooks (Standard Webhooks) and reading them as typed events."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from stencil_client.models.budget_threshold_webhook_event import BudgetThresholdWebhookEvent
from stencil_client.models.job_webhook_event import JobWebhookEvent
from stencil_sdk._errors import WebhookVerificationError

WebhookEvent = JobWebhookEvent | BudgetThresholdWebhookEvent
"""Every body a receiver gets: see the document's `webhooks` section."""

TOLERANCE_S = 300


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def verify_webhook(
    body: bytes | str,
    headers: Mapping[str, str],
    secret: str | Sequence[str],
    *,
    tolerance_s: float = TOLERANCE_S,
    now: float | None = None,
) -> WebhookEvent:
    """Check a delivery's signature and timestamp, then parse it.

    `body` is the raw request body (before any JSON parsing), `headers` the request's headers
    (any case), `secret` the tenant's `whsec_` secret (or several: during a rotation either
    verifies). Raises `WebhookVerificationError` unless one signature matches and the
    timestamp is within `tolerance_s` of now.
    """
    raw = body.encode() if isinstance(body, str) else body
    h = {k.lower(): v for k, v in headers.items()}
    msg_id, stamp = h.get("webhook-id"), h.get("webhook-timestamp")
    sigs = h.get("webhook-signature")
    if not msg_id or not stamp or not sigs:
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        sent = int(stamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not unix seconds") from None
    if abs((time.time() if now is None else now) - sent) > tolerance_s:
        raise WebhookVerificationError("webhook-timestamp is too far from now (a replay?)")
    signed = f"{msg_id}.{stamp}.".encode() + raw
    secrets_ = [secret] if isinstance(secret, str) else list(secret)
    expected = [
        base64.b64encode(hmac.new(_key(s), signed, hashlib.sha256).digest()) for s in secrets_
    ]
    given = [p.partition(",")[2].encode() for p in sigs.split() if p.startswith("v1,")]
    if not any(hmac.compare_digest(e, g) for e in expected for g in given):
        raise WebhookVerificationError("no signature matches the secret")
    return parse_webhook(raw)


def parse_webhook(body: bytes | str) -> WebhookEvent:
    """A webhook body as its typed event (no verification: use `verify_webhook`)."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        raise WebhookVerificationError("the body is not JSON") from None
    kind = data.get("type") if isinstance(data, dict) else None
    if isinstance(kind, str) and kind.startswith("job."):
        return JobWebhookEvent.from_dict(data)
    if kind == "budget.threshold":
        return BudgetThresholdWebhookEvent.from_dict(data)
    raise WebhookVerificationError(f"unknown webhook type {kind!r}")
