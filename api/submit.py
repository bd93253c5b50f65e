"""Turning a typed request into a stored, queued job: validate, check media, render, store."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from fastapi import Request
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile

from api.jsonbody import parse_json
from api.problems import JSON_BODY
from api.services import Services
from engine.catalog.catalog import Template
from engine.catalog.params import resolve_params, validate_params
from engine.catalog.render import GraphError
from engine.db.database import new_id, utcnow
from engine.db.tables import Job
from engine.errors import (
    BudgetExceeded,
    InvalidMedia,
    InvalidParams,
    QuotaExceeded,
    UnsupportedMediaType,
)
from engine.intake.media import CheckedImage, check_image, decode_data_url, is_url
from engine.jobs import idempotency as idem
from engine.jobs import lifecycle
from engine.jobs.states import QUEUED
from engine.jobs.store import JobRow
from engine.tenants.keys import Principal

_IMAGE_PLACEHOLDER = "data:image/png;base64,"


class Body:
    """A parsed request: fields, uploaded image bytes, and image URLs still to fetch."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.images: dict[str, bytes] = {}
        self.urls: dict[str, str] = {}
        self.is_json = False

    def image_value(self, t: Template, name: str, value: str) -> None:
        """A string image param: a URL to fetch later, or a data URL decoded now."""
        if is_url(value):
            self.urls[name] = value
        else:
            self.images[name] = decode_data_url(name, value, t.params[name].max_bytes or 10_485_760)
        self.data[name] = _IMAGE_PLACEHOLDER


async def read_body(request: Request, t: Template) -> Body:
    """The request's fields, image bytes and image URLs, from JSON or multipart/form-data."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = Body()
    if ctype in ("application/json", ""):
        raw = await request.body()
        # Parsed once, within the parser limits, by BodyLimits as the body was read.
        state = request.scope.get("state", {})
        data = state[JSON_BODY] if JSON_BODY in state else parse_json(raw)
        if not isinstance(data, dict):
            raise InvalidParams([{"field": "body", "message": "expected a JSON object"}])
        body.data = data
        body.is_json = True
        for name in t.image_params:
            value = data.get(name)
            if isinstance(value, str):
                body.image_value(t, name, value)
        return body
    if ctype == "multipart/form-data":
        form = await request.form(max_files=len(t.image_params) + 1, max_fields=64)
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key not in t.image_params:
                    raise InvalidParams([{"field": key, "message": "not an image param"}])
                body.images[key] = await value.read()
                body.data[key] = _IMAGE_PLACEHOLDER
            elif key in t.image_params:
                body.image_value(t, key, value)
            else:
                body.data[key] = value
        return body
    raise UnsupportedMediaType(
        f"Send application/json or multipart/form-data, not {ctype}.",
        extra={"field": "content-type"},
    )


async def fetch_urls(services: Services, t: Template, body: Body) -> None:
    """Fetch every image URL through the guard, concurrently; any refusal is a 422."""
    names = list(body.urls)

    async def one(name: str) -> bytes:
        p = t.params[name]
        img = await services.guard.fetch_image(
            name,
            body.urls[name],
            formats=list(p.formats or ["PNG", "JPEG", "WEBP"]),
            max_bytes=p.max_bytes or 10_485_760,
            max_pixels=p.max_pixels or 4_194_304,
        )
        return img.data

    results = await asyncio.gather(*(one(n) for n in names))
    body.images.update(zip(names, results, strict=True))


async def check_webhook_url(services: Services, url: str, field: str = "webhook_url") -> None:
    """A webhook URL passes the same guard as image URLs (resolved, never connected); a
    refusal is a 422 naming `field`."""
    from engine.intake.fetch import UrlRefused

    try:
        await services.guard.check(url)
    except UrlRefused as e:
        raise InvalidParams(
            [{"field": field, "message": f"URL refused: {e}"}],
            detail=f"{field}: URL refused: {e}",
        ) from None


def check_media(
    t: Template, params: dict[str, Any], images: dict[str, bytes]
) -> dict[str, CheckedImage]:
    """Decode and check every image param, and the output size it implies."""
    checked: dict[str, CheckedImage] = {}
    for name in t.image_params:
        p = t.params[name]
        if name not in images:
            if p.required:
                raise InvalidParams([{"field": name, "message": "Field required"}])
            continue
        checked[name] = check_image(
            name,
            images[name],
            formats=list(p.formats or ["PNG", "JPEG", "WEBP"]),
            max_bytes=p.max_bytes or 10_485_760,
            max_pixels=p.max_pixels or 4_194_304,
        )
    so = t.limits.scaled_output
    if so is not None and so.image in checked:
        img = checked[so.image]
        factor = float(params[so.factor])
        out_w, out_h = round(img.width * factor), round(img.height * factor)
        if out_w * out_h > t.limits.max_output_pixels:
            raise InvalidMedia(
                so.factor,
                f"{img.width}x{img.height} scaled by {factor} is {out_w}x{out_h}; "
                f"the output limit is {t.limits.max_output_pixels} pixels",
            )
    return checked


def _request_fingerprint(route: str, values: dict[str, Any], body: Body) -> str:
    images = {k: hashlib.sha256(v).hexdigest() for k, v in body.images.items()}
    return idem.fingerprint(route, {"values": values, "images": images, "urls": body.urls})


def _replayed_job(s: Session, tenant_id: str, key: str, fp: str, ttl: int) -> Job | None:
    rec = idem.check(idem.find(s, tenant_id, key, ttl), fp)
    if rec is None or rec.job_id is None:
        return None
    return s.get(Job, rec.job_id)


async def submit(
    services: Services,
    t: Template,
    model: type[BaseModel],
    principal: Principal,
    request: Request,
    idempotency_key: str | None = None,
) -> tuple[Job | JobRow, bool]:
    """Validate, check limits and media, render, store, and hand the job to the runner.

    Returns the job and whether it is a replay of an earlier request with the same
    Idempotency-Key (then nothing new was stored).
    """
    body = await read_body(request, t)
    values = validate_params(model, body.data, strict=body.is_json)
    route = f"POST /v{t.major}/{t.name}"
    fp = _request_fingerprint(route, values, body) if idempotency_key else ""

    async def replayed() -> Job | None:
        if not idempotency_key:
            return None
        ttl = services.settings.idempotency_ttl_s
        return await services.db.read(_replayed_job, principal.tenant_id, idempotency_key, fp, ttl)

    # A retry gets its original job before any limit is consulted, and again when a limit (or
    # the key's unique index) refuses it: its twin may have committed in between, and may be
    # the very job that filled the quota.
    earlier = await replayed()
    if earlier is not None:
        return earlier, True
    try:
        return await _create(services, t, principal, body, values, route, fp, idempotency_key)
    except (QuotaExceeded, BudgetExceeded, IntegrityError):
        earlier = await replayed()
        if earlier is None:
            raise
        return earlier, True


async def _create(
    services: Services,
    t: Template,
    principal: Principal,
    body: Body,
    values: dict[str, Any],
    route: str,
    fp: str,
    idempotency_key: str | None,
) -> tuple[JobRow, bool]:
    webhook_url = values.pop("webhook_url", None)
    if webhook_url:
        await check_webhook_url(services, webhook_url)
    # Cheap early refusals, so a tenant over quota or budget costs no fetch and stores nothing.
    await lifecycle.admit(services.db, principal.tenant_id, services.settings.active_job_quota)
    if body.urls:
        await fetch_urls(services, t, body)
    checked = check_media(t, values, body.images)
    params = resolve_params(t, values)

    render_params = dict(params)
    inputs: dict[str, Any] = {}
    for name, img in checked.items():
        render_params[name] = img.comfy_name
        inputs[name] = img.record(f"inputs/{img.sha256}.{img.comfy_name.rsplit('.', 1)[1]}")
        params[name] = {"sha256": img.sha256}
    try:
        rendered = services.graphs.render(t, render_params)
    except GraphError as e:
        raise InvalidParams(
            [{"field": "body", "message": f"the params do not render: {e}"}]
        ) from None

    for name, img in checked.items():
        key = inputs[name]["key"]
        storage = services.storage
        have = (
            storage.exists(key) if storage.local else await asyncio.to_thread(storage.exists, key)
        )
        if not have:
            await asyncio.to_thread(services.storage.put, key, img.data, img.content_type)

    seed_param = next((n for n, p in t.params.items() if p.random_if_absent), None)
    # The new job's columns (no ORM object: the fast path stores them with a prepared
    # transaction and shows them as the row it stored).
    columns: dict[str, Any] = dict(
        id=new_id("job"),
        tenant_id=principal.tenant_id,
        template=t.name,
        template_version=t.version,
        status=QUEUED,
        params=params,
        inputs=inputs,
        graph=rendered.graph,
        graph_hash=rendered.sha256,
        seed=params.get(seed_param) if seed_param else None,
        progress=0.0,
        outputs=[],
        attempts=0,
        cancel_requested=False,
        metering={},
        runner=services.runner.name if services.runner else None,
        webhook_url=webhook_url,
        created_at=utcnow(),
    )

    remember = (
        lifecycle.Remember(idempotency_key, fp, route, services.settings.idempotency_ttl_s)
        if idempotency_key
        else None
    )
    stored = await lifecycle.store_new(
        services.db, columns, services.settings.active_job_quota, remember
    )
    if services.runner is not None:
        call_id = await services.runner.submitted(stored.id, t.gpu_class)
        if call_id:
            await services.db.write(lifecycle.save_call_id, stored.id, call_id)
            stored = stored._replace(call_id=call_id)
    return stored, False
