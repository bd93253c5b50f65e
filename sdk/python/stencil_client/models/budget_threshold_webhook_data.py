from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

T = TypeVar("T", bound="BudgetThresholdWebhookData")


@_attrs_define
class BudgetThresholdWebhookData:
    """The account event a `budget.threshold` webhook is about.

    Attributes:
        tenant (str): The tenant's name.
        month (str): The budget month, `YYYY-MM` (UTC).
        budget_usd (str): The monthly budget, USD.
        spend_usd (str): USD charged this month when the threshold was crossed.
        threshold (str): The fraction of the budget that was crossed.
        id (str): The event id (`evt_...`): `GET /v1/events/{id}`.
        object_ (Literal['event']): Always `event`.
        url (str): The event's path.
    """

    tenant: str
    month: str
    budget_usd: str
    spend_usd: str
    threshold: str
    id: str
    object_: Literal["event"]
    url: str
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        tenant = self.tenant

        month = self.month

        budget_usd = self.budget_usd

        spend_usd = self.spend_usd

        threshold = self.threshold

        id = self.id

        object_ = self.object_

        url = self.url

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "tenant": tenant,
                "month": month,
                "budget_usd": budget_usd,
                "spend_usd": spend_usd,
                "threshold": threshold,
                "id": id,
                "object": object_,
                "url": url,
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

        id = d.pop("id")

        object_ = cast(Literal["event"], d.pop("object"))
        if object_ != "event":
            raise ValueError(f"object must match const 'event', got '{object_}'")

        url = d.pop("url")

        budget_threshold_webhook_data = cls(
            tenant=tenant,
            month=month,
            budget_usd=budget_usd,
            spend_usd=spend_usd,
            threshold=threshold,
            id=id,
            object_=object_,
            url=url,
        )

        budget_threshold_webhook_data.additional_properties = d
        return budget_threshold_webhook_data

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
