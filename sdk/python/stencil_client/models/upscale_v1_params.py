from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.output_format import OutputFormat
from ..models.upscale_v1_method import UpscaleV1Method
from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.image_ref import ImageRef


T = TypeVar("T", bound="UpscaleV1Params")


@_attrs_define
class UpscaleV1Params:
    """The params of a job of template upscale v1, as it ran (seeds included).

    Attributes:
        image (ImageRef): An image input as a job records it: the sha256 of its stored bytes (`inputs` has its size and
            type).
        scale (float): The factor to scale both sides by.
        method (UpscaleV1Method):
        output_format (OutputFormat | Unset): The file format of a job's output images.
        quality (int | Unset): Encoder quality for `jpeg` and `webp` (1-100, higher is larger and finer); ignored for
            `png`.
    """

    image: ImageRef
    scale: float
    method: UpscaleV1Method
    output_format: OutputFormat | Unset = UNSET
    quality: int | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        image = self.image.to_dict()

        scale = self.scale

        method = self.method.value

        output_format: str | Unset = UNSET
        if not isinstance(self.output_format, Unset):
            output_format = self.output_format.value

        quality = self.quality

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "image": image,
                "scale": scale,
                "method": method,
            }
        )
        if output_format is not UNSET:
            field_dict["output_format"] = output_format
        if quality is not UNSET:
            field_dict["quality"] = quality

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        from ..models.image_ref import ImageRef  # noqa: PLC0415

        d = dict(src_dict)
        image = ImageRef.from_dict(d.pop("image"))

        scale = d.pop("scale")

        method = UpscaleV1Method(d.pop("method"))

        _output_format = d.pop("output_format", UNSET)
        output_format: OutputFormat | Unset
        if isinstance(_output_format, Unset):
            output_format = UNSET
        else:
            output_format = OutputFormat(_output_format)

        quality = d.pop("quality", UNSET)

        upscale_v1_params = cls(
            image=image,
            scale=scale,
            method=method,
            output_format=output_format,
            quality=quality,
        )

        upscale_v1_params.additional_properties = d
        return upscale_v1_params

    @property
    def additional_keys(self) -> list[str]:
        return list(self.additional_properties.keys())

    def __getitem__(self, key: str) -> Any:
        return self.additional_properties[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.additional_properties[key] = value

    def __delitem__(self, key: str) -> None:
        del self.additional_properties[key]

    def __contains__(self, key: str) -> bool:
        return key in self.additional_properties
