"""Request models built from a template's declared params (one per template major version),
and the OpenAPI schemas each template contributes: its JSON body, its multipart body, the
enums of its params, and its params as a job reports them."""

from __future__ import annotations

import copy
import json
import secrets
from enum import Enum, StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from engine.catalog.catalog import Param, Template
from engine.errors import InvalidParams
from engine.runners.outputs import DEFAULT_FORMAT, DEFAULT_QUALITY

IMAGE_REF = "ImageRef"  # the schema of an image param in a job's params: `{sha256}`
IMAGE_REF_SCHEMA: dict[str, Any] = {
    "title": IMAGE_REF,
    "type": "object",
    "description": "An image input as a job records it: the sha256 of its stored bytes "
    "(`inputs` has its size and type).",
    "properties": {"sha256": {"type": "string", "description": "sha256 of the image bytes, hex."}},
    "required": ["sha256"],
}


def _camel(t: Template) -> str:
    return "".join(part.capitalize() for part in t.name.split("_")) + f"V{t.major}"


def model_name(t: Template) -> str:
    """The OpenAPI schema name of a template's JSON request body, e.g. `Txt2imgV1Request`."""
    return f"{_camel(t)}Request"


def multipart_name(t: Template) -> str:
    """The schema name of a template's multipart body (images as file parts)."""
    return f"{_camel(t)}Multipart"


def params_name(t: Template) -> str:
    """The schema name of a template's params as a job reports them, e.g. `Txt2imgV1Params`."""
    return f"{_camel(t)}Params"


def operation_id(t: Template) -> str:
    """The operationId (and SDK method name) of a template's route, e.g. `run_txt2img_v1`."""
    return f"run_{t.name}_v{t.major}"


def _num(v: float | None, integer: bool) -> float | int | None:
    if v is None:
        return None
    return int(v) if integer else v


def _field(name: str, p: Param, t: Template) -> tuple[Any, Any]:
    kw: dict[str, Any] = {"description": p.description, "examples": [p.example]}
    integer = p.type == "integer"
    if p.type in ("integer", "number"):
        kw.update(
            ge=_num(p.minimum, integer),
            le=_num(p.maximum, integer),
            multiple_of=_num(p.multiple_of, integer),
        )
        typ: Any = int if integer else float
    elif p.type == "string":
        kw.update(max_length=p.max_length, min_length=p.min_length)
        typ = str
    elif p.type == "boolean":
        typ = bool
    elif p.type == "enum":
        enum_name = f"{_camel(t)}{name.title().replace('_', '')}"
        typ = Enum(enum_name, {v: v for v in p.values or []}, type=str)  # type: ignore[misc,no-redef]
    else:  # image
        typ = str
        kw["description"] = (
            p.description
            + " JSON: a base64 data URL (`data:image/png;base64,...`) or an `https://` URL"
            " that Stencil fetches (public addresses only); multipart: a file part."
        )
        kw["json_schema_extra"] = {"contentMediaType": "image/*"}
    if p.required:
        return (Annotated[typ, Field(**kw)], ...)
    if p.default is None:
        # Optional with no default: absent means "not given" (a random seed, say). The schema
        # says the plain type, so SDKs generate `int | Unset`, not `int | None | Unset`; an
        # explicit null is refused like any other wrong type.
        return (Annotated[typ, Field(**kw)], None)
    default = typ(p.default) if p.type == "enum" else p.default
    return (Annotated[typ, Field(**kw)], default)


def build_request_model(t: Template) -> type[BaseModel]:
    """A strict pydantic model for a template's params (unknown fields are errors)."""
    fields: dict[str, Any] = {name: _field(name, p, t) for name, p in t.params.items()}
    fields["webhook_url"] = (
        Annotated[
            str,
            Field(
                description=(
                    "An `https://` URL that receives a signed Standard Webhooks POST when the "
                    "job reaches a terminal state (public addresses only)."
                ),
                max_length=2048,
                examples=["https://example.com/hooks/stencil"],
            ),
        ],
        None,
    )
    fields.update(output_fields())
    model: type[BaseModel] = create_model(
        model_name(t),
        __config__=ConfigDict(extra="forbid", title=model_name(t)),
        __doc__=f"{t.summary.rstrip('.')} (template {t.name} {t.version}).",
        **fields,
    )
    return model


class OutputFormat(StrEnum):
    """The file format of a job's output images."""

    png = "png"
    jpeg = "jpeg"
    webp = "webp"


def output_fields() -> dict[str, Any]:
    """`output_format` and `quality`: the same on every template, applied by the engine."""
    return {
        "output_format": (
            Annotated[
                OutputFormat,
                Field(
                    description="File format of the output images: lossless `png`, or `jpeg` "
                    "or `webp` at `quality`. Metadata is never carried over.",
                    examples=["webp"],
                ),
            ],
            OutputFormat(DEFAULT_FORMAT),
        ),
        "quality": (
            Annotated[
                int,
                Field(
                    ge=1,
                    le=100,
                    description="Encoder quality for `jpeg` and `webp` (1-100, higher is larger "
                    "and finer); ignored for `png`.",
                    examples=[DEFAULT_QUALITY],
                ),
            ],
            DEFAULT_QUALITY,
        ),
    }


def _raw_schema(model: type[BaseModel], ref_template: str) -> tuple[dict[str, Any], dict[str, Any]]:
    body = model.model_json_schema(ref_template=ref_template)
    defs = body.pop("$defs", {})
    for prop in body["properties"].values():
        prop.pop("title", None)
    return body, defs


def params_json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON Schema of a template's request body, self-contained (enums inline), with its
    defaults: what `GET /v1/templates/{name}` shows."""
    body, defs = _raw_schema(model, "#/$defs/{model}")
    for prop in body["properties"].values():
        ref = prop.pop("$ref", None)
        if ref is not None:
            enum = defs[ref.rsplit("/", 1)[1]]
            prop.update(type=enum["type"], enum=enum["enum"])
    return body


def template_schemas(t: Template, model: type[BaseModel]) -> dict[str, dict[str, Any]]:
    """The component schemas a template adds to the OpenAPI document, by name.

    The JSON body (`Txt2imgV1Request`), for templates with image params a multipart body
    (`UpscaleV1Multipart`, images as `format: binary` file parts), the enums of its params,
    and its params as a job reports them (`Txt2imgV1Params`). Defaults are said in each
    field's description rather than as `default`: code generators read a `default` as
    "always present", which is true of responses and makes request fields required.
    """
    body, defs = _raw_schema(model, "#/components/schemas/{model}")
    for prop in body["properties"].values():
        if "default" in prop:
            value = prop.pop("default")
            if value is not None:
                prop["description"] = f"{prop['description']} Default: `{json.dumps(value)}`."
    out: dict[str, dict[str, Any]] = dict(defs)
    out[model_name(t)] = body
    if t.image_params:
        form = copy.deepcopy(body)
        form["title"] = multipart_name(t)
        form["description"] = (
            f"{body.get('description', t.summary)} As `multipart/form-data`: images are file "
            "parts, other fields text parts."
        )
        for name in t.image_params:
            p = t.params[name]
            form["properties"][name] = {
                "type": "string",
                "format": "binary",
                "description": f"{p.description} A file part.",
            }
        out[multipart_name(t)] = form
    out[params_name(t)] = _params_schema(t, body)
    out[IMAGE_REF] = IMAGE_REF_SCHEMA
    return out


def _params_schema(t: Template, body: dict[str, Any]) -> dict[str, Any]:
    """Params as run: every param present (seeds drawn), images as their sha256."""
    props: dict[str, Any] = {}
    for name, p in t.params.items():
        src = body["properties"][name]
        if p.type == "image":
            prop: dict[str, Any] = {"$ref": f"#/components/schemas/{IMAGE_REF}"}
        elif "$ref" in src:
            prop = {"$ref": src["$ref"]}
        else:
            prop = {"type": src["type"]}
        desc = p.description
        if not p.required and p.default is None and not p.random_if_absent:
            prop = {"anyOf": [prop, {"type": "null"}]}
            desc += " Null when it was not given."
        props[name] = {**prop, "description": desc}
    for name in output_fields():  # applied by the engine; absent on jobs older than them
        src = body["properties"][name]
        kind = {"$ref": src["$ref"]} if "$ref" in src else {"type": src["type"]}
        props[name] = {**kind, "description": src["description"].split(" Default:")[0]}
    return {
        "title": params_name(t),
        "type": "object",
        "description": f"The params of a job of template {t.name} v{t.major}, as it ran "
        "(seeds included).",
        "properties": props,
        "required": list(t.params),
    }


def validation_errors(e: ValidationError, prefix: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Pydantic errors as {field, message, type}, fields by public name."""
    out = []
    for err in e.errors(include_url=False):
        loc = [str(x) for x in (*prefix, *err["loc"])]
        out.append({"field": ".".join(loc) or "body", "message": err["msg"], "type": err["type"]})
    return out


def validate_params(model: type[BaseModel], data: Any, *, strict: bool = False) -> dict[str, Any]:
    """Validate a request body; raise InvalidParams naming each bad field.

    JSON bodies are validated strictly (`false` is not a seed, `"7"` is not a number); form
    fields arrive as text, so multipart bodies are converted the lax way.
    """
    if not isinstance(data, dict):
        raise InvalidParams([{"field": "body", "message": "expected a JSON object"}])
    try:
        if strict:
            obj = model.model_validate_json(json.dumps(data), strict=True)
        else:
            obj = model.model_validate(data)
    except ValidationError as e:
        raise InvalidParams(validation_errors(e)) from None
    return obj.model_dump(mode="json")


def resolve_params(t: Template, values: dict[str, Any]) -> dict[str, Any]:
    """Fill defaults the model left as None and draw random seeds for absent ones."""
    out = dict(values)
    for name, p in t.params.items():
        if out.get(name) is None and p.random_if_absent:
            hi = int(p.maximum) if p.maximum is not None else 2**32 - 1
            lo = int(p.minimum) if p.minimum is not None else 0
            out[name] = lo + secrets.randbelow(hi - lo + 1)
    return out
