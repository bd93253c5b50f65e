from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

T = TypeVar("T", bound="Estimate")


@_attrs_define
class Estimate:
    """p50/p95 cost and run time measured over a template's recent succeeded jobs.

    Attributes:
        sample_size (int): How many recent succeeded jobs were measured.
        note (str): `no data yet`, or what the figures were measured from.
        usd_p50 (None | str): Median cost per job, USD.
        usd_p95 (None | str): 95th percentile cost per job, USD.
        run_seconds_p50 (float | None): Median run time (worker span), s.
        run_seconds_p95 (float | None): 95th percentile run time, s.
    """

    sample_size: int
    note: str
    usd_p50: None | str
    usd_p95: None | str
    run_seconds_p50: float | None
    run_seconds_p95: float | None
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        sample_size = self.sample_size

        note = self.note

        usd_p50: None | str
        usd_p50 = self.usd_p50

        usd_p95: None | str
        usd_p95 = self.usd_p95

        run_seconds_p50: float | None
        run_seconds_p50 = self.run_seconds_p50

        run_seconds_p95: float | None
        run_seconds_p95 = self.run_seconds_p95

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "sample_size": sample_size,
                "note": note,
                "usd_p50": usd_p50,
                "usd_p95": usd_p95,
                "run_seconds_p50": run_seconds_p50,
                "run_seconds_p95": run_seconds_p95,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        sample_size = d.pop("sample_size")

        note = d.pop("note")

        def _parse_usd_p50(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        usd_p50 = _parse_usd_p50(d.pop("usd_p50"))

        def _parse_usd_p95(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        usd_p95 = _parse_usd_p95(d.pop("usd_p95"))

        def _parse_run_seconds_p50(data: object) -> float | None:
            if data is None:
                return data
            return cast(float | None, data)

        run_seconds_p50 = _parse_run_seconds_p50(d.pop("run_seconds_p50"))

        def _parse_run_seconds_p95(data: object) -> float | None:
            if data is None:
                return data
            return cast(float | None, data)

        run_seconds_p95 = _parse_run_seconds_p95(d.pop("run_seconds_p95"))

        estimate = cls(
            sample_size=sample_size,
            note=note,
            usd_p50=usd_p50,
            usd_p95=usd_p95,
            run_seconds_p50=run_seconds_p50,
            run_seconds_p95=run_seconds_p95,
        )

        estimate.additional_properties = d
        return estimate

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
