from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.account_event_type import AccountEventType

if TYPE_CHECKING:
    from ..models.budget_threshold_data import BudgetThresholdData
    from ..models.webhook_delivery import WebhookDelivery


T = TypeVar("T", bound="AccountEvent")


@_attrs_define
class AccountEvent:
    """Something that happened to the tenant's account (not to a job), e.g. a budget
    threshold crossed. Recorded whether or not the tenant has a webhook endpoint.

        Attributes:
            id (str): The event id (`evt_...`), also `data.id` in the webhook body.
            object_ (Literal['event']): Always `event`. Default: 'event'.
            type_ (AccountEventType): Events of a tenant's account (not of a job).
            created_at (datetime.datetime): When it happened (the charge that caused it).
            data (BudgetThresholdData): The figures of a `budget.threshold` event.
            delivery (None | WebhookDelivery): Its webhook delivery and every attempt; null when the tenant had no endpoint
                then (replay delivers it to the current one).
    """

    id: str
    type_: AccountEventType
    created_at: datetime.datetime
    data: BudgetThresholdData
    delivery: None | WebhookDelivery
    object_: Literal["event"] = "event"
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from ..models.webhook_delivery import WebhookDelivery  # noqa: PLC0415

        id = self.id

        object_ = self.object_

        type_ = self.type_.value

        created_at = self.created_at.isoformat()

        data = self.data.to_dict()

        delivery: dict[str, Any] | None
        if isinstance(self.delivery, WebhookDelivery):
            delivery = self.delivery.to_dict()
        else:
            delivery = self.delivery

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "id": id,
                "object": object_,
                "type": type_,
                "created_at": created_at,
                "data": data,
                "delivery": delivery,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        from ..models.budget_threshold_data import BudgetThresholdData  # noqa: PLC0415
        from ..models.webhook_delivery import WebhookDelivery  # noqa: PLC0415

        d = dict(src_dict)
        id = d.pop("id")

        object_ = cast(Literal["event"], d.pop("object"))
        if object_ != "event":
            raise ValueError(f"object must match const 'event', got '{object_}'")

        type_ = AccountEventType(d.pop("type"))

        created_at = datetime.datetime.fromisoformat(d.pop("created_at"))

        data = BudgetThresholdData.from_dict(d.pop("data"))

        def _parse_delivery(data: object) -> None | WebhookDelivery:
            if data is None:
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                delivery_type_0 = WebhookDelivery.from_dict(data)

                return delivery_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(None | WebhookDelivery, data)

        delivery = _parse_delivery(d.pop("delivery"))

        account_event = cls(
            id=id,
            object_=object_,
            type_=type_,
            created_at=created_at,
            data=data,
            delivery=delivery,
        )

        account_event.additional_properties = d
        return account_event

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
