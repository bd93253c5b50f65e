from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from attrs import define as _attrs_define

from ..models.output_format import OutputFormat
from ..models.upscale_v1_method import UpscaleV1Method
from ..types import UNSET, Unset

T = TypeVar("T", bound="UpscaleV1Request")


@_attrs_define
class UpscaleV1Request:
    """Upscale an image by a factor with a classic resampling filter (template upscale 1.0.0).

    Attributes:
        image (str): The image to upscale (PNG, JPEG or WebP). JSON: a base64 data URL (`data:image/png;base64,...`) or
            an `https://` URL that Stencil fetches (public addresses only); multipart: a file part.
        scale (float | Unset): The factor to scale both sides by. Default: `2.0`.
        method (UpscaleV1Method | Unset):
        webhook_url (str | Unset): An `https://` URL that receives a signed Standard Webhooks POST when the job reaches
            a terminal state (public addresses only).
        output_format (OutputFormat | Unset): The file format of a job's output images.
        quality (int | Unset): Encoder quality for `jpeg` and `webp` (1-100, higher is larger and finer); ignored for
            `png`. Default: `90`.
    """

    image: str
    scale: float | Unset = UNSET
    method: UpscaleV1Method | Unset = UNSET
    webhook_url: str | Unset = UNSET
    output_format: OutputFormat | Unset = UNSET
    quality: int | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        image = self.image

        scale = self.scale

        method: str | Unset = UNSET
        if not isinstance(self.method, Unset):
            method = self.method.value

        webhook_url = self.webhook_url

        output_format: str | Unset = UNSET
        if not isinstance(self.output_format, Unset):
            output_format = self.output_format.value

        quality = self.quality

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "image": image,
            }
        )
        if scale is not UNSET:
            field_dict["scale"] = scale
        if method is not UNSET:
            field_dict["method"] = method
        if webhook_url is not UNSET:
            field_dict["webhook_url"] = webhook_url
        if output_format is not UNSET:
            field_dict["output_format"] = output_format
        if quality is not UNSET:
            field_dict["quality"] = quality

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        image = d.pop("image")

        scale = d.pop("scale", UNSET)

        _method = d.pop("method", UNSET)
        method: UpscaleV1Method | Unset
        if isinstance(_method, Unset):
            method = UNSET
        else:
            method = UpscaleV1Method(_method)

        webhook_url = d.pop("webhook_url", UNSET)

        _output_format = d.pop("output_format", UNSET)
        output_format: OutputFormat | Unset
        if isinstance(_output_format, Unset):
            output_format = UNSET
        else:
            output_format = OutputFormat(_output_format)

        quality = d.pop("quality", UNSET)

        upscale_v1_request = cls(
            image=image,
            scale=scale,
            method=method,
            webhook_url=webhook_url,
            output_format=output_format,
            quality=quality,
        )

        return upscale_v1_request
