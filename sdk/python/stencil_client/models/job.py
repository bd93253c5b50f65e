from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.job_status import JobStatus

if TYPE_CHECKING:
    from ..models.batch import Batch
    from ..models.cost import Cost
    from ..models.img_2_img_v1_params import Img2ImgV1Params
    from ..models.inpaint_v1_params import InpaintV1Params
    from ..models.job_inputs import JobInputs
    from ..models.metering import Metering
    from ..models.output import Output
    from ..models.problem import Problem
    from ..models.retired_template_params import RetiredTemplateParams
    from ..models.timings import Timings
    from ..models.txt_2_img_v1_params import Txt2ImgV1Params
    from ..models.upscale_v1_params import UpscaleV1Params
    from ..models.upscale_v2_params import UpscaleV2Params


T = TypeVar("T", bound="Job")


@_attrs_define
class Job:
    """A job: one call of a template.

    Attributes:
        id (str): The job id.
        object_ (Literal['job']): Always `job`. Default: 'job'.
        template (str): Template name.
        template_version (str): Exact template version that ran.
        status (JobStatus): Where a job is: queued, running, then one terminal state.
        progress (float): 0 to 1.
        params (Img2ImgV1Params | InpaintV1Params | RetiredTemplateParams | Txt2ImgV1Params | UpscaleV1Params |
            UpscaleV2Params): Params as run, including the seed used: the `{Template}V{major}Params` schema of the job's
            template version.
        inputs (JobInputs): Media inputs by param name, as stored: sha256, content type, size.
        graph_hash (str): sha256 of the rendered graph, for reproducibility.
        comfyui_version (None | str): The ComfyUI version that ran the job.
        outputs (list[Output]): Output files; present once succeeded.
        error (None | Problem): Why the job failed, as a problem.
        created_at (datetime.datetime): When the job was accepted.
        started_at (datetime.datetime | None): When a worker started it.
        finished_at (datetime.datetime | None): When it reached a terminal state.
        timings (Timings): How long the job waited and ran, in seconds.
        metering (Metering | None): Worker-measured seconds of the last attempt; present once it ran.
        cost (Cost | None): The priced charge; present once the job is settled.
        batch (Batch | None): The batch the job's last attempt ran in, when it shared its prompt with other jobs
            (docs/batching.md); null when it ran alone.
        webhook_url (None | str): Where the signed terminal-state webhook goes, if anywhere.
        events_url (str): This job's Server-Sent Event stream with a signed `token`, for a browser's `EventSource`
            (which cannot send `Authorization`); valid for this job only, for `STENCIL_STREAM_URL_TTL_S` seconds from this
            response.
    """

    id: str
    template: str
    template_version: str
    status: JobStatus
    progress: float
    params: (
        Img2ImgV1Params
        | InpaintV1Params
        | RetiredTemplateParams
        | Txt2ImgV1Params
        | UpscaleV1Params
        | UpscaleV2Params
    )
    inputs: JobInputs
    graph_hash: str
    comfyui_version: None | str
    outputs: list[Output]
    error: None | Problem
    created_at: datetime.datetime
    started_at: datetime.datetime | None
    finished_at: datetime.datetime | None
    timings: Timings
    metering: Metering | None
    cost: Cost | None
    batch: Batch | None
    webhook_url: None | str
    events_url: str
    object_: Literal["job"] = "job"
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from ..models.batch import Batch  # noqa: PLC0415
        from ..models.cost import Cost  # noqa: PLC0415
        from ..models.img_2_img_v1_params import Img2ImgV1Params  # noqa: PLC0415
        from ..models.inpaint_v1_params import InpaintV1Params  # noqa: PLC0415
        from ..models.metering import Metering  # noqa: PLC0415
        from ..models.problem import Problem  # noqa: PLC0415
        from ..models.txt_2_img_v1_params import Txt2ImgV1Params  # noqa: PLC0415
        from ..models.upscale_v1_params import UpscaleV1Params  # noqa: PLC0415
        from ..models.upscale_v2_params import UpscaleV2Params  # noqa: PLC0415

        id = self.id

        object_ = self.object_

        template = self.template

        template_version = self.template_version

        status = self.status.value

        progress = self.progress

        params: dict[str, Any]
        if isinstance(self.params, Txt2ImgV1Params):
            params = self.params.to_dict()
        elif isinstance(self.params, InpaintV1Params):
            params = self.params.to_dict()
        elif isinstance(self.params, Img2ImgV1Params):
            params = self.params.to_dict()
        elif isinstance(self.params, UpscaleV1Params):
            params = self.params.to_dict()
        elif isinstance(self.params, UpscaleV2Params):
            params = self.params.to_dict()
        else:
            params = self.params.to_dict()

        inputs = self.inputs.to_dict()

        graph_hash = self.graph_hash

        comfyui_version: None | str
        comfyui_version = self.comfyui_version

        outputs = []
        for outputs_item_data in self.outputs:
            outputs_item = outputs_item_data.to_dict()
            outputs.append(outputs_item)

        error: dict[str, Any] | None
        if isinstance(self.error, Problem):
            error = self.error.to_dict()
        else:
            error = self.error

        created_at = self.created_at.isoformat()

        started_at: None | str
        if isinstance(self.started_at, datetime.datetime):
            started_at = self.started_at.isoformat()
        else:
            started_at = self.started_at

        finished_at: None | str
        if isinstance(self.finished_at, datetime.datetime):
            finished_at = self.finished_at.isoformat()
        else:
            finished_at = self.finished_at

        timings = self.timings.to_dict()

        metering: dict[str, Any] | None
        if isinstance(self.metering, Metering):
            metering = self.metering.to_dict()
        else:
            metering = self.metering

        cost: dict[str, Any] | None
        if isinstance(self.cost, Cost):
            cost = self.cost.to_dict()
        else:
            cost = self.cost

        batch: dict[str, Any] | None
        if isinstance(self.batch, Batch):
            batch = self.batch.to_dict()
        else:
            batch = self.batch

        webhook_url: None | str
        webhook_url = self.webhook_url

        events_url = self.events_url

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "id": id,
                "object": object_,
                "template": template,
                "template_version": template_version,
                "status": status,
                "progress": progress,
                "params": params,
                "inputs": inputs,
                "graph_hash": graph_hash,
                "comfyui_version": comfyui_version,
                "outputs": outputs,
                "error": error,
                "created_at": created_at,
                "started_at": started_at,
                "finished_at": finished_at,
                "timings": timings,
                "metering": metering,
                "cost": cost,
                "batch": batch,
                "webhook_url": webhook_url,
                "events_url": events_url,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        from ..models.batch import Batch  # noqa: PLC0415
        from ..models.cost import Cost  # noqa: PLC0415
        from ..models.img_2_img_v1_params import Img2ImgV1Params  # noqa: PLC0415
        from ..models.inpaint_v1_params import InpaintV1Params  # noqa: PLC0415
        from ..models.job_inputs import JobInputs  # noqa: PLC0415
        from ..models.metering import Metering  # noqa: PLC0415
        from ..models.output import Output  # noqa: PLC0415
        from ..models.problem import Problem  # noqa: PLC0415
        from ..models.retired_template_params import RetiredTemplateParams  # noqa: PLC0415
        from ..models.timings import Timings  # noqa: PLC0415
        from ..models.txt_2_img_v1_params import Txt2ImgV1Params  # noqa: PLC0415
        from ..models.upscale_v1_params import UpscaleV1Params  # noqa: PLC0415
        from ..models.upscale_v2_params import UpscaleV2Params  # noqa: PLC0415

        d = dict(src_dict)
        id = d.pop("id")

        object_ = cast(Literal["job"], d.pop("object"))
        if object_ != "job":
            raise ValueError(f"object must match const 'job', got '{object_}'")

        template = d.pop("template")

        template_version = d.pop("template_version")

        status = JobStatus(d.pop("status"))

        progress = d.pop("progress")

        def _parse_params(
            data: object,
        ) -> (
            Img2ImgV1Params
            | InpaintV1Params
            | RetiredTemplateParams
            | Txt2ImgV1Params
            | UpscaleV1Params
            | UpscaleV2Params
        ):
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                params_type_0 = Txt2ImgV1Params.from_dict(data)

                return params_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                params_type_1 = InpaintV1Params.from_dict(data)

                return params_type_1
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                params_type_2 = Img2ImgV1Params.from_dict(data)

                return params_type_2
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                params_type_3 = UpscaleV1Params.from_dict(data)

                return params_type_3
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                params_type_4 = UpscaleV2Params.from_dict(data)

                return params_type_4
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            if not isinstance(data, dict):
                raise TypeError()
            params_type_5 = RetiredTemplateParams.from_dict(data)

            return params_type_5

        params = _parse_params(d.pop("params"))

        inputs = JobInputs.from_dict(d.pop("inputs"))

        graph_hash = d.pop("graph_hash")

        def _parse_comfyui_version(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        comfyui_version = _parse_comfyui_version(d.pop("comfyui_version"))

        outputs = []
        _outputs = d.pop("outputs")
        for outputs_item_data in _outputs:
            outputs_item = Output.from_dict(outputs_item_data)

            outputs.append(outputs_item)

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

        created_at = datetime.datetime.fromisoformat(d.pop("created_at"))

        def _parse_started_at(data: object) -> datetime.datetime | None:
            if data is None:
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                started_at_type_0 = datetime.datetime.fromisoformat(data)

                return started_at_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(datetime.datetime | None, data)

        started_at = _parse_started_at(d.pop("started_at"))

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

        timings = Timings.from_dict(d.pop("timings"))

        def _parse_metering(data: object) -> Metering | None:
            if data is None:
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                metering_type_0 = Metering.from_dict(data)

                return metering_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(Metering | None, data)

        metering = _parse_metering(d.pop("metering"))

        def _parse_cost(data: object) -> Cost | None:
            if data is None:
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                cost_type_0 = Cost.from_dict(data)

                return cost_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(Cost | None, data)

        cost = _parse_cost(d.pop("cost"))

        def _parse_batch(data: object) -> Batch | None:
            if data is None:
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                batch_type_0 = Batch.from_dict(data)

                return batch_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(Batch | None, data)

        batch = _parse_batch(d.pop("batch"))

        def _parse_webhook_url(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        webhook_url = _parse_webhook_url(d.pop("webhook_url"))

        events_url = d.pop("events_url")

        job = cls(
            id=id,
            object_=object_,
            template=template,
            template_version=template_version,
            status=status,
            progress=progress,
            params=params,
            inputs=inputs,
            graph_hash=graph_hash,
            comfyui_version=comfyui_version,
            outputs=outputs,
            error=error,
            created_at=created_at,
            started_at=started_at,
            finished_at=finished_at,
            timings=timings,
            metering=metering,
            cost=cost,
            batch=batch,
            webhook_url=webhook_url,
            events_url=events_url,
        )

        job.additional_properties = d
        return job

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
