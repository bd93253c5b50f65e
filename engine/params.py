"""Request models built from a template's declared params (one per template major version)."""

from __future__ import annotations

import json
import secrets
from enum import Enum, StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from engine.catalog import Param, Template
from engine.errors import InvalidParams
from engine.outputs import DEFAULT_FORMAT, DEFAULT_QUALITY


def model_name(t: Template) -> str:
    """The OpenAPI schema name of a template's request body, e.g. `Txt2imgV1Request`."""
    camel = "".join(part.capitalize() for part in t.name.split("_"))
    return f"{camel}V{t.major}Request"


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
        enum_name = f"{model_name(t).removesuffix('Request')}{name.title().replace('_', '')}"
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
        return (Annotated[typ | None, Field(**kw)], None)
    default = typ(p.default) if p.type == "enum" else p.default
    return (Annotated[typ, Field(**kw)], default)


def build_request_model(t: Template) -> type[BaseModel]:
    """A strict pydantic model for a template's params (unknown fields are errors)."""
    fields: dict[str, Any] = {name: _field(name, p, t) for name, p in t.params.items()}
    fields["webhook_url"] = (
        Annotated[
            str | None,
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
        __doc__=f"{t.summary} (template {t.name} {t.version}).",
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
