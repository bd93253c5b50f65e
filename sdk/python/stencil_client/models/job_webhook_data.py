from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.job_status import JobStatus
from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.batch import Batch
    from ..models.problem import Problem
    from ..models.webhook_output import WebhookOutput


T = TypeVar("T", bound="JobWebhookData")


@_attrs_define
class JobWebhookData:
    """The job a terminal-state webhook is about.

    Attributes:
        id (str): The job id.
        object_ (Literal['job']): Always `job`.
        status (JobStatus): Where a job is: queued, running, then one terminal state.
        template (str): Template name.
        template_version (str): Exact template version that ran.
        error (None | Problem): Why the job failed; null unless it failed.
        outputs (list[WebhookOutput]): The outputs; empty unless it succeeded.
        created_at (datetime.datetime): When the job was accepted.
        finished_at (datetime.datetime | None): When it reached its terminal state.
        url (str): The job's path: `GET` it for output URLs signed now.
        batch (Batch | None | Unset): The batch the job's last attempt ran in (its id and size: the billable seconds
            were split among its jobs); null when it ran alone.
    """

    id: str
    object_: Literal["job"]
    status: JobStatus
    template: str
    template_version: str
    error: None | Problem
    outputs: list[WebhookOutput]
    created_at: datetime.datetime
    finished_at: datetime.datetime | None
    url: str
    batch: Batch | None | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from ..models.batch import Batch  # noqa: PLC0415
        from ..models.problem import Problem  # noqa: PLC0415

        id = self.id

        object_ = self.object_

        status = self.status.value

        template = self.template

        template_version = self.template_version

        error: dict[str, Any] | None
        if isinstance(self.error, Problem):
            error = self.error.to_dict()
        else:
            error = self.error

        outputs = []
        for outputs_item_data in self.outputs:
            outputs_item = outputs_item_data.to_dict()
            outputs.append(outputs_item)

        created_at = self.created_at.isoformat()

        finished_at: None | str
        if isinstance(self.finished_at, datetime.datetime):
            finished_at = self.finished_at.isoformat()
        else:
            finished_at = self.finished_at

        url = self.url

        batch: dict[str, Any] | None | Unset
        if isinstance(self.batch, Unset):
            batch = UNSET
        elif isinstance(self.batch, Batch):
            batch = self.batch.to_dict()
        else:
            batch = self.batch

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "id": id,
                "object": object_,
                "status": status,
                "template": template,
                "template_version": template_version,
                "error": error,
                "outputs": outputs,
                "created_at": created_at,
                "finished_at": finished_at,
                "url": url,
            }
        )
        if batch is not UNSET:
            field_dict["batch"] = batch

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        from ..models.batch import Batch  # noqa: PLC0415
        from ..models.problem import Problem  # noqa: PLC0415
        from ..models.webhook_output import WebhookOutput  # noqa: PLC0415

        d = dict(src_dict)
        id = d.pop("id")

        object_ = cast(Literal["job"], d.pop("object"))
        if object_ != "job":
            raise ValueError(f"object must match const 'job', got '{object_}'")

        status = JobStatus(d.pop("status"))

        template = d.pop("template")

        template_version = d.pop("template_version")

        def _parse_error(data: object) -> None | Problem:
            if data is None:
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                error_type_0 = Problem.from_dict(data)

                return error_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(None | Problem, data)

        error = _parse_error(d.pop("error"))

        outputs = []
        _outputs = d.pop("outputs")
        for outputs_item_data in _outputs:
            outputs_item = WebhookOutput.from_dict(outputs_item_data)

            outputs.append(outputs_item)

        created_at = datetime.datetime.fromisoformat(d.pop("created_at"))

        def _parse_finished_at(data: object) -> datetime.datetime | None:
            if data is None:
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                finished_at_type_0 = datetime.datetime.fromisoformat(data)

                return finished_at_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(datetime.datetime | None, data)

        finished_at = _parse_finished_at(d.pop("finished_at"))

        url = d.pop("url")

        def _parse_batch(data: object) -> Batch | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                batch_type_0 = Batch.from_dict(data)

                return batch_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(Batch | None | Unset, data)

        batch = _parse_batch(d.pop("batch", UNSET))

        job_webhook_data = cls(
            id=id,
            object_=object_,
            status=status,
            template=template,
            template_version=template_version,
            error=error,
            outputs=outputs,
            created_at=created_at,
            finished_at=finished_at,
            url=url,
            batch=batch,
        )

        job_webhook_data.additional_properties = d
        return job_webhook_data

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
