from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

T = TypeVar("T", bound="Timings")


@_attrs_define
class Timings:
    """How long the job waited and ran, in seconds.

    Attributes:
        queue_seconds (float | None): From creation to start.
        run_seconds (float | None): From start to finish.
        total_seconds (float | None): From creation to finish.
    """

    queue_seconds: float | None
    run_seconds: float | None
    total_seconds: float | None
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        queue_seconds: float | None
        queue_seconds = self.queue_seconds

        run_seconds: float | None
        run_seconds = self.run_seconds

        total_seconds: float | None
        total_seconds = self.total_seconds

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "queue_seconds": queue_seconds,
                "run_seconds": run_seconds,
                "total_seconds": total_seconds,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)

        def _parse_queue_seconds(data: object) -> float | None:
            if data is None:
                return data
            return cast(float | None, data)

        queue_seconds = _parse_queue_seconds(d.pop("queue_seconds"))

        def _parse_run_seconds(data: object) -> float | None:
            if data is None:
                return data
            return cast(float | None, data)

        run_seconds = _parse_run_seconds(d.pop("run_seconds"))

        def _parse_total_seconds(data: object) -> float | None:
            if data is None:
                return data
            return cast(float | None, data)

        total_seconds = _parse_total_seconds(d.pop("total_seconds"))

        timings = cls(
            queue_seconds=queue_seconds,
            run_seconds=run_seconds,
            total_seconds=total_seconds,
        )

        timings.additional_properties = d
        return timings

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
