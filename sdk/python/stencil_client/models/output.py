from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

T = TypeVar("T", bound="Output")


@_attrs_define
class Output:
    """One output file of a job.

    Attributes:
        url (str): Download URL, signed afresh on every read.
        expires_at (datetime.datetime): When this URL stops working; read the job again.
        content_type (str): MIME type, e.g. `image/png`.
        width (int): Width in pixels.
        height (int): Height in pixels.
        bytes_ (int): Size in bytes.
    """

    url: str
    expires_at: datetime.datetime
    content_type: str
    width: int
    height: int
    bytes_: int
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        url = self.url

        expires_at = self.expires_at.isoformat()

        content_type = self.content_type

        width = self.width

        height = self.height

        bytes_ = self.bytes_

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "url": url,
                "expires_at": expires_at,
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
        url = d.pop("url")

        expires_at = datetime.datetime.fromisoformat(d.pop("expires_at"))

        content_type = d.pop("content_type")

        width = d.pop("width")

        height = d.pop("height")

        bytes_ = d.pop("bytes")

        output = cls(
            url=url,
            expires_at=expires_at,
            content_type=content_type,
            width=width,
            height=height,
            bytes_=bytes_,
        )

        output.additional_properties = d
        return output

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
