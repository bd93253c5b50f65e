from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.img_2_img_v1_sampler import Img2ImgV1Sampler
from ..models.img_2_img_v1_scheduler import Img2ImgV1Scheduler
from ..models.output_format import OutputFormat
from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.image_ref import ImageRef


T = TypeVar("T", bound="Img2ImgV1Params")


@_attrs_define
class Img2ImgV1Params:
    """The params of a job of template img2img v1, as it ran (seeds included).

    Attributes:
        image (ImageRef): An image input as a job records it: the sha256 of its stored bytes (`inputs` has its size and
            type).
        prompt (str): What the image should become.
        negative_prompt (str): What the image should not show.
        strength (float): How far to move from the input: near 0 keeps it, 1 ignores it.
        seed (int): Random seed; the same seed and params give the same image. Random when absent.
        steps (int): Sampling steps; more is slower and usually finer.
        cfg (float): Classifier-free guidance scale; how closely to follow the prompt.
        sampler (Img2ImgV1Sampler):
        scheduler (Img2ImgV1Scheduler):
        output_format (OutputFormat | Unset): The file format of a job's output images.
        quality (int | Unset): Encoder quality for `jpeg` and `webp` (1-100, higher is larger and finer); ignored for
            `png`.
    """

    image: ImageRef
    prompt: str
    negative_prompt: str
    strength: float
    seed: int
    steps: int
    cfg: float
    sampler: Img2ImgV1Sampler
    scheduler: Img2ImgV1Scheduler
    output_format: OutputFormat | Unset = UNSET
    quality: int | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        image = self.image.to_dict()

        prompt = self.prompt

        negative_prompt = self.negative_prompt

        strength = self.strength

        seed = self.seed

        steps = self.steps

        cfg = self.cfg

        sampler = self.sampler.value

        scheduler = self.scheduler.value

        output_format: str | Unset = UNSET
        if not isinstance(self.output_format, Unset):
            output_format = self.output_format.value

        quality = self.quality

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "image": image,
                "prompt": prompt,
                "negative_prompt": negative_prompt,
                "strength": strength,
                "seed": seed,
                "steps": steps,
                "cfg": cfg,
                "sampler": sampler,
                "scheduler": scheduler,
            }
        )
        if output_format is not UNSET:
            field_dict["output_format"] = output_format
        if quality is not UNSET:
            field_dict["quality"] = quality

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        from ..models.image_ref import ImageRef  # noqa: PLC0415

        d = dict(src_dict)
        image = ImageRef.from_dict(d.pop("image"))

        prompt = d.pop("prompt")

        negative_prompt = d.pop("negative_prompt")

        strength = d.pop("strength")

        seed = d.pop("seed")

        steps = d.pop("steps")

        cfg = d.pop("cfg")

        sampler = Img2ImgV1Sampler(d.pop("sampler"))

        scheduler = Img2ImgV1Scheduler(d.pop("scheduler"))

        _output_format = d.pop("output_format", UNSET)
        output_format: OutputFormat | Unset
        if isinstance(_output_format, Unset):
            output_format = UNSET
        else:
            output_format = OutputFormat(_output_format)

        quality = d.pop("quality", UNSET)

        img_2_img_v1_params = cls(
            image=image,
            prompt=prompt,
            negative_prompt=negative_prompt,
            strength=strength,
            seed=seed,
            steps=steps,
            cfg=cfg,
            sampler=sampler,
            scheduler=scheduler,
            output_format=output_format,
            quality=quality,
        )

        img_2_img_v1_params.additional_properties = d
        return img_2_img_v1_params

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
