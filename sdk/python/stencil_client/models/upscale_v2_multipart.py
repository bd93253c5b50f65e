from __future__ import annotations

from collections.abc import Mapping
from io import BytesIO
from typing import Any, TypeVar

from attrs import define as _attrs_define

from .. import types
from ..models.output_format import OutputFormat
from ..types import UNSET, File, Unset

T = TypeVar("T", bound="UpscaleV2Multipart")


@_attrs_define
class UpscaleV2Multipart:
    """Upscale an image 2x with a Real-ESRGAN model (template upscale 2.0.0). As `multipart/form-data`: images are file
    parts, other fields text parts.

        Attributes:
            image (File): The image to upscale (PNG, JPEG or WebP); the output is twice as wide and tall. A file part.
            webhook_url (str | Unset): An `https://` URL that receives a signed Standard Webhooks POST when the job reaches
                a terminal state (public addresses only).
            output_format (OutputFormat | Unset): The file format of a job's output images.
            quality (int | Unset): Encoder quality for `jpeg` and `webp` (1-100, higher is larger and finer); ignored for
                `png`. Default: `90`.
    """

    image: File
    webhook_url: str | Unset = UNSET
    output_format: OutputFormat | Unset = UNSET
    quality: int | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        image = self.image.to_tuple()

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

    def to_multipart(self) -> types.RequestFiles:
        files: types.RequestFiles = []

        files.append(("image", self.image.to_tuple()))

        if not isinstance(self.webhook_url, Unset):
            files.append(("webhook_url", (None, str(self.webhook_url).encode(), "text/plain")))

        if not isinstance(self.output_format, Unset):
            files.append(
                ("output_format", (None, str(self.output_format.value).encode(), "text/plain"))
            )

        if not isinstance(self.quality, Unset):
            files.append(("quality", (None, str(self.quality).encode(), "text/plain")))

        return files

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        image = File(payload=BytesIO(d.pop("image")))

        webhook_url = d.pop("webhook_url", UNSET)

        _output_format = d.pop("output_format", UNSET)
        output_format: OutputFormat | Unset
        if isinstance(_output_format, Unset):
            output_format = UNSET
        else:
            output_format = OutputFormat(_output_format)

        quality = d.pop("quality", UNSET)

        upscale_v2_multipart = cls(
            image=image,
            webhook_url=webhook_url,
            output_format=output_format,
            quality=quality,
        )

        return upscale_v2_multipart
