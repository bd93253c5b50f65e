from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.usage_group_by import UsageGroupBy

if TYPE_CHECKING:
    from ..models.budget_info import BudgetInfo
    from ..models.usage_group import UsageGroup


T = TypeVar("T", bound="Usage")


@_attrs_define
class Usage:
    """Usage from the ledger over [start, end), grouped.

    Attributes:
        object_ (Literal['usage']): Always `usage`. Default: 'usage'.
        start (datetime.datetime): Start of the range (inclusive, UTC).
        end (datetime.datetime): End of the range (exclusive, UTC).
        group_by (UsageGroupBy): How usage totals are grouped; `tenant` is for the admin report only.
        tenant (None | str): The tenant, or null for all tenants (admin).
        data (list[UsageGroup]): One entry per group, sorted by key.
        total (UsageGroup): Usage totals of one group.
        budget (BudgetInfo | None): The tenant's budget, when it has one.
    """

    start: datetime.datetime
    end: datetime.datetime
    group_by: UsageGroupBy
    tenant: None | str
    data: list[UsageGroup]
    total: UsageGroup
    budget: BudgetInfo | None
    object_: Literal["usage"] = "usage"
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from ..models.budget_info import BudgetInfo  # noqa: PLC0415

        object_ = self.object_

        start = self.start.isoformat()

        end = self.end.isoformat()

        group_by = self.group_by.value

        tenant: None | str
        tenant = self.tenant

        data = []
        for data_item_data in self.data:
            data_item = data_item_data.to_dict()
            data.append(data_item)

        total = self.total.to_dict()

        budget: dict[str, Any] | None
        if isinstance(self.budget, BudgetInfo):
            budget = self.budget.to_dict()
        else:
            budget = self.budget

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "object": object_,
                "start": start,
                "end": end,
                "group_by": group_by,
                "tenant": tenant,
                "data": data,
                "total": total,
                "budget": budget,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        from ..models.budget_info import BudgetInfo  # noqa: PLC0415
        from ..models.usage_group import UsageGroup  # noqa: PLC0415

        d = dict(src_dict)
        object_ = cast(Literal["usage"], d.pop("object"))
        if object_ != "usage":
            raise ValueError(f"object must match const 'usage', got '{object_}'")

        start = datetime.datetime.fromisoformat(d.pop("start"))

        end = datetime.datetime.fromisoformat(d.pop("end"))

        group_by = UsageGroupBy(d.pop("group_by"))

        def _parse_tenant(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        tenant = _parse_tenant(d.pop("tenant"))

        data = []
        _data = d.pop("data")
        for data_item_data in _data:
            data_item = UsageGroup.from_dict(data_item_data)

            data.append(data_item)

        total = UsageGroup.from_dict(d.pop("total"))

        def _parse_budget(data: object) -> BudgetInfo | None:
            if data is None:
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                budget_type_0 = BudgetInfo.from_dict(data)

                return budget_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(BudgetInfo | None, data)

        budget = _parse_budget(d.pop("budget"))

        usage = cls(
            object_=object_,
            start=start,
            end=end,
            group_by=group_by,
            tenant=tenant,
            data=data,
            total=total,
            budget=budget,
        )

        usage.additional_properties = d
        return usage

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
