from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

if TYPE_CHECKING:
    from ..models.estimate import Estimate
    from ..models.params_schema import ParamsSchema


T = TypeVar("T", bound="TemplateInfo")


@_attrs_define
class TemplateInfo:
    """A template as offered by the API.

    Attributes:
        name (str): Template name.
        version (str): Semantic version.
        summary (str): One line.
        description (str): What it does.
        route (str): The route that runs it, e.g. `/v1/txt2img`.
        gpu_class (str): The GPU class jobs run on.
        gpu (str): The GPU type of that class.
        usd_per_second (str): Price of one billable second on the GPU class (GPU, CPU, memory), USD.
        estimate (Estimate): p50/p95 cost and run time measured over a template's recent succeeded jobs.
        params (ParamsSchema): The JSON Schema (2020-12) of a template's JSON request body.
        operation_id (str): The route's operationId, the SDKs' method name (`run_txt2img_v1`).
        deprecated (bool): Whether this major version is deprecated.
        deprecated_at (datetime.date | None): The day it was deprecated, if it is.
        sunset_at (datetime.date | None): The day it stops being served, if set.
        successor (None | str): The route of the newer major version, when there is one (`/v2/txt2img`).
    """

    name: str
    version: str
    summary: str
    description: str
    route: str
    gpu_class: str
    gpu: str
    usd_per_second: str
    estimate: Estimate
    params: ParamsSchema
    operation_id: str
    deprecated: bool
    deprecated_at: datetime.date | None
    sunset_at: datetime.date | None
    successor: None | str
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        name = self.name

        version = self.version

        summary = self.summary

        description = self.description

        route = self.route

        gpu_class = self.gpu_class

        gpu = self.gpu

        usd_per_second = self.usd_per_second

        estimate = self.estimate.to_dict()

        params = self.params.to_dict()

        operation_id = self.operation_id

        deprecated = self.deprecated

        deprecated_at: None | str
        if isinstance(self.deprecated_at, datetime.date):
            deprecated_at = self.deprecated_at.isoformat()
        else:
            deprecated_at = self.deprecated_at

        sunset_at: None | str
        if isinstance(self.sunset_at, datetime.date):
            sunset_at = self.sunset_at.isoformat()
        else:
            sunset_at = self.sunset_at

        successor: None | str
        successor = self.successor

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "name": name,
                "version": version,
                "summary": summary,
                "description": description,
                "route": route,
                "gpu_class": gpu_class,
                "gpu": gpu,
                "usd_per_second": usd_per_second,
                "estimate": estimate,
                "params": params,
                "operation_id": operation_id,
                "deprecated": deprecated,
                "deprecated_at": deprecated_at,
                "sunset_at": sunset_at,
                "successor": successor,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        from ..models.estimate import Estimate  # noqa: PLC0415
        from ..models.params_schema import ParamsSchema  # noqa: PLC0415

        d = dict(src_dict)
        name = d.pop("name")

        version = d.pop("version")

        summary = d.pop("summary")

        description = d.pop("description")

        route = d.pop("route")

        gpu_class = d.pop("gpu_class")

        gpu = d.pop("gpu")

        usd_per_second = d.pop("usd_per_second")

        estimate = Estimate.from_dict(d.pop("estimate"))

        params = ParamsSchema.from_dict(d.pop("params"))

        operation_id = d.pop("operation_id")

        deprecated = d.pop("deprecated")

        def _parse_deprecated_at(data: object) -> datetime.date | None:
            if data is None:
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                deprecated_at_type_0 = datetime.date.fromisoformat(data)

                return deprecated_at_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(datetime.date | None, data)

        deprecated_at = _parse_deprecated_at(d.pop("deprecated_at"))

        def _parse_sunset_at(data: object) -> datetime.date | None:
            if data is None:
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                sunset_at_type_0 = datetime.date.fromisoformat(data)

                return sunset_at_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(datetime.date | None, data)

        sunset_at = _parse_sunset_at(d.pop("sunset_at"))

        def _parse_successor(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        successor = _parse_successor(d.pop("successor"))

        template_info = cls(
            name=name,
            version=version,
            summary=summary,
            description=description,
            route=route,
            gpu_class=gpu_class,
            gpu=gpu,
            usd_per_second=usd_per_second,
            estimate=estimate,
            params=params,
            operation_id=operation_id,
            deprecated=deprecated,
            deprecated_at=deprecated_at,
            sunset_at=sunset_at,
            successor=successor,
        )

        template_info.additional_properties = d
        return template_info

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
