from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from attrs import define as _attrs_define

from ..models.inpaint_v1_sampler import InpaintV1Sampler
from ..models.inpaint_v1_scheduler import InpaintV1Scheduler
from ..models.output_format import OutputFormat
from ..types import UNSET, Unset

T = TypeVar("T", bound="InpaintV1Request")


@_attrs_define
class InpaintV1Request:
    """Repaint the masked part of an image from a text prompt (SD1.5-class checkpoint) (template inpaint 1.0.0).

    Attributes:
        image (str): The image to repaint (PNG, JPEG or WebP); the output has its size. JSON: a base64 data URL
            (`data:image/png;base64,...`) or an `https://` URL that Stencil fetches (public addresses only); multipart: a
            file part.
        mask (str): Where to repaint: white (the red channel) is repainted, black is kept; the image's size. JSON: a
            base64 data URL (`data:image/png;base64,...`) or an `https://` URL that Stencil fetches (public addresses only);
            multipart: a file part.
        prompt (str): What the masked part should show.
        negative_prompt (str | Unset): What the image should not show. Default: `"blurry, low quality"`.
        strength (float | Unset): How much the masked part may change: near 0 keeps it, 1 replaces it. Default: `0.9`.
        seed (int | Unset): Random seed; the same seed and params give the same image. Random when absent.
        steps (int | Unset): Sampling steps; more is slower and usually finer. Default: `20`.
        cfg (float | Unset): Classifier-free guidance scale; how closely to follow the prompt. Default: `7.0`.
        sampler (InpaintV1Sampler | Unset):
        scheduler (InpaintV1Scheduler | Unset):
        webhook_url (str | Unset): An `https://` URL that receives a signed Standard Webhooks POST when the job reaches
            a terminal state (public addresses only).
        output_format (OutputFormat | Unset): The file format of a job's output images.
        quality (int | Unset): Encoder quality for `jpeg` and `webp` (1-100, higher is larger and finer); ignored for
            `png`. Default: `90`.
    """

    image: str
    mask: str
    prompt: str
    negative_prompt: str | Unset = UNSET
    strength: float | Unset = UNSET
    seed: int | Unset = UNSET
    steps: int | Unset = UNSET
    cfg: float | Unset = UNSET
    sampler: InpaintV1Sampler | Unset = UNSET
    scheduler: InpaintV1Scheduler | Unset = UNSET
    webhook_url: str | Unset = UNSET
    output_format: OutputFormat | Unset = UNSET
    quality: int | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        image = self.image

        mask = self.mask

        prompt = self.prompt

        negative_prompt = self.negative_prompt

        strength = self.strength

        seed = self.seed

        steps = self.steps

        cfg = self.cfg

        sampler: str | Unset = UNSET
        if not isinstance(self.sampler, Unset):
            sampler = self.sampler.value

        scheduler: str | Unset = UNSET
        if not isinstance(self.scheduler, Unset):
            scheduler = self.scheduler.value

        webhook_url = self.webhook_url

        output_format: str | Unset = UNSET
        if not isinstance(self.output_format, Unset):
            output_format = self.output_format.value

        quality = self.quality

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "image": image,
                "mask": mask,
                "prompt": prompt,
            }
        )
        if negative_prompt is not UNSET:
            field_dict["negative_prompt"] = negative_prompt
        if strength is not UNSET:
            field_dict["strength"] = strength
        if seed is not UNSET:
            field_dict["seed"] = seed
        if steps is not UNSET:
            field_dict["steps"] = steps
        if cfg is not UNSET:
            field_dict["cfg"] = cfg
        if sampler is not UNSET:
            field_dict["sampler"] = sampler
        if scheduler is not UNSET:
            field_dict["scheduler"] = scheduler
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
        image = d.pop("image")

        mask = d.pop("mask")

        prompt = d.pop("prompt")

        negative_prompt = d.pop("negative_prompt", UNSET)

        strength = d.pop("strength", UNSET)

        seed = d.pop("seed", UNSET)

        steps = d.pop("steps", UNSET)

        cfg = d.pop("cfg", UNSET)

        _sampler = d.pop("sampler", UNSET)
        sampler: InpaintV1Sampler | Unset
        if isinstance(_sampler, Unset):
            sampler = UNSET
        else:
            sampler = InpaintV1Sampler(_sampler)

        _scheduler = d.pop("scheduler", UNSET)
        scheduler: InpaintV1Scheduler | Unset
        if isinstance(_scheduler, Unset):
            scheduler = UNSET
        else:
            scheduler = InpaintV1Scheduler(_scheduler)

        webhook_url = d.pop("webhook_url", UNSET)

        _output_format = d.pop("output_format", UNSET)
        output_format: OutputFormat | Unset
        if isinstance(_output_format, Unset):
            output_format = UNSET
        else:
            output_format = OutputFormat(_output_format)

        quality = d.pop("quality", UNSET)

        inpaint_v1_request = cls(
            image=image,
            mask=mask,
            prompt=prompt,
            negative_prompt=negative_prompt,
            strength=strength,
            seed=seed,
            steps=steps,
            cfg=cfg,
            sampler=sampler,
            scheduler=scheduler,
            webhook_url=webhook_url,
            output_format=output_format,
            quality=quality,
        )

        return inpaint_v1_request
