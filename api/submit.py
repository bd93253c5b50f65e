"""Turning a typed request into a stored, queued job: validate, check media, render, store."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import Request
from pydantic import BaseModel
from sqlalchemy import update
from starlette.datastructures import UploadFile

from api.services import Services
from engine.budgets import check_budget
from engine.catalog import Template
from engine.errors import BadRequest, InvalidMedia, InvalidParams, UnsupportedMediaType
from engine.media import CheckedImage, check_image, decode_data_url
from engine.params import resolve_params, validate_params
from engine.render import GraphError
from engine.store import QUEUED, Job, Principal, insert_job, new_id, utcnow

_IMAGE_PLACEHOLDER = "data:image/png;base64,"


async def read_body(request: Request, t: Template) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The request's fields and raw image bytes, from JSON or multipart/form-data."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    images: dict[str, bytes] = {}
    if ctype in ("application/json", ""):
        raw = await request.body()
        try:
            data = json.loads(raw or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BadRequest(f"The body is not valid JSON: {e}", extra={"field": "body"}) from None
        if not isinstance(data, dict):
            raise InvalidParams([{"field": "body", "message": "expected a JSON object"}])
        for name in t.image_params:
            value = data.get(name)
            if isinstance(value, str):
                p = t.params[name]
                images[name] = decode_data_url(name, value, p.max_bytes or 10_485_760)
                data[name] = _IMAGE_PLACEHOLDER
        return data, images
    if ctype == "multipart/form-data":
        form = await request.form(max_files=len(t.image_params) + 1, max_fields=64)
        data = {}
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key not in t.image_params:
                    raise InvalidParams([{"field": key, "message": "not an image param"}])
                images[key] = await value.read()
                data[key] = _IMAGE_PLACEHOLDER
            elif key in t.image_params:
                images[key] = decode_data_url(key, value, t.params[key].max_bytes or 10_485_760)
                data[key] = _IMAGE_PLACEHOLDER
            else:
                data[key] = value
        return data, images
    raise UnsupportedMediaType(
        f"Send application/json or multipart/form-data, not {ctype}.",
        extra={"field": "content-type"},
    )


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


def _active_count(services: Services, tenant_id: str) -> int:
    from sqlalchemy import func, select

    from engine.store import ACTIVE

    with services.db.session() as s:
        return int(
            s.scalar(
                select(func.count())
                .select_from(Job)
                .where(Job.tenant_id == tenant_id, Job.status.in_(ACTIVE))
            )
            or 0
        )


def _check_budget(services: Services, tenant_id: str) -> None:
    with services.db.session() as s:
        check_budget(s, tenant_id)


async def submit(
    services: Services, t: Template, model: type[BaseModel], principal: Principal, request: Request
) -> Job:
    """Validate, check limits and media, render, store, and hand the job to the runner."""
    data, images = await read_body(request, t)
    values = validate_params(model, data)
    checked = check_media(t, values, images)
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

    # A tenant over its monthly budget is refused before anything (media included) is stored.
    await asyncio.to_thread(_check_budget, services, principal.tenant_id)
    quota = services.settings.active_job_quota
    # A cheap early refusal so a tenant over quota stores nothing, not even media.
    if await asyncio.to_thread(_active_count, services, principal.tenant_id) >= quota:
        from engine.errors import QuotaExceeded

        raise QuotaExceeded(
            f"This tenant already has the maximum of {quota} active jobs. Retry when one finishes.",
            extra={"limit": quota},
            headers={"Retry-After": "5"},
        )
    for name, img in checked.items():
        key = inputs[name]["key"]
        if not await asyncio.to_thread(services.storage.exists, key):
            await asyncio.to_thread(services.storage.put, key, img.data, img.content_type)

    seed_param = next((n for n, p in t.params.items() if p.random_if_absent), None)
    job = Job(
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
        created_at=utcnow(),
    )

    def store() -> Job:
        with services.db.session() as s:
            return insert_job(s, job, quota)

    stored = await asyncio.to_thread(store)
    if services.runner is not None:
        call_id = await services.runner.submitted(stored.id, t.gpu_class)
        if call_id:

            def save_call() -> None:
                # A warm container may claim the job first; it records the call id itself.
                with services.db.session() as s:
                    s.execute(
                        update(Job)
                        .where(Job.id == stored.id, Job.call_id.is_(None))
                        .values(call_id=call_id)
                    )

            await asyncio.to_thread(save_call)
            stored.call_id = call_id
    return stored
