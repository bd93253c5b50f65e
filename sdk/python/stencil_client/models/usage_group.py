from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

T = TypeVar("T", bound="UsageGroup")


@_attrs_define
class UsageGroup:
    """Usage totals of one group.

    Attributes:
        key (str): The group: a template, a day (`YYYY-MM-DD`), a GPU class...
        jobs (int): Jobs charged to the tenant.
        billable_seconds (float): Billable seconds charged to the tenant.
        usd (str): USD charged to the tenant (exact, six decimals).
        platform_seconds (float): Billable seconds the platform absorbed (its failures, retried attempts).
        platform_usd (str): USD the platform absorbed.
    """

    key: str
    jobs: int
    billable_seconds: float
    usd: str
    platform_seconds: float
    platform_usd: str
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        key = self.key

        jobs = self.jobs

        billable_seconds = self.billable_seconds

        usd = self.usd

        platform_seconds = self.platform_seconds

        platform_usd = self.platform_usd

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "key": key,
                "jobs": jobs,
                "billable_seconds": billable_seconds,
                "usd": usd,
                "platform_seconds": platform_seconds,
                "platform_usd": platform_usd,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        key = d.pop("key")

        jobs = d.pop("jobs")

        billable_seconds = d.pop("billable_seconds")

        usd = d.pop("usd")

        platform_seconds = d.pop("platform_seconds")

        platform_usd = d.pop("platform_usd")

        usage_group = cls(
            key=key,
            jobs=jobs,
            billable_seconds=billable_seconds,
            usd=usd,
            platform_seconds=platform_seconds,
            platform_usd=platform_usd,
        )

        usage_group.additional_properties = d
        return usage_group

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
