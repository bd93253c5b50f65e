"""Stencil's batching nodes: several customers' same-shape jobs in one sampling pass.

The engine builds one ComfyUI prompt for a batch of jobs that share a template and its shape
(size, steps, cfg, sampler, scheduler, model): each job keeps its own text encoders, the
conditionings are stacked on the batch axis, one sampler runs for all, and the decoded images
are split back per job. Each job's rows get exactly the noise a lone run of that job draws
(initial noise, and the per-step noise of ancestral and SDE samplers), so a job's image does
not depend on its neighbours beyond floating-point batch arithmetic.

Nodes (ids prefixed `Stencil`):

* ``StencilStackConditioning``: job conditionings ``c1..c16`` and ``rows`` ("1,2,1": how many
  images each job asked for) -> one conditioning whose row ``r`` belongs to its job. Prompts
  of different token lengths are padded to a common length by repeating their tokens, which
  cross-attention sees as the same prompt (ComfyUI batches cond and uncond the same way).
* ``StencilBatchKSampler``: ``KSampler`` for a stacked batch, with ``seeds`` and ``rows``.
* ``StencilSplitImages``: the ``index``-th job's images out of a decoded batch.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Callable, Iterator
from typing import Any

MAX_JOBS = 16
SOCKETS = [f"c{i}" for i in range(1, MAX_JOBS + 1)]
# Samplers whose per-step noise this module keeps per job; every other sampler draws no noise
# after the initial one. Others (CFG++ variants and the like) are not offered for batching.
ANCESTRAL = frozenset(
    {
        "euler_ancestral",
        "dpm_2_ancestral",
        "dpmpp_2s_ancestral",
        "ddpm",
        "lcm",
        "dpm_fast",
        "dpm_adaptive",
    }
)
SDE = frozenset(
    {
        "dpmpp_sde",
        "dpmpp_sde_gpu",
        "dpmpp_2m_sde",
        "dpmpp_2m_sde_gpu",
        "dpmpp_3m_sde",
        "dpmpp_3m_sde_gpu",
    }
)
DETERMINISTIC = frozenset(
    {
        "euler",
        "heun",
        "heunpp2",
        "dpm_2",
        "lms",
        "dpmpp_2m",
        "ipndm",
        "ipndm_v",
        "deis",
        "ddim",
        "uni_pc",
        "uni_pc_bh2",
    }
)
BATCHABLE_SAMPLERS = DETERMINISTIC | ANCESTRAL | SDE


def parse_ints(text: str, what: str) -> list[int]:
    """ "1,2,1" -> [1, 2, 1]; a ValueError naming `what` otherwise."""
    try:
        out = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{what} must be integers separated by commas, not {text!r}") from None
    if not out:
        raise ValueError(f"{what} is empty")
    return out


def row_spans(rows: list[int]) -> list[tuple[int, int]]:
    """[1, 2, 1] -> [(0, 1), (1, 3), (3, 4)]: each job's rows in the batch."""
    spans, start = [], 0
    for n in rows:
        if n < 1:
            raise ValueError("every job has at least one row")
        spans.append((start, start + n))
        start += n
    return spans


def stack_conditionings(conds: list[Any], rows: list[int]) -> Any:
    """One conditioning holding each job's, repeated for its rows, padded to one length."""
    import torch

    if len(conds) != len(rows):
        raise ValueError(f"{len(conds)} conditionings for {len(rows)} jobs")
    tensors = []
    pooled: list[Any] = []
    for cond, n in zip(conds, rows, strict=True):
        if len(cond) != 1:
            raise ValueError("each job's conditioning must be one entry (combine it first)")
        t, extra = cond[0][0], cond[0][1]
        if t.shape[0] != 1:
            raise ValueError("each job's conditioning must have a batch of one")
        tensors.append((t, n))
        pooled.append((extra.get("pooled_output"), n))
    length = math.lcm(*(t.shape[1] for t, _ in tensors))
    rows_out = [t.repeat(1, length // t.shape[1], 1).repeat(n, 1, 1) for t, n in tensors]
    extra_out: dict[str, Any] = {}
    if all(p is not None for p, _ in pooled):
        extra_out["pooled_output"] = torch.cat([p.repeat(n, 1) for p, n in pooled])
    return [[torch.cat(rows_out), extra_out]]


def job_noise(latent: Any, seeds: list[int], spans: list[tuple[int, int]]) -> Any:
    """Initial noise: each job's rows as ComfyUI's prepare_noise draws them for it alone."""
    import comfy.sample
    import torch

    return torch.cat(
        [comfy.sample.prepare_noise(latent[a:b], s) for s, (a, b) in zip(seeds, spans, strict=True)]
    )


@contextlib.contextmanager
def per_job_step_noise(seeds: list[int], spans: list[tuple[int, int]]) -> Iterator[None]:
    """While sampling, ancestral and SDE samplers draw each job's noise as for it alone."""
    import comfy.k_diffusion.sampling as kds
    import torch

    orig_default = kds.default_noise_sampler
    orig_tree = kds.BrownianTreeNoiseSampler
    takes_seed = "seed" in inspect.signature(orig_default).parameters

    def default_noise_sampler(x: Any, seed: Any = None) -> Callable[..., Any]:
        parts: list[Callable[..., Any]] = []
        for s, (a, b) in zip(seeds, spans, strict=True):
            part = x[a:b]
            if takes_seed:  # current ComfyUI: a generator seeded from the job's seed
                parts.append(orig_default(part, seed=s))
                continue
            # The 2024 copy draws from the global generator right after the initial noise
            # (drawn on the CPU from the same seed): one generator per job replays that.
            if part.device.type == "cpu":
                gen = torch.Generator(device="cpu").manual_seed(s)
                torch.randn(part.shape, dtype=torch.float32, generator=gen, device="cpu")
            else:
                gen = torch.Generator(device=part.device).manual_seed(s)

            def draw(sigma: Any, sigma_next: Any, part: Any = part, gen: Any = gen) -> Any:
                return torch.randn(
                    part.shape,
                    dtype=part.dtype,
                    layout=part.layout,
                    device=part.device,
                    generator=gen,
                )

            parts.append(draw)
        return lambda sigma, sigma_next: torch.cat([p(sigma, sigma_next) for p in parts])

    class BrownianTreeNoiseSampler:
        """One Brownian tree per job, seeded as a lone run seeds its tree."""

        def __init__(
            self, x: Any, sigma_min: Any, sigma_max: Any, seed: Any = None, **kw: Any
        ) -> None:
            self.parts = [
                orig_tree(x[a:b], sigma_min, sigma_max, seed=s, **kw)
                for s, (a, b) in zip(seeds, spans, strict=True)
            ]

        def __call__(self, sigma: Any, sigma_next: Any) -> Any:
            return torch.cat([p(sigma, sigma_next) for p in self.parts])

    kds.default_noise_sampler = default_noise_sampler
    kds.BrownianTreeNoiseSampler = BrownianTreeNoiseSampler
    try:
        yield
    finally:
        kds.default_noise_sampler = orig_default
        kds.BrownianTreeNoiseSampler = orig_tree


class StencilStackConditioning:
    """Stack jobs' conditionings on the batch axis (row r belongs to its job)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 (ComfyUI's name)
        return {
            "required": {
                "rows": ("STRING", {"default": "1", "tooltip": "Images per job: 1,2,1"}),
                "c1": ("CONDITIONING",),
            },
            "optional": {name: ("CONDITIONING",) for name in SOCKETS[1:]},
        }

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "stack"
    CATEGORY = "stencil/batch"

    def stack(self, rows: str, **conds: Any) -> tuple[Any]:
        given = [conds[k] for k in SOCKETS if conds.get(k) is not None]
        return (stack_conditionings(given, parse_ints(rows, "rows")),)


class StencilBatchKSampler:
    """KSampler for a stacked batch: each job's rows sampled with that job's own noise."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802
        import comfy.samplers

        return {
            "required": {
                "model": ("MODEL",),
                "positive": ("CONDITIONING",),
                "negative": ("CONDITIONING",),
                "latent_image": ("LATENT",),
                "seeds": ("STRING", {"default": "0", "tooltip": "One seed per job: 7,42"}),
                "rows": ("STRING", {"default": "1", "tooltip": "Images per job: 1,2"}),
                "steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
                "cfg": ("FLOAT", {"default": 7.0, "min": 0.0, "max": 100.0, "step": 0.1}),
                "sampler_name": (comfy.samplers.KSampler.SAMPLERS,),
                "scheduler": (comfy.samplers.KSampler.SCHEDULERS,),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
            }
        }

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"
    CATEGORY = "stencil/batch"

    def sample(
        self,
        model: Any,
        positive: Any,
        negative: Any,
        latent_image: dict[str, Any],
        seeds: str,
        rows: str,
        steps: int,
        cfg: float,
        sampler_name: str,
        scheduler: str,
        denoise: float = 1.0,
    ) -> tuple[dict[str, Any]]:
        import comfy.sample
        import comfy.utils
        import latent_preview

        if sampler_name not in BATCHABLE_SAMPLERS:
            raise ValueError(f"sampler {sampler_name} is not batchable")
        seed_list, row_list = parse_ints(seeds, "seeds"), parse_ints(rows, "rows")
        if len(seed_list) != len(row_list):
            raise ValueError(f"{len(seed_list)} seeds for {len(row_list)} jobs")
        latent = latent_image["samples"]
        if hasattr(comfy.sample, "fix_empty_latent_channels"):
            latent = comfy.sample.fix_empty_latent_channels(model, latent)
        spans = row_spans(row_list)
        if spans[-1][1] != latent.shape[0]:
            raise ValueError(f"rows add up to {spans[-1][1]}, the latent has {latent.shape[0]}")
        noise = job_noise(latent, seed_list, spans)
        callback = latent_preview.prepare_callback(model, steps)
        with per_job_step_noise(seed_list, spans):
            samples = comfy.sample.sample(
                model,
                noise,
                steps,
                cfg,
                sampler_name,
                scheduler,
                positive,
                negative,
                latent,
                denoise=denoise,
                noise_mask=latent_image.get("noise_mask"),
                callback=callback,
                disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED,
                seed=seed_list[0],
            )
        out = dict(latent_image)
        out["samples"] = samples
        return (out,)


class StencilSplitImages:
    """The images of one job out of a decoded batch."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802
        return {
            "required": {
                "images": ("IMAGE",),
                "rows": ("STRING", {"default": "1"}),
                "index": ("INT", {"default": 0, "min": 0, "max": MAX_JOBS - 1}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "split"
    CATEGORY = "stencil/batch"

    def split(self, images: Any, rows: str, index: int) -> tuple[Any]:
        spans = row_spans(parse_ints(rows, "rows"))
        if not 0 <= index < len(spans):
            raise ValueError(f"job {index} is not in a batch of {len(spans)}")
        a, b = spans[index]
        return (images[a:b],)


NODE_CLASS_MAPPINGS = {
    "StencilStackConditioning": StencilStackConditioning,
    "StencilBatchKSampler": StencilBatchKSampler,
    "StencilSplitImages": StencilSplitImages,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "StencilStackConditioning": "Stack conditionings (Stencil batch)",
    "StencilBatchKSampler": "KSampler for a batch of jobs (Stencil)",
    "StencilSplitImages": "Split a batch's images (Stencil)",
}
