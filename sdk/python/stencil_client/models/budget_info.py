from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

T = TypeVar("T", bound="BudgetInfo")


@_attrs_define
class BudgetInfo:
    """A tenant's monthly budget and its spend this month.

    Attributes:
        month (str): The budget month, `YYYY-MM` (UTC).
        budget_usd (str): The monthly budget, USD.
        spend_usd (str): USD charged so far this month.
        threshold (None | str): Fraction of the budget that raises an event.
        over_budget (bool): True when new submissions are refused (402).
    """

    month: str
    budget_usd: str
    spend_usd: str
    threshold: None | str
    over_budget: bool
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        month = self.month

        budget_usd = self.budget_usd

        spend_usd = self.spend_usd

        threshold: None | str
        threshold = self.threshold

        over_budget = self.over_budget

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "month": month,
                "budget_usd": budget_usd,
                "spend_usd": spend_usd,
                "threshold": threshold,
                "over_budget": over_budget,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        month = d.pop("month")

        budget_usd = d.pop("budget_usd")

        spend_usd = d.pop("spend_usd")

        def _parse_threshold(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        threshold = _parse_threshold(d.pop("threshold"))

        over_budget = d.pop("over_budget")

        budget_info = cls(
            month=month,
            budget_usd=budget_usd,
            spend_usd=spend_usd,
            threshold=threshold,
            over_budget=over_budget,
        )

        budget_info.additional_properties = d
        return budget_info

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
