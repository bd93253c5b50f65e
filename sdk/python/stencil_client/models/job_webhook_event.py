from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.job_webhook_event_type import JobWebhookEventType

if TYPE_CHECKING:
    from ..models.job_webhook_data import JobWebhookData


T = TypeVar("T", bound="JobWebhookEvent")


@_attrs_define
class JobWebhookEvent:
    """The body POSTed to a job's `webhook_url` when it reaches a terminal state.

    Attributes:
        type_ (JobWebhookEventType): A job's terminal state, as a webhook event type.
        timestamp (datetime.datetime): When the event was written (UTC).
        data (JobWebhookData): The job a terminal-state webhook is about.
    """

    type_: JobWebhookEventType
    timestamp: datetime.datetime
    data: JobWebhookData
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        type_ = self.type_.value

        timestamp = self.timestamp.isoformat()

        data = self.data.to_dict()

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "type": type_,
                "timestamp": timestamp,
                "data": data,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        from ..models.job_webhook_data import JobWebhookData  # noqa: PLC0415

        d = dict(src_dict)
        type_ = JobWebhookEventType(d.pop("type"))

        timestamp = datetime.datetime.fromisoformat(d.pop("timestamp"))

        data = JobWebhookData.from_dict(d.pop("data"))

        job_webhook_event = cls(
            type_=type_,
            timestamp=timestamp,
            data=data,
        )

        job_webhook_event.additional_properties = d
        return job_webhook_event

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
