from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from attrs import define as _attrs_define

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
    """

    image: str
    scale: float | Unset = UNSET
    method: UpscaleV1Method | Unset = UNSET
    webhook_url: str | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        image = self.image

        scale = self.scale

        method: str | Unset = UNSET
        if not isinstance(self.method, Unset):
            method = self.method.value

        webhook_url = self.webhook_url

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

        upscale_v1_request = cls(
            image=image,
            scale=scale,
            method=method,
            webhook_url=webhook_url,
        )

        return upscale_v1_request
