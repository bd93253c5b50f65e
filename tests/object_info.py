"""A hand-written `/object_info` in both dialects, with the core nodes the catalog uses."""

from __future__ import annotations

from typing import Any

SAMPLERS = ["euler", "euler_ancestral", "heun", "dpmpp_2m", "dpmpp_2m_sde", "ddim", "uni_pc"]
SCHEDULERS = ["normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform"]
METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
CKPT = "v1-5-pruned-emaonly-fp16.safetensors"
LORA = "pokemon-lora-sd15.bin"
ESRGAN = "RealESRGAN_x2plus.pth"


def combo(options: list[str], new: bool) -> list[Any]:
    return ["COMBO", {"options": options, "multiselect": False}] if new else [options, {}]


def engine(new: bool, **over: Any) -> dict[str, Any]:
    """An /object_info with the core nodes the shipped templates use."""

    def node(required: dict[str, Any], outputs: int, **extra: Any) -> dict[str, Any]:
        return {"input": {"required": required}, "output": ["X"] * outputs, **extra}

    info = {
        "CheckpointLoaderSimple": node({"ckpt_name": combo([CKPT], new)}, 3),
        "CLIPTextEncode": node({"text": ["STRING", {"multiline": True}], "clip": ["CLIP"]}, 1),
        "EmptyLatentImage": node(
            {
                "width": ["INT", {"default": 512, "min": 16, "max": 16384}],
                "height": ["INT", {"default": 512, "min": 16, "max": 16384}],
                "batch_size": ["INT", {"default": 1, "min": 1, "max": 4096}],
            },
            1,
        ),
        "KSampler": node(
            {
                "model": ["MODEL"],
                "seed": ["INT", {"min": 0, "max": 0xFFFFFFFFFFFFFFFF}],
                "steps": ["INT", {"min": 1, "max": 10000}],
                "cfg": ["FLOAT", {"min": 0.0, "max": 100.0}],
                "sampler_name": combo(SAMPLERS, new),
                "scheduler": combo(SCHEDULERS, new),
                "positive": ["CONDITIONING"],
                "negative": ["CONDITIONING"],
                "latent_image": ["LATENT"],
                "denoise": ["FLOAT", {"min": 0.0, "max": 1.0}],
            },
            1,
        ),
        "VAEDecode": node({"samples": ["LATENT"], "vae": ["VAE"]}, 1),
        "SaveImage": node({"images": ["IMAGE"], "filename_prefix": ["STRING", {}]}, 0),
        "LoadImage": node({"image": combo(["example.png"], new)}, 2),
        "ImageScaleBy": node(
            {
                "image": ["IMAGE"],
                "upscale_method": combo(METHODS, new),
                "scale_by": ["FLOAT", {"min": 0.01, "max": 8.0}],
            },
            1,
        ),
        "LoraLoader": node(
            {
                "model": ["MODEL"],
                "clip": ["CLIP"],
                "lora_name": combo([LORA], new),
                "strength_model": ["FLOAT", {"min": -100.0, "max": 100.0}],
                "strength_clip": ["FLOAT", {"min": -100.0, "max": 100.0}],
            },
            2,
        ),
        "VAEEncode": node({"pixels": ["IMAGE"], "vae": ["VAE"]}, 1),
        "LoadImageMask": node(
            {"image": combo(["mask.png"], new), "channel": combo(["alpha", "red"], new)}, 1
        ),
        "SetLatentNoiseMask": node({"samples": ["LATENT"], "mask": ["MASK"]}, 1),
        "UpscaleModelLoader": node({"model_name": combo([ESRGAN], new)}, 1),
        "ImageUpscaleWithModel": node({"upscale_model": ["UPSCALE_MODEL"], "image": ["IMAGE"]}, 1),
    }
    info.update(over)
    return info
