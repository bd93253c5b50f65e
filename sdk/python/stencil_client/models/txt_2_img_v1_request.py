from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from attrs import define as _attrs_define

from ..models.output_format import OutputFormat
from ..models.txt_2_img_v1_sampler import Txt2ImgV1Sampler
from ..models.txt_2_img_v1_scheduler import Txt2ImgV1Scheduler
from ..models.txt_2_img_v1_style import Txt2ImgV1Style
from ..types import UNSET, Unset

T = TypeVar("T", bound="Txt2ImgV1Request")


@_attrs_define
class Txt2ImgV1Request:
    """Generate images from a text prompt (SD1.5-class checkpoint) (template txt2img 1.1.0).

    Attributes:
        prompt (str): What the image should show.
        negative_prompt (str | Unset): What the image should not show. Default: `""`.
        width (int | Unset): Image width in pixels, a multiple of 8. Default: `512`.
        height (int | Unset): Image height in pixels, a multiple of 8. Default: `512`.
        steps (int | Unset): Sampling steps; more is slower and usually finer. Default: `20`.
        cfg (float | Unset): Classifier-free guidance scale; how closely to follow the prompt. Default: `7.0`.
        sampler (Txt2ImgV1Sampler | Unset):
        scheduler (Txt2ImgV1Scheduler | Unset):
        seed (int | Unset): Random seed; the same seed and params give the same image. Random when absent.
        batch_size (int | Unset): How many images to generate. Default: `1`.
        style (Txt2ImgV1Style | Unset):
        webhook_url (str | Unset): An `https://` URL that receives a signed Standard Webhooks POST when the job reaches
            a terminal state (public addresses only).
        output_format (OutputFormat | Unset): The file format of a job's output images.
        quality (int | Unset): Encoder quality for `jpeg` and `webp` (1-100, higher is larger and finer); ignored for
            `png`. Default: `90`.
    """

    prompt: str
    negative_prompt: str | Unset = UNSET
    width: int | Unset = UNSET
    height: int | Unset = UNSET
    steps: int | Unset = UNSET
    cfg: float | Unset = UNSET
    sampler: Txt2ImgV1Sampler | Unset = UNSET
    scheduler: Txt2ImgV1Scheduler | Unset = UNSET
    seed: int | Unset = UNSET
    batch_size: int | Unset = UNSET
    style: Txt2ImgV1Style | Unset = UNSET
    webhook_url: str | Unset = UNSET
    output_format: OutputFormat | Unset = UNSET
    quality: int | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        prompt = self.prompt

        negative_prompt = self.negative_prompt

        width = self.width

        height = self.height

        steps = self.steps

        cfg = self.cfg

        sampler: str | Unset = UNSET
        if not isinstance(self.sampler, Unset):
            sampler = self.sampler.value

        scheduler: str | Unset = UNSET
        if not isinstance(self.scheduler, Unset):
            scheduler = self.scheduler.value

        seed = self.seed

        batch_size = self.batch_size

        style: str | Unset = UNSET
        if not isinstance(self.style, Unset):
            style = self.style.value

        webhook_url = self.webhook_url

        output_format: str | Unset = UNSET
        if not isinstance(self.output_format, Unset):
            output_format = self.output_format.value

        quality = self.quality

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "prompt": prompt,
            }
        )
        if negative_prompt is not UNSET:
            field_dict["negative_prompt"] = negative_prompt
        if width is not UNSET:
            field_dict["width"] = width
        if height is not UNSET:
            field_dict["height"] = height
        if steps is not UNSET:
            field_dict["steps"] = steps
        if cfg is not UNSET:
            field_dict["cfg"] = cfg
        if sampler is not UNSET:
            field_dict["sampler"] = sampler
        if scheduler is not UNSET:
            field_dict["scheduler"] = scheduler
        if seed is not UNSET:
            field_dict["seed"] = seed
        if batch_size is not UNSET:
            field_dict["batch_size"] = batch_size
        if style is not UNSET:
            field_dict["style"] = style
        if webhook_url is not UNSET:
            field_dict["webhook_url"] = webhook_url
        if output_format is not UNSET:
            field_dict["output_format"] = output_format
        if quality is not UNSET:
            field_dict["quality"] = quality

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        prompt = d.pop("prompt")

        negative_prompt = d.pop("negative_prompt", UNSET)

        width = d.pop("width", UNSET)

        height = d.pop("height", UNSET)

        steps = d.pop("steps", UNSET)

        cfg = d.pop("cfg", UNSET)

        _sampler = d.pop("sampler", UNSET)
        sampler: Txt2ImgV1Sampler | Unset
        if isinstance(_sampler, Unset):
            sampler = UNSET
        else:
            sampler = Txt2ImgV1Sampler(_sampler)

        _scheduler = d.pop("scheduler", UNSET)
        scheduler: Txt2ImgV1Scheduler | Unset
        if isinstance(_scheduler, Unset):
            scheduler = UNSET
        else:
            scheduler = Txt2ImgV1Scheduler(_scheduler)

        seed = d.pop("seed", UNSET)

        batch_size = d.pop("batch_size", UNSET)

        _style = d.pop("style", UNSET)
        style: Txt2ImgV1Style | Unset
        if isinstance(_style, Unset):
            style = UNSET
        else:
            style = Txt2ImgV1Style(_style)

        webhook_url = d.pop("webhook_url", UNSET)

        _output_format = d.pop("output_format", UNSET)
        output_format: OutputFormat | Unset
        if isinstance(_output_format, Unset):
            output_format = UNSET
        else:
            output_format = OutputFormat(_output_format)

        quality = d.pop("quality", UNSET)

        txt_2_img_v1_request = cls(
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
            webhook_url=webhook_url,
            output_format=output_format,
            quality=quality,
        )

        return txt_2_img_v1_request
