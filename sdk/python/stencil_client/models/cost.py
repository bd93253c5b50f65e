from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.charged_to import ChargedTo

T = TypeVar("T", bound="Cost")


@_attrs_define
class Cost:
    """What the job cost, priced when it finished at the rate then in force.

    Attributes:
        gpu_class (str): The catalog GPU class the job was priced at.
        gpu_type (str): The GPU type it ran on.
        billable_seconds (float): Billable seconds (whole milliseconds).
        usd (str): USD charged to the tenant, six decimals (exact, a string).
        rate (str): USD per billable second used (GPU, CPU and memory).
        charged_to (ChargedTo): Who pays for a job.
        platform_usd (str): USD the platform absorbed for this job (its failures, retried attempts).
    """

    gpu_class: str
    gpu_type: str
    billable_seconds: float
    usd: str
    rate: str
    charged_to: ChargedTo
    platform_usd: str
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        gpu_class = self.gpu_class

        gpu_type = self.gpu_type

        billable_seconds = self.billable_seconds

        usd = self.usd

        rate = self.rate

        charged_to = self.charged_to.value

        platform_usd = self.platform_usd

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "gpu_class": gpu_class,
                "gpu_type": gpu_type,
                "billable_seconds": billable_seconds,
                "usd": usd,
                "rate": rate,
                "charged_to": charged_to,
                "platform_usd": platform_usd,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        gpu_class = d.pop("gpu_class")

        gpu_type = d.pop("gpu_type")

        billable_seconds = d.pop("billable_seconds")

        usd = d.pop("usd")

        rate = d.pop("rate")

        charged_to = ChargedTo(d.pop("charged_to"))

        platform_usd = d.pop("platform_usd")

        cost = cls(
            gpu_class=gpu_class,
            gpu_type=gpu_type,
            billable_seconds=billable_seconds,
            usd=usd,
            rate=rate,
            charged_to=charged_to,
            platform_usd=platform_usd,
        )

        cost.additional_properties = d
        return cost

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
