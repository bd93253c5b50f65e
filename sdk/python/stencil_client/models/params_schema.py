from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from attrs import define as _attrs_define

if TYPE_CHECKING:
    from ..models.params_schema_properties import ParamsSchemaProperties


T = TypeVar("T", bound="ParamsSchema")


@_attrs_define
class ParamsSchema:
    """The JSON Schema (2020-12) of a template's JSON request body.

    Attributes:
        title (str): The request schema's name in the OpenAPI document.
        description (str): What the template does.
        type_ (Literal['object']): Always `object`.
        properties (ParamsSchemaProperties): Each field's schema, by name.
        required (list[str]): The fields a request must give.
        additional_properties (bool): Always false: unknown fields are refused.
    """

    title: str
    description: str
    type_: Literal["object"]
    properties: ParamsSchemaProperties
    required: list[str]
    additional_properties: bool

    def to_dict(self) -> dict[str, Any]:
        title = self.title

        description = self.description

        type_ = self.type_

        properties = self.properties.to_dict()

        required = self.required

        additional_properties = self.additional_properties

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "title": title,
                "description": description,
                "type": type_,
                "properties": properties,
                "required": required,
                "additionalProperties": additional_properties,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        from ..models.params_schema_properties import ParamsSchemaProperties  # noqa: PLC0415

        d = dict(src_dict)
        title = d.pop("title")

        description = d.pop("description")

        type_ = cast(Literal["object"], d.pop("type"))
        if type_ != "object":
            raise ValueError(f"type must match const 'object', got '{type_}'")

        properties = ParamsSchemaProperties.from_dict(d.pop("properties"))

        required = cast(list[str], d.pop("required"))

        additional_properties = d.pop("additionalProperties")

        params_schema = cls(
            title=title,
            description=description,
            type_=type_,
            properties=properties,
            required=required,
            additional_properties=additional_properties,
        )

        return params_schema
