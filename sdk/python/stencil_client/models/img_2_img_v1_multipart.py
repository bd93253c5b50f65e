from __future__ import annotations

from collections.abc import Mapping
from io import BytesIO
from typing import Any, TypeVar

from attrs import define as _attrs_define

from .. import types
from ..models.img_2_img_v1_sampler import Img2ImgV1Sampler
from ..models.img_2_img_v1_scheduler import Img2ImgV1Scheduler
from ..models.output_format import OutputFormat
from ..types import UNSET, File, Unset

T = TypeVar("T", bound="Img2ImgV1Multipart")


@_attrs_define
class Img2ImgV1Multipart:
    """Transform an input image guided by a text prompt (SD1.5-class checkpoint) (template img2img 1.0.0). As
    `multipart/form-data`: images are file parts, other fields text parts.

        Attributes:
            image (File): The image to start from (PNG, JPEG or WebP); the output has its size. A file part.
            prompt (str): What the image should become.
            negative_prompt (str | Unset): What the image should not show. Default: `"blurry, low quality"`.
            strength (float | Unset): How far to move from the input: near 0 keeps it, 1 ignores it. Default: `0.6`.
            seed (int | Unset): Random seed; the same seed and params give the same image. Random when absent.
            steps (int | Unset): Sampling steps; more is slower and usually finer. Default: `20`.
            cfg (float | Unset): Classifier-free guidance scale; how closely to follow the prompt. Default: `7.0`.
            sampler (Img2ImgV1Sampler | Unset):
            scheduler (Img2ImgV1Scheduler | Unset):
            webhook_url (str | Unset): An `https://` URL that receives a signed Standard Webhooks POST when the job reaches
                a terminal state (public addresses only).
            output_format (OutputFormat | Unset): The file format of a job's output images.
            quality (int | Unset): Encoder quality for `jpeg` and `webp` (1-100, higher is larger and finer); ignored for
                `png`. Default: `90`.
    """

    image: File
    prompt: str
    negative_prompt: str | Unset = UNSET
    strength: float | Unset = UNSET
    seed: int | Unset = UNSET
    steps: int | Unset = UNSET
    cfg: float | Unset = UNSET
    sampler: Img2ImgV1Sampler | Unset = UNSET
    scheduler: Img2ImgV1Scheduler | Unset = UNSET
    webhook_url: str | Unset = UNSET
    output_format: OutputFormat | Unset = UNSET
    quality: int | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        image = self.image.to_tuple()

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

    def to_multipart(self) -> types.RequestFiles:
        files: types.RequestFiles = []

        files.append(("image", self.image.to_tuple()))

        files.append(("prompt", (None, str(self.prompt).encode(), "text/plain")))

        if not isinstance(self.negative_prompt, Unset):
            files.append(
                ("negative_prompt", (None, str(self.negative_prompt).encode(), "text/plain"))
            )

        if not isinstance(self.strength, Unset):
            files.append(("strength", (None, str(self.strength).encode(), "text/plain")))

        if not isinstance(self.seed, Unset):
            files.append(("seed", (None, str(self.seed).encode(), "text/plain")))

        if not isinstance(self.steps, Unset):
            files.append(("steps", (None, str(self.steps).encode(), "text/plain")))

        if not isinstance(self.cfg, Unset):
            files.append(("cfg", (None, str(self.cfg).encode(), "text/plain")))

        if not isinstance(self.sampler, Unset):
            files.append(("sampler", (None, str(self.sampler.value).encode(), "text/plain")))

        if not isinstance(self.scheduler, Unset):
            files.append(("scheduler", (None, str(self.scheduler.value).encode(), "text/plain")))

        if not isinstance(self.webhook_url, Unset):
            files.append(("webhook_url", (None, str(self.webhook_url).encode(), "text/plain")))

        if not isinstance(self.output_format, Unset):
            files.append(
                ("output_format", (None, str(self.output_format.value).encode(), "text/plain"))
            )

        if not isinstance(self.quality, Unset):
            files.append(("quality", (None, str(self.quality).encode(), "text/plain")))

        return files

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        image = File(payload=BytesIO(d.pop("image")))

        prompt = d.pop("prompt")

        negative_prompt = d.pop("negative_prompt", UNSET)

        strength = d.pop("strength", UNSET)

        seed = d.pop("seed", UNSET)

        steps = d.pop("steps", UNSET)

        cfg = d.pop("cfg", UNSET)

        _sampler = d.pop("sampler", UNSET)
        sampler: Img2ImgV1Sampler | Unset
        if isinstance(_sampler, Unset):
            sampler = UNSET
        else:
            sampler = Img2ImgV1Sampler(_sampler)

        _scheduler = d.pop("scheduler", UNSET)
        scheduler: Img2ImgV1Scheduler | Unset
        if isinstance(_scheduler, Unset):
            scheduler = UNSET
        else:
            scheduler = Img2ImgV1Scheduler(_scheduler)

        webhook_url = d.pop("webhook_url", UNSET)

        _output_format = d.pop("output_format", UNSET)
        output_format: OutputFormat | Unset
        if isinstance(_output_format, Unset):
            output_format = UNSET
        else:
            output_format = OutputFormat(_output_format)

        quality = d.pop("quality", UNSET)

        img_2_img_v1_multipart = cls(
            image=image,
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

        return img_2_img_v1_multipart
