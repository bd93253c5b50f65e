from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from attrs import define as _attrs_define

from ..models.output_format import OutputFormat
from ..types import UNSET, Unset

T = TypeVar("T", bound="UpscaleV2Request")


@_attrs_define
class UpscaleV2Request:
    """Upscale an image 2x with a Real-ESRGAN model (template upscale 2.0.0).

    Attributes:
        image (str): The image to upscale (PNG, JPEG or WebP); the output is twice as wide and tall. JSON: a base64 data
            URL (`data:image/png;base64,...`) or an `https://` URL that Stencil fetches (public addresses only); multipart:
            a file part.
        webhook_url (str | Unset): An `https://` URL that receives a signed Standard Webhooks POST when the job reaches
            a terminal state (public addresses only).
        output_format (OutputFormat | Unset): The file format of a job's output images.
        quality (int | Unset): Encoder quality for `jpeg` and `webp` (1-100, higher is larger and finer); ignored for
            `png`. Default: `90`.
    """

    image: str
    webhook_url: str | Unset = UNSET
    output_format: OutputFormat | Unset = UNSET
    quality: int | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        image = self.image

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

        webhook_url = d.pop("webhook_url", UNSET)

        _output_format = d.pop("output_format", UNSET)
        output_format: OutputFormat | Unset
        if isinstance(_output_format, Unset):
            output_format = UNSET
        else:
            output_format = OutputFormat(_output_format)

        quality = d.pop("quality", UNSET)

        upscale_v2_request = cls(
            image=image,
            webhook_url=webhook_url,
            output_format=output_format,
            quality=quality,
        )

        return upscale_v2_request
