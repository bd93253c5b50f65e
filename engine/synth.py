"""Write a deterministic random-weight SD1.5-architecture checkpoint for tests and demos.

No model weights can be downloaded in CI, yet the real ComfyUI pipeline (checkpoint detection,
CLIP, UNet sampling, VAE decode, SaveImage) must run end to end.  This module builds the three
networks with ComfyUI's own classes -- a full CLIP-L text encoder and SD VAE, plus a one-level
UNet that model detection still classifies as SD1.5 -- fills them with seeded random weights and
saves an fp16 safetensors file that core ``CheckpointLoaderSimple`` loads as MODEL, CLIP and VAE.

Importing ComfyUI parses ``sys.argv`` and configures global state, so the generator always runs
as a subprocess (``python -m engine.synth``); ``synth_checkpoint`` is the in-process entry point.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from engine.models import sha256_file, synthetic_sidecar

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


def build_state_dict(seed: int) -> dict[str, Any]:
    """Build the checkpoint state dict (original SD key layout, fp16) from ComfyUI's classes."""
    import comfy.model_detection
    import comfy.sd1_clip
    import comfy.supported_models
    import torch
    from comfy.ldm.models.autoencoder import AutoencoderKL

    model_config = comfy.supported_models.SD15(dict(TINY_UNET_CONFIG))
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
    layout = model.state_dict_for_saving(
        {k: v for k, v in clip.state_dict().items()},
        {k: v for k, v in vae.state_dict().items()},
    )

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


def write_checkpoint(out: Path, *, comfyui_path: Path, seed: int) -> Path:
    """Generate and save the checkpoint plus its sidecar (runs inside the subprocess)."""
    _import_comfy(comfyui_path)
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    started = time.monotonic()
    state = build_state_dict(seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    # A single metadata key: safetensors writes the metadata map in hash order, so several keys
    # would make the file bytes (and sha256) differ from run to run.
    info = {"format": SYNTH_FORMAT, "seed": seed, "architecture": "SD1.5 tiny UNet, CLIP-L, VAE"}
    metadata = {"stencil_synthetic": json.dumps(info, sort_keys=True)}
    try:
        save_file(state, str(tmp), metadata=metadata)
        os.chmod(tmp, 0o644)  # safetensors creates 0600; the file is shared, not secret
        digest = sha256_file(tmp)
        sidecar = {
            "synthetic": True,
            "random_weights": True,
            "note": "random weights for tests; produces noise, not images of anything",
            "format": SYNTH_FORMAT,
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
    out: Path, *, comfyui_path: Path, python: str = sys.executable, seed: int = 0
) -> Path:
    """Create the random-weight checkpoint at `out` via a subprocess, unless it already exists."""
    out = Path(out).absolute()
    with _lock(out):
        if out.exists():
            return out
        repo_root = Path(__file__).resolve().parents[1]
        env = dict(os.environ)
        # `-m engine.synth` must resolve to this very file even outside an installed package.
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(repo_root), env.get("PYTHONPATH", "")) if p
        )
        cmd = [
            python,
            "-m",
            "engine.synth",
            "--comfyui",
            str(Path(comfyui_path).absolute()),
            "--out",
            str(out),
            "--seed",
            str(seed),
        ]
        started = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0 or not out.exists():
            tail = "\n".join(((proc.stdout or "") + (proc.stderr or "")).splitlines()[-30:])
            raise SynthError(f"engine.synth failed (exit {proc.returncode}):\n{tail}")
        logger.info("synthesised %s in %.1fs", out, time.monotonic() - started)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: ``python -m engine.synth --comfyui PATH --out FILE --seed N``."""
    parser = argparse.ArgumentParser(prog="python -m engine.synth", description=__doc__)
    parser.add_argument("--comfyui", type=Path, required=True, help="ComfyUI folder")
    parser.add_argument("--out", type=Path, required=True, help="safetensors file to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    write_checkpoint(args.out.absolute(), comfyui_path=args.comfyui, seed=args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
