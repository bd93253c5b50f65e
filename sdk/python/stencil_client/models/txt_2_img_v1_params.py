from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.output_format import OutputFormat
from ..models.txt_2_img_v1_sampler import Txt2ImgV1Sampler
from ..models.txt_2_img_v1_scheduler import Txt2ImgV1Scheduler
from ..models.txt_2_img_v1_style import Txt2ImgV1Style
from ..types import UNSET, Unset

T = TypeVar("T", bound="Txt2ImgV1Params")


@_attrs_define
class Txt2ImgV1Params:
    """The params of a job of template txt2img v1, as it ran (seeds included).

    Attributes:
        prompt (str): What the image should show.
        negative_prompt (str): What the image should not show.
        width (int): Image width in pixels, a multiple of 8.
        height (int): Image height in pixels, a multiple of 8.
        steps (int): Sampling steps; more is slower and usually finer.
        cfg (float): Classifier-free guidance scale; how closely to follow the prompt.
        sampler (Txt2ImgV1Sampler):
        scheduler (Txt2ImgV1Scheduler):
        seed (int): Random seed; the same seed and params give the same image. Random when absent.
        batch_size (int): How many images to generate.
        style (Txt2ImgV1Style):
        output_format (OutputFormat | Unset): The file format of a job's output images.
        quality (int | Unset): Encoder quality for `jpeg` and `webp` (1-100, higher is larger and finer); ignored for
            `png`.
    """

    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    cfg: float
    sampler: Txt2ImgV1Sampler
    scheduler: Txt2ImgV1Scheduler
    seed: int
    batch_size: int
    style: Txt2ImgV1Style
    output_format: OutputFormat | Unset = UNSET
    quality: int | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        prompt = self.prompt

        negative_prompt = self.negative_prompt

        width = self.width

        height = self.height

        steps = self.steps

        cfg = self.cfg

        sampler = self.sampler.value

        scheduler = self.scheduler.value

        seed = self.seed

        batch_size = self.batch_size

        style = self.style.value

        output_format: str | Unset = UNSET
        if not isinstance(self.output_format, Unset):
            output_format = self.output_format.value

        quality = self.quality

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "prompt": prompt,
                "negative_prompt": negative_prompt,
                "width": width,
                "height": height,
                "steps": steps,
                "cfg": cfg,
                "sampler": sampler,
                "scheduler": scheduler,
                "seed": seed,
                "batch_size": batch_size,
                "style": style,
            }
        )
        if output_format is not UNSET:
            field_dict["output_format"] = output_format
        if quality is not UNSET:
            field_dict["quality"] = quality

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        prompt = d.pop("prompt")

        negative_prompt = d.pop("negative_prompt")

        width = d.pop("width")

        height = d.pop("height")

        steps = d.pop("steps")

        cfg = d.pop("cfg")

        sampler = Txt2ImgV1Sampler(d.pop("sampler"))

        scheduler = Txt2ImgV1Scheduler(d.pop("scheduler"))

        seed = d.pop("seed")

        batch_size = d.pop("batch_size")

        style = Txt2ImgV1Style(d.pop("style"))

        _output_format = d.pop("output_format", UNSET)
        output_format: OutputFormat | Unset
        if isinstance(_output_format, Unset):
            output_format = UNSET
        else:
            output_format = OutputFormat(_output_format)

        quality = d.pop("quality", UNSET)

        txt_2_img_v1_params = cls(
            prompt=prompt,
            negative_prompt=negative_prompt,
            width=width,
            height=height,
            steps=steps,
            cfg=cfg,
            sampler=sampler,
            scheduler=scheduler,
            seed=seed,
            batch_size=batch_size,
            style=style,
            output_format=output_format,
            quality=quality,
        )

        txt_2_img_v1_params.additional_properties = d
        return txt_2_img_v1_params

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
