from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.job_event_type import JobEventType

if TYPE_CHECKING:
    from ..models.job import Job


T = TypeVar("T", bound="JobEvent")


@_attrs_define
class JobEvent:
    """One event of `GET /v1/jobs/{id}/events`: the JSON in its `data`.

    The SSE `event` field is `type` and the SSE `id` field is `id`; the last event of a
    stream is the job's terminal state.

        Attributes:
            id (int): The event's position in the job's life, also its SSE `id`: it only grows. Send the last one seen as
                `Last-Event-ID` to resume after it.
            type_ (JobEventType): What an event of a job's stream says: a state entered, or progress while running.
            job (Job): A job: one call of a template.
    """

    id: int
    type_: JobEventType
    job: Job
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        id = self.id

        type_ = self.type_.value

        job = self.job.to_dict()

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "id": id,
                "type": type_,
                "job": job,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        from ..models.job import Job  # noqa: PLC0415

        d = dict(src_dict)
        id = d.pop("id")

        type_ = JobEventType(d.pop("type"))

        job = Job.from_dict(d.pop("job"))

        job_event = cls(
            id=id,
            type_=type_,
            job=job,
        )

        job_event.additional_properties = d
        return job_event

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
