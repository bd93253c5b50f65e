from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

T = TypeVar("T", bound="BudgetThresholdData")


@_attrs_define
class BudgetThresholdData:
    """The figures of a `budget.threshold` event.

    Attributes:
        tenant (str): The tenant's name.
        month (str): The budget month, `YYYY-MM` (UTC).
        budget_usd (str): The monthly budget, USD.
        spend_usd (str): USD charged this month when the threshold was crossed.
        threshold (str): The fraction of the budget that was crossed.
    """

    tenant: str
    month: str
    budget_usd: str
    spend_usd: str
    threshold: str
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        tenant = self.tenant

        month = self.month

        budget_usd = self.budget_usd

        spend_usd = self.spend_usd

        threshold = self.threshold

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "tenant": tenant,
                "month": month,
                "budget_usd": budget_usd,
                "spend_usd": spend_usd,
                "threshold": threshold,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        tenant = d.pop("tenant")

        month = d.pop("month")

        budget_usd = d.pop("budget_usd")

        spend_usd = d.pop("spend_usd")

        threshold = d.pop("threshold")

        budget_threshold_data = cls(
            tenant=tenant,
            month=month,
            budget_usd=budget_usd,
            spend_usd=spend_usd,
            threshold=threshold,
        )

        budget_threshold_data.additional_properties = d
        return budget_threshold_data

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
