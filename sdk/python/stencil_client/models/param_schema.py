from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, cast

from attrs import define as _attrs_define

from ..models.param_schema_type import ParamSchemaType
from ..types import UNSET, Unset

T = TypeVar("T", bound="ParamSchema")


@_attrs_define
class ParamSchema:
    """The JSON Schema of one request field (keywords a template's params can use).

    Attributes:
        type_ (ParamSchemaType): The JSON type.
        description (str): What the field is.
        examples (list[bool | float | int | str]): An example value.
        default (bool | float | int | str | Unset): The value when absent.
        enum (list[str] | Unset): The allowed values.
        minimum (float | int | Unset): Smallest allowed value.
        maximum (float | int | Unset): Largest allowed value.
        multiple_of (float | int | Unset): The value is a multiple of this.
        min_length (int | Unset): Fewest characters.
        max_length (int | Unset): Most characters.
        content_media_type (str | Unset): For images: `image/*`.
    """

    type_: ParamSchemaType
    description: str
    examples: list[bool | float | int | str]
    default: bool | float | int | str | Unset = UNSET
    enum: list[str] | Unset = UNSET
    minimum: float | int | Unset = UNSET
    maximum: float | int | Unset = UNSET
    multiple_of: float | int | Unset = UNSET
    min_length: int | Unset = UNSET
    max_length: int | Unset = UNSET
    content_media_type: str | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        type_ = self.type_.value

        description = self.description

        examples = []
        for examples_item_data in self.examples:
            examples_item: bool | float | int | str
            examples_item = examples_item_data
            examples.append(examples_item)

        default: bool | float | int | str | Unset
        if isinstance(self.default, Unset):
            default = UNSET
        else:
            default = self.default

        enum: list[str] | Unset = UNSET
        if not isinstance(self.enum, Unset):
            enum = self.enum

        minimum: float | int | Unset
        if isinstance(self.minimum, Unset):
            minimum = UNSET
        else:
            minimum = self.minimum

        maximum: float | int | Unset
        if isinstance(self.maximum, Unset):
            maximum = UNSET
        else:
            maximum = self.maximum

        multiple_of: float | int | Unset
        if isinstance(self.multiple_of, Unset):
            multiple_of = UNSET
        else:
            multiple_of = self.multiple_of

        min_length = self.min_length

        max_length = self.max_length

        content_media_type = self.content_media_type

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "type": type_,
                "description": description,
                "examples": examples,
            }
        )
        if default is not UNSET:
            field_dict["default"] = default
        if enum is not UNSET:
            field_dict["enum"] = enum
        if minimum is not UNSET:
            field_dict["minimum"] = minimum
        if maximum is not UNSET:
            field_dict["maximum"] = maximum
        if multiple_of is not UNSET:
            field_dict["multipleOf"] = multiple_of
        if min_length is not UNSET:
            field_dict["minLength"] = min_length
        if max_length is not UNSET:
            field_dict["maxLength"] = max_length
        if content_media_type is not UNSET:
            field_dict["contentMediaType"] = content_media_type

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        type_ = ParamSchemaType(d.pop("type"))

        description = d.pop("description")

        examples = []
        _examples = d.pop("examples")
        for examples_item_data in _examples:

            def _parse_examples_item(data: object) -> bool | float | int | str:
                return cast(bool | float | int | str, data)

            examples_item = _parse_examples_item(examples_item_data)

            examples.append(examples_item)

        def _parse_default(data: object) -> bool | float | int | str | Unset:
            if isinstance(data, Unset):
                return data
            return cast(bool | float | int | str | Unset, data)

        default = _parse_default(d.pop("default", UNSET))

        enum = cast(list[str], d.pop("enum", UNSET))

        def _parse_minimum(data: object) -> float | int | Unset:
            if isinstance(data, Unset):
                return data
            return cast(float | int | Unset, data)

        minimum = _parse_minimum(d.pop("minimum", UNSET))

        def _parse_maximum(data: object) -> float | int | Unset:
            if isinstance(data, Unset):
                return data
            return cast(float | int | Unset, data)

        maximum = _parse_maximum(d.pop("maximum", UNSET))

        def _parse_multiple_of(data: object) -> float | int | Unset:
            if isinstance(data, Unset):
                return data
            return cast(float | int | Unset, data)

        multiple_of = _parse_multiple_of(d.pop("multipleOf", UNSET))

        min_length = d.pop("minLength", UNSET)

        max_length = d.pop("maxLength", UNSET)

        content_media_type = d.pop("contentMediaType", UNSET)

        param_schema = cls(
            type_=type_,
            description=description,
            examples=examples,
            default=default,
            enum=enum,
            minimum=minimum,
            maximum=maximum,
            multiple_of=multiple_of,
            min_length=min_length,
            max_length=max_length,
            content_media_type=content_media_type,
        )

        return param_schema
