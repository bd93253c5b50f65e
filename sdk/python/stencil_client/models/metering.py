from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

T = TypeVar("T", bound="Metering")


@_attrs_define
class Metering:
    """What the worker measured with its own monotonic clock (see docs/costs.md).

    Attributes:
        queue_seconds (float): From acceptance to a worker taking the job.
        cold_start (bool): Whether this job paid a cold start.
        cold_start_seconds (float): Container start or restore, engine restart and model load this job paid.
        execution_seconds (float): From ComfyUI starting the prompt to its end (cold model load included).
        upload_seconds (float): Fetching and storing the outputs.
        billable_seconds (float): Container time the job held its GPU; what the job is priced on.
    """

    queue_seconds: float
    cold_start: bool
    cold_start_seconds: float
    execution_seconds: float
    upload_seconds: float
    billable_seconds: float
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        queue_seconds = self.queue_seconds

        cold_start = self.cold_start

        cold_start_seconds = self.cold_start_seconds

        execution_seconds = self.execution_seconds

        upload_seconds = self.upload_seconds

        billable_seconds = self.billable_seconds

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "queue_seconds": queue_seconds,
                "cold_start": cold_start,
                "cold_start_seconds": cold_start_seconds,
                "execution_seconds": execution_seconds,
                "upload_seconds": upload_seconds,
                "billable_seconds": billable_seconds,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        queue_seconds = d.pop("queue_seconds")

        cold_start = d.pop("cold_start")

        cold_start_seconds = d.pop("cold_start_seconds")

        execution_seconds = d.pop("execution_seconds")

        upload_seconds = d.pop("upload_seconds")

        billable_seconds = d.pop("billable_seconds")

        metering = cls(
            queue_seconds=queue_seconds,
            cold_start=cold_start,
            cold_start_seconds=cold_start_seconds,
            execution_seconds=execution_seconds,
            upload_seconds=upload_seconds,
            billable_seconds=billable_seconds,
        )

        metering.additional_properties = d
        return metering

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
