from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

T = TypeVar("T", bound="WebhookOutput")


@_attrs_define
class WebhookOutput:
    """One output of a finished job, without its URL (read the job for a fresh one).

    Attributes:
        content_type (str): MIME type, e.g. `image/png`.
        width (int): Width in pixels.
        height (int): Height in pixels.
        bytes_ (int): Size in bytes.
    """

    content_type: str
    width: int
    height: int
    bytes_: int
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        content_type = self.content_type

        width = self.width

        height = self.height

        bytes_ = self.bytes_

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "content_type": content_type,
                "width": width,
                "height": height,
                "bytes": bytes_,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        content_type = d.pop("content_type")

        width = d.pop("width")

        height = d.pop("height")

        bytes_ = d.pop("bytes")

        webhook_output = cls(
            content_type=content_type,
            width=width,
            height=height,
            bytes_=bytes_,
        )

        webhook_output.additional_properties = d
        return webhook_output

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
