"""Write deterministic random-weight models of real architectures for tests and demos.

Kinds: an SD1.5 checkpoint (below), a LoRA over its attention layers, a 2x ESRGAN upscaler.

No model weights can be downloaded in CI, yet the real ComfyUI pipeline (checkpoint detection,
CLIP, UNet sampling, VAE decode, SaveImage) must run end to end.  This module builds the three
networks with ComfyUI's own classes -- a full CLIP-L text encoder and SD VAE, plus a one-level
UNet that model detection still classifies as SD1.5 -- fills them with seeded random weights and
saves an fp16 safetensors file that core ``CheckpointLoaderSimple`` loads as MODEL, CLIP and VAE.

Importing ComfyUI parses ``sys.argv`` and configures global state, so the generator always runs
as a subprocess (``python -m engine.catalog.synth``); ``synth_checkpoint`` is the in-process
entry point.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import inspect
import json
import logging
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from engine.catalog.models import sha256_file, synthetic_sidecar

logger = logging.getLogger(__name__)

SYNTH_FORMAT = "stencil-sd15-tiny/1"
# Everything model detection reads to pick SD15: model_channels 320, context_dim 768, no linear
# proj_in, no ADM; depth (a single level with one res block and one transformer) is read from
# the file, which keeps the UNet ~50M parameters instead of 860M.
TINY_UNET_CONFIG: dict[str, Any] = {
    "use_checkpoint": False,
    "image_size": 32,
    "use_spatial_transformer": True,
    "legacy": False,
    "adm_in_channels": None,
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 320,
    "num_res_blocks": [1],
    "transformer_depth": [1],
    "transformer_depth_output": [1, 1],
    "channel_mult": [1],
    "transformer_depth_middle": 1,
    "use_linear_in_transformer": False,
    "context_dim": 768,
    "use_temporal_resblock": False,
    "use_temporal_attention": False,
}


# The released SD1.5 UNet (860M parameters): four levels of two res blocks, attention on the
# first three. Same cost per step as the real checkpoint, for GPU benchmarks (`sd15_full`).
FULL_UNET_CONFIG: dict[str, Any] = {
    **TINY_UNET_CONFIG,
    "image_size": 64,
    "num_res_blocks": [2, 2, 2, 2],
    "channel_mult": [1, 2, 4, 4],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
}
UNET_CONFIGS = {"sd15": TINY_UNET_CONFIG, "sd15_full": FULL_UNET_CONFIG}


class SynthError(RuntimeError):
    """The checkpoint generator subprocess failed."""


def _import_comfy(comfyui_path: Path) -> None:
    """Make ComfyUI importable without letting it parse our command line."""
    # comfy/cli_args.py runs argparse at import time; hand it a clean argv forcing CPU so that
    # building the (meta-device) models never touches a GPU.
    sys.argv = [sys.argv[0], "--cpu"]
    root = str(comfyui_path.resolve())
    if root not in sys.path:
        sys.path.insert(0, root)
    import comfy.options

    comfy.options.enable_args_parsing()


def _init_tensor(name: str, shape: Sequence[int], gen: Any) -> Any:
    """Seeded init that keeps activations O(1): norms at identity, fan-in scaled weights."""
    import torch

    if len(shape) == 1 and name.endswith(".weight"):
        return torch.ones(shape)  # GroupNorm/LayerNorm scales
    if len(shape) <= 1:
        return torch.zeros(shape)  # biases
    fan_in = math.prod(shape[1:])
    std = 1.0 / math.sqrt(max(fan_in, 1))
    return torch.randn(tuple(shape), generator=gen) * std


def _layout(unet: dict[str, Any] = TINY_UNET_CONFIG) -> dict[str, Any]:
    """The checkpoint's tensors as meta tensors: exact names and shapes, nothing allocated."""
    import comfy.sd1_clip
    import comfy.supported_models
    import torch
    from comfy.ldm.models.autoencoder import AutoencoderKL

    model_config = comfy.supported_models.SD15(dict(unet))
    ddconfig = {
        "double_z": True,
        "z_channels": 4,
        "resolution": 256,
        "in_channels": 3,
        "out_ch": 3,
        "ch": 128,
        "ch_mult": [1, 2, 4, 4],
        "num_res_blocks": 2,
        "attn_resolutions": [],
        "dropout": 0.0,
    }
    # The meta device gives us exact key names and shapes without allocating 900 MB.
    # no_grad: CLIP's constructor copies an identity into text_projection in place.
    with torch.device("meta"), torch.no_grad():
        model = model_config.get_model({}, device=torch.device("meta"))
        clip = comfy.sd1_clip.SD1ClipModel(device=torch.device("meta"))
        vae = AutoencoderKL(ddconfig=ddconfig, embed_dim=4)
    clip_sd = dict(clip.state_dict())
    vae_sd = dict(vae.state_dict())
    # Current ComfyUI takes the UNet's state dict first; the 2024 copy reads it itself.
    if "unet_state_dict" in inspect.signature(model.state_dict_for_saving).parameters:
        unet_sd = dict(model.diffusion_model.state_dict())
        layout: dict[str, Any] = model.state_dict_for_saving(unet_sd, clip_sd, vae_sd)
    else:
        layout = model.state_dict_for_saving(clip_sd, vae_sd)
    return layout


def build_state_dict(seed: int, unet: dict[str, Any] = TINY_UNET_CONFIG) -> dict[str, Any]:
    """Build the checkpoint state dict (original SD key layout, fp16) from ComfyUI's classes."""
    import comfy.model_detection
    import comfy.supported_models
    import torch

    layout = _layout(unet)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    out: dict[str, Any] = {}
    for name in sorted(layout):  # sorted: generation order (hence bytes) independent of dicts
        meta = layout[name]
        if meta.dtype in (torch.int64, torch.int32):
            # position_ids style buffers must hold real indices, not noise
            out[name] = torch.arange(meta.numel(), dtype=meta.dtype).reshape(meta.shape)
            continue
        out[name] = _init_tensor(name, list(meta.shape), gen).to(torch.float16).contiguous()

    detected = comfy.model_detection.model_config_from_unet(out, "model.diffusion_model.")
    if not isinstance(detected, comfy.supported_models.SD15):
        raise SynthError(f"model detection did not classify the checkpoint as SD15: {detected}")
    return out


LORA_RANK = 4
_UNET_PREFIX = "model.diffusion_model."
_CLIP_PREFIX = "cond_stage_model.transformer."
_ATTN = re.compile(r"\.(attn[12]\.to_(q|k|v|out\.0)|self_attn\.(q|k|v|out)_proj)\.weight$")


def build_lora_state_dict(seed: int) -> dict[str, Any]:
    """A rank-4 LoRA (kohya key names) over every attention projection of the checkpoint.

    ComfyUI maps `lora_unet_<path>` and `lora_te_<path>` (dots as underscores) onto the UNet and
    CLIP weights of the same path, in the 2024 copy and current releases alike.
    """
    import torch

    gen = torch.Generator(device="cpu").manual_seed(seed)
    out: dict[str, Any] = {}
    for name, meta in sorted(_layout().items()):
        if not _ATTN.search(name) or len(meta.shape) != 2:
            continue
        if name.startswith(_UNET_PREFIX):
            key = "lora_unet_" + name[len(_UNET_PREFIX) : -len(".weight")].replace(".", "_")
        elif name.startswith(_CLIP_PREFIX):
            key = "lora_te_" + name[len(_CLIP_PREFIX) : -len(".weight")].replace(".", "_")
        else:
            continue
        rows, cols = int(meta.shape[0]), int(meta.shape[1])
        # up @ down has entries of about 0.5/sqrt(cols): a clear, bounded change of the image
        down = torch.randn((LORA_RANK, cols), generator=gen) / math.sqrt(cols)
        up = torch.randn((rows, LORA_RANK), generator=gen) * (0.5 / math.sqrt(LORA_RANK))
        out[f"{key}.lora_down.weight"] = down.to(torch.float16).contiguous()
        out[f"{key}.lora_up.weight"] = up.to(torch.float16).contiguous()
        out[f"{key}.alpha"] = torch.tensor(float(LORA_RANK), dtype=torch.float16)
    if not out:
        raise SynthError("found no attention weights to build a LoRA for")
    return out


# A 2x Real-ESRGAN as RealESRGAN_x2plus is laid out (RRDB behind a 2x pixel-unshuffle, the
# "new" key names conv_first/body/conv_up), kept small (both loaders assume 32 growth
# channels); ComfyUI's loaders (spandrel today, the
# 2024 copy's own) read the architecture, scale and sizes from the weights.
ESRGAN_FILTERS, ESRGAN_GROWTH, ESRGAN_BLOCKS, ESRGAN_SCALE = 16, 32, 1, 2


def esrgan_shapes() -> dict[str, tuple[int, ...]]:
    """Names and shapes of the small 2x Real-ESRGAN's weights."""
    nf, gc = ESRGAN_FILTERS, ESRGAN_GROWTH
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name: str, cout: int, cin: int) -> None:
        shapes[f"{name}.weight"] = (cout, cin, 3, 3)
        shapes[f"{name}.bias"] = (cout,)

    conv("conv_first", nf, 3 * ESRGAN_SCALE * ESRGAN_SCALE)  # pixel-unshuffled input
    for b in range(ESRGAN_BLOCKS):
        for r in (1, 2, 3):
            for i in range(1, 5):
                conv(f"body.{b}.rdb{r}.conv{i}", gc, nf + (i - 1) * gc)
            conv(f"body.{b}.rdb{r}.conv5", nf, nf + 4 * gc)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        conv(name, nf, nf)
    conv("conv_last", 3, nf)
    return shapes


def build_esrgan_state_dict(seed: int) -> dict[str, Any]:
    """Random weights for the small 2x Real-ESRGAN; outputs sit around mid-grey, not black."""
    import torch

    gen = torch.Generator(device="cpu").manual_seed(seed)
    out: dict[str, Any] = {}
    for name, shape in esrgan_shapes().items():
        value = _init_tensor(name, list(shape), gen)
        if name == "conv_last.bias":
            value = torch.full(shape, 0.5)
        out[name] = value.to(torch.float32).contiguous()
    return out


KINDS: dict[str, tuple[str, str]] = {
    # kind: (format, architecture)
    "sd15": (SYNTH_FORMAT, "SD1.5 tiny UNet, CLIP-L, VAE"),
    # Not a catalog kind: `python -m engine.catalog.synth --kind sd15_full` for GPU benchmarks.
    "sd15_full": ("stencil-sd15-full/1", "SD1.5 full UNet (860M), CLIP-L, VAE"),
    "lora_sd15": ("stencil-lora-sd15/1", f"rank-{LORA_RANK} LoRA over SD1.5 attention"),
    "esrgan": (
        "stencil-esrgan-x2/1",
        f"ESRGAN x{ESRGAN_SCALE}, {ESRGAN_FILTERS} filters, {ESRGAN_BLOCKS} RRDB",
    ),
}


def write_checkpoint(out: Path, *, comfyui_path: Path, seed: int, kind: str = "sd15") -> Path:
    """Generate and save a model of `kind` plus its sidecar (runs inside the subprocess)."""
    _import_comfy(comfyui_path)
    import torch
    from safetensors.torch import save_file

    fmt, arch = KINDS[kind]
    torch.manual_seed(seed)
    started = time.monotonic()
    if kind in UNET_CONFIGS:
        state = build_state_dict(seed, UNET_CONFIGS[kind])
    elif kind == "lora_sd15":
        state = build_lora_state_dict(seed)
    else:
        state = build_esrgan_state_dict(seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    # A single metadata key: safetensors writes the metadata map in hash order, so several keys
    # would make the file bytes (and sha256) differ from run to run.
    info = {"format": fmt, "seed": seed, "architecture": arch}
    try:
        if out.suffix == ".safetensors":
            metadata = {"stencil_synthetic": json.dumps(info, sort_keys=True)}
            save_file(state, str(tmp), metadata=metadata)
        else:  # .pth/.pt/.bin: ComfyUI reads these with torch.load (weights only)
            torch.save(state, str(tmp))
        os.chmod(tmp, 0o644)  # safetensors creates 0600; the file is shared, not secret
        digest = sha256_file(tmp)
        sidecar = {
            "synthetic": True,
            "random_weights": True,
            "note": "random weights for tests; produces noise, not images of anything",
            "format": fmt,
            "kind": kind,
            "seed": seed,
            "sha256": digest,
            "bytes": tmp.stat().st_size,
            "parameters": int(sum(t.numel() for t in state.values())),
            "torch": torch.__version__,
            "comfyui": str(comfyui_path.resolve()),
        }
        synthetic_sidecar(out).write_text(json.dumps(sidecar, indent=2) + "\n")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("wrote %s (%d tensors) in %.1fs", out, len(state), time.monotonic() - started)
    return out


@contextlib.contextmanager
def _lock(out: Path) -> Iterator[None]:
    """One generator at a time per output file (parallel test workers share the cache)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    # Lock in the temp dir keyed by path, so models folders only ever hold models.
    key = hashlib.sha256(str(out).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"stencil-synth-{key}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def synth_checkpoint(
    out: Path,
    *,
    comfyui_path: Path,
    python: str = sys.executable,
    seed: int = 0,
    kind: str = "sd15",
) -> Path:
    """Create a random-weight model of `kind` at `out` via a subprocess, unless it exists."""
    if kind not in KINDS:
        raise SynthError(f"no synthetic form for {kind!r} (known: {', '.join(KINDS)})")
    out = Path(out).absolute()
    with _lock(out):
        if out.exists():
            return out
        repo_root = Path(__file__).resolve().parents[2]
        env = dict(os.environ)
        # `-m engine.catalog.synth` must resolve to this very file outside an installed package.
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(repo_root), env.get("PYTHONPATH", "")) if p
        )
        cmd = [
            python,
            "-m",
            "engine.catalog.synth",
            "--comfyui",
            str(Path(comfyui_path).absolute()),
            "--out",
            str(out),
            "--seed",
            str(seed),
            "--kind",
            kind,
        ]
        started = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0 or not out.exists():
            tail = "\n".join(((proc.stdout or "") + (proc.stderr or "")).splitlines()[-30:])
            raise SynthError(f"engine.catalog.synth failed (exit {proc.returncode}):\n{tail}")
        logger.info("synthesised %s in %.1fs", out, time.monotonic() - started)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point:
    ``python -m engine.catalog.synth --comfyui PATH --out FILE --seed N``."""
    parser = argparse.ArgumentParser(prog="python -m engine.catalog.synth", description=__doc__)
    parser.add_argument("--comfyui", type=Path, required=True, help="ComfyUI folder")
    parser.add_argument("--out", type=Path, required=True, help="safetensors file to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kind", choices=sorted(KINDS), default="sd15")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    write_checkpoint(args.out.absolute(), comfyui_path=args.comfyui, seed=args.seed, kind=args.kind)
    return 0


if __name__ == "__main__":
    sys.exit(main())
