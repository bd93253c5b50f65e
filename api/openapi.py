"""The OpenAPI document: the product's front door, and what the SDKs are generated from.

Routes declare their own responses with `problems()` and `header()`; `build_document` adds
what holds across routes (the problem answers every route can give, the rate-limit headers of
authenticated routes, security), and what the catalog decides (one request schema per template
major version, a multipart one beside it for templates that take images, job params typed per
template, deprecation). Nothing here is edited by hand after generation: `openapi.json` is this
module's output, and `make sdk` generates the clients from it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from api import schemas
from engine.catalog.catalog import Catalog, Template
from engine.catalog.params import model_name, multipart_name, params_name, template_schemas

API_VERSION = "1.0.0"
SECURITY_SCHEME = "HTTPBearer"
RETIRED_PARAMS = "RetiredTemplateParams"
# Models no route returns as JSON: the data of the event stream's events.
EXTRA_MODELS: list[type[BaseModel]] = [schemas.JobEvent]

DESCRIPTION = (
    "Typed, versioned endpoints for vetted ComfyUI workflows. Submit with "
    "`POST /v{major}/{template}`, then follow `GET /v1/jobs/{id}/events` or poll "
    "`GET /v1/jobs/{id}`. Errors are RFC 9457 problems; every retryable answer says when in "
    "`Retry-After`. A template's major version is in its path; a deprecated one answers with "
    "`Deprecation` and `Sunset` headers. SDKs: see `docs/sdk.md`."
)
TAGS = [
    {"name": "templates", "description": "What can be run, and one submit route per template."},
    {"name": "jobs", "description": "Jobs: read, follow as events, list, cancel."},
    {"name": "usage", "description": "Jobs, billable seconds and USD from the usage ledger."},
    {"name": "admin", "description": "Across tenants; needs a key with the `admin` scope."},
    {
        "name": "webhooks",
        "description": "Signed Standard Webhooks: the secret, delivery logs, replays, the "
        "account-event endpoint, and the events receivers get.",
    },
    {"name": "system", "description": "Liveness, readiness, and signed file downloads."},
]
SERVERS = [
    {
        "url": "http://127.0.0.1:8000",
        "description": "A local Stencil (`make run`); point clients at your deployment's URL.",
    }
]
CONTACT = {"name": "Stencil", "url": "https://stencil.dev"}
LICENSE = {"name": "Proprietary", "url": "https://stencil.dev/terms"}


def _h(description: str, type_: str = "string", **schema: Any) -> dict[str, Any]:
    return {"description": description, "schema": {"type": type_, **schema}}


HEADERS: dict[str, dict[str, Any]] = {
    "RateLimit-Limit": _h(
        "Requests this API key may make per window, for this kind (read or write).", "integer"
    ),
    "RateLimit-Remaining": _h("Requests left in the current window.", "integer"),
    "RateLimit-Reset": _h("Seconds until the current window ends.", "integer"),
    "RateLimit-Policy": _h("The limit and its window: `limit;w=seconds`."),
    "Retry-After": _h("Seconds to wait before trying again.", "integer", minimum=0),
    "Location": _h("The job's path, `/v1/jobs/{id}`."),
    "Idempotent-Replayed": _h(
        "`true` when this is the stored answer to an earlier request with the same "
        "`Idempotency-Key` (nothing new was done).",
        enum=["true"],
    ),
    "Deprecation": _h(
        "RFC 9745: this version of the route is deprecated, since `@` + unix seconds."
    ),
    "Sunset": _h("RFC 8594: when this version of the route stops being served (HTTP-date)."),
    "Link": _h('`<route>; rel="successor-version"`: the newer major version to move to.'),
    "WWW-Authenticate": _h('The authentication scheme to use: `Bearer realm="stencil"`.'),
    "Cache-Control": _h("How long the file may be cached: `private, max-age=300`."),
}


def header(name: str, *, required: bool = False) -> dict[str, Any]:
    """A documented response header: by reference, or inline where it is always sent (a
    reference cannot say `required`)."""
    if required:
        return {**HEADERS[name], "required": True}
    return {"$ref": f"#/components/headers/{name}"}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def problems(codes: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """Documented error answers of a route, each an RFC 9457 problem with its own text."""
    return {code: {"model": schemas.Problem, "description": desc} for code, desc in codes.items()}


# Answers any route can give, added where a route does not say more (see `_problems`).
GENERIC = {
    "503": "The job store is unavailable; retry after `Retry-After`.",
    "401": "Missing or invalid API key.",
    "429": "Over the API key's rate limit; retry after `Retry-After`.",
    "422": "Invalid parameters (an unknown query parameter, say); `errors` names each field.",
    "400": "The body is not acceptable JSON (syntax, nesting depth, number size), or the Host "
    "header is not a trusted name.",
    "400-host": "The Host header is not a trusted name.",
}
RATE_LIMIT_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")


def _problems(path: str, op: dict[str, Any]) -> None:
    responses = op.setdefault("responses", {})
    authenticated = bool(op.get("security"))
    defaults = ["422"]  # every route refuses unknown query parameters
    if path != "/health":
        defaults.append("503")
    if authenticated:
        defaults += ["401", "429"]
    for code in defaults:
        responses.setdefault(code, {"description": GENERIC[code]})
    # Any route: a Host header that is not trusted (see problems.TrustedHosts); with a body,
    # also JSON past the parser limits (api.jsonbody).
    bad_request = GENERIC["400" if op.get("requestBody") else "400-host"]
    responses.setdefault("400", {"description": bad_request})
    if responses.get("422", {}).get("description") == "Validation Error":  # FastAPI's own
        responses["422"]["description"] = GENERIC["422"]
    for code, resp in responses.items():
        headers = resp.setdefault("headers", {})
        if authenticated and code != "401":
            for name in RATE_LIMIT_HEADERS:
                headers.setdefault(name, header(name))
            headers.setdefault("RateLimit-Policy", header("RateLimit-Policy"))
        if code == "429":
            headers["Retry-After"] = header("Retry-After", required=True)
        elif code in ("402", "503"):
            headers.setdefault("Retry-After", header("Retry-After"))
        elif code == "401":
            headers["WWW-Authenticate"] = header("WWW-Authenticate")
        if not headers:
            resp.pop("headers")
        if int(code) >= 400:
            resp["content"] = {"application/problem+json": {"schema": _ref("Problem")}}


def deprecation_headers(catalog: Catalog, t: Template) -> dict[str, str]:
    """The headers a deprecated template version answers with (none when it is current)."""
    if t.deprecated is None:
        return {}
    since = datetime(t.deprecated.year, t.deprecated.month, t.deprecated.day, tzinfo=UTC)
    out = {"Deprecation": f"@{int(since.timestamp())}"}
    if t.sunset is not None:
        end = datetime(t.sunset.year, t.sunset.month, t.sunset.day, tzinfo=UTC)
        out["Sunset"] = format_datetime(end, usegmt=True)
    nxt = catalog.successor(t)
    if nxt is not None:
        out["Link"] = f'</v{nxt.major}/{nxt.name}>; rel="successor-version"'
    return out


def deprecation_note(catalog: Catalog, t: Template) -> str:
    """What the document and the SDKs say about a deprecated version."""
    if t.deprecated is None:
        return ""
    note = f"Deprecated since {t.deprecated.isoformat()}"
    if t.sunset is not None:
        note += f"; served until {t.sunset.isoformat()}"
    nxt = catalog.successor(t)
    if nxt is not None:
        note += f"; use `POST /v{nxt.major}/{nxt.name}`"
    return note + "."


def _template_ops(schema: dict[str, Any], catalog: Catalog, models: dict[Any, Any]) -> None:
    comps = schema["components"]["schemas"]
    for t in catalog.templates:
        comps.update(template_schemas(t, models[(t.name, t.major)]))
        op = schema["paths"][f"/v{t.major}/{t.name}"]["post"]
        content: dict[str, Any] = {"application/json": {"schema": _ref(model_name(t))}}
        if t.image_params:
            content["multipart/form-data"] = {
                "schema": _ref(multipart_name(t)),
                "encoding": {
                    name: {"contentType": "image/png, image/jpeg, image/webp"}
                    for name in t.image_params
                },
            }
        op["requestBody"] = {"required": True, "content": content}
        if t.deprecated is not None:
            op["deprecated"] = True
            op["description"] = f"**{deprecation_note(catalog, t)}**\n\n{op['description']}"
            headers = op["responses"]["202"]["headers"]
            headers["Deprecation"] = header("Deprecation", required=True)
            if t.sunset is not None:
                headers["Sunset"] = header("Sunset", required=True)
            if catalog.successor(t) is not None:
                headers["Link"] = header("Link", required=True)
    comps[RETIRED_PARAMS] = {
        "title": RETIRED_PARAMS,
        "type": "object",
        "description": "The params of a job whose template version the catalog no longer has.",
        "additionalProperties": True,
    }
    # Generated clients take the first schema whose required fields a job's params have, so the
    # templates with more params come first: an inpaint job (img2img's params and a mask) must
    # not read as img2img. Each job also says its template (`template`, `template_version`).
    by_specificity = sorted(catalog.templates, key=lambda t: -len(t.params))
    comps["Job"]["properties"]["params"] = {
        "anyOf": [_ref(params_name(t)) for t in by_specificity] + [_ref(RETIRED_PARAMS)],
        "description": comps["Job"]["properties"]["params"]["description"],
    }


def _plain_optional(schema: dict[str, Any]) -> dict[str, Any]:
    """`anyOf [T, null]` as T: an optional input is absent or a value, never null."""
    any_of = schema.get("anyOf")
    if isinstance(any_of, list) and len(any_of) == 2 and {"type": "null"} in any_of:
        (inner,) = [s for s in any_of if s != {"type": "null"}]
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        return {**inner, **rest}
    return schema


def _clean_parameters(schema: dict[str, Any]) -> None:
    for item in [*schema["paths"].values(), *schema.get("webhooks", {}).values()]:
        for op in item.values():
            for param in op.get("parameters", []):
                if not param.get("required"):
                    param["schema"] = _plain_optional(param["schema"])
                    param["schema"].pop("title", None)


def _webhook_ops(schema: dict[str, Any]) -> None:
    for item in schema.get("webhooks", {}).values():
        for op in item.values():
            retried = (
                "Not delivered, like no answer within the timeout: retried with backoff and "
                "jitter until the retry window closes (`STENCIL_WEBHOOK_RETRY_WINDOW_S`)."
            )
            op["responses"] = {
                "2XX": {"description": "Delivered: any 2xx answer within the timeout."},
                "4XX": {"description": retried},
                "5XX": {"description": retried},
            }


def build_document(app: FastAPI, catalog: Catalog, models: dict[Any, Any]) -> dict[str, Any]:
    """The whole document, from the app's routes and the catalog."""
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        webhooks=app.webhooks.routes,
        tags=TAGS,
        servers=SERVERS,
        contact=CONTACT,
        license_info=LICENSE,
    )
    schema["components"]["securitySchemes"] = {
        SECURITY_SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key: `Authorization: Bearer sk_...`.",
        }
    }
    schema["security"] = [{SECURITY_SCHEME: []}]
    comps = schema["components"]["schemas"]
    for model in EXTRA_MODELS:
        doc = model.model_json_schema(
            ref_template="#/components/schemas/{model}", mode="serialization"
        )
        for name, sub in doc.pop("$defs", {}).items():
            comps.setdefault(name, sub)
        comps.setdefault(model.__name__, doc)
    _template_ops(schema, catalog, models)
    for path, item in schema["paths"].items():
        for op in item.values():
            _problems(path, op)
    _clean_parameters(schema)
    _webhook_ops(schema)
    schema["components"]["headers"] = {
        name: HEADERS[name] for name in sorted(HEADERS) if _uses_header(schema, name)
    }
    for unused in ("HTTPValidationError", "ValidationError"):
        comps.pop(unused, None)
    schema["components"]["schemas"] = dict(sorted(comps.items()))
    return schema


def _uses_header(schema: dict[str, Any], name: str) -> bool:
    ref = f"#/components/headers/{name}"
    for item in schema["paths"].values():
        for op in item.values():
            for resp in op.get("responses", {}).values():
                if any(h.get("$ref") == ref for h in resp.get("headers", {}).values()):
                    return True
    return False
