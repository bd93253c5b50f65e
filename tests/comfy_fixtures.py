"""Session fixtures for tests that need a real ComfyUI.

Import them into a conftest (``from tests.comfy_fixtures import *``) or list the module in the
root conftest's ``pytest_plugins``; importing them into test modules as well is harmless (the
ComfyUI process is shared).  Tests using them are skipped with a clear
reason when ComfyUI is not installed, unless ``STENCIL_REQUIRE_COMFY=1``, which turns the skip
into a failure (CI jobs that must exercise the real engine).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from engine.catalog.catalog import load_catalog
from engine.catalog.synth import synth_checkpoint
from engine.comfy.install import is_comfyui_dir
from engine.comfy.process import ComfyProcess

# A star import brings in exactly the fixtures.
__all__ = ["comfy_process", "comfy_url", "comfyui_path", "synth_models_dir"]

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_COMFYUI_PATH = REPO_ROOT / ".stencil" / "comfyui"
MODELS_CACHE = REPO_ROOT / ".stencil" / "models"
# The catalog's txt2img checkpoint name, so templates and raw test graphs share one file.
SYNTH_CHECKPOINT = "v1-5-pruned-emaonly-fp16.safetensors"
# Modules ComfyUI imports at start-up; missing ones mean `stencil comfyui install` never ran
# its requirements step for this interpreter.
_COMFY_IMPORTS = ("torch", "torchvision", "aiohttp", "safetensors", "einops", "scipy")


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("STENCIL_REQUIRE_COMFY") == "1":
        pytest.fail(f"{reason} (STENCIL_REQUIRE_COMFY=1)", pytrace=False)
    pytest.skip(reason)


def txt2img_graph(
    seed: int,
    *,
    steps: int = 2,
    width: int = 64,
    height: int = 64,
    ckpt_name: str = SYNTH_CHECKPOINT,
    prompt: str = "a lighthouse at dusk",
    filename_prefix: str = "stencil-test",
) -> dict[str, Any]:
    """The smallest core-node txt2img graph (API format)."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": width, "height": height, "batch_size": 1},
        },
        "5": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["1", 0],
                "positive": ["2", 0],
                "negative": ["3", 0],
                "latent_image": ["4", 0],
                "seed": seed,
                "steps": steps,
                "cfg": 7.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
            },
        },
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {
            "class_type": "SaveImage",
            "inputs": {"images": ["6", 0], "filename_prefix": filename_prefix},
        },
    }


@pytest.fixture(scope="session")
def comfyui_path() -> Path:
    """The ComfyUI tree under test: $COMFYUI_PATH, else <repo>/.stencil/comfyui."""
    env = os.environ.get("COMFYUI_PATH")
    path = Path(env).expanduser() if env else DEFAULT_COMFYUI_PATH
    if not is_comfyui_dir(path):
        _unavailable(
            f"ComfyUI is not installed at {path}; run `stencil comfyui install` "
            "or point COMFYUI_PATH at a ComfyUI checkout"
        )
    missing = [m for m in _COMFY_IMPORTS if importlib.util.find_spec(m) is None]
    if missing:
        _unavailable(f"ComfyUI requirements missing from this interpreter: {', '.join(missing)}")
    return path.resolve()


@pytest.fixture(scope="session")
def synth_models_dir(comfyui_path: Path) -> Path:
    """Models folder holding a synthetic stand-in of every catalog model (built once, cached)."""
    synth_checkpoint(MODELS_CACHE / "checkpoints" / SYNTH_CHECKPOINT, comfyui_path=comfyui_path)
    for m in load_catalog(REPO_ROOT / "catalog.yaml").all_models():
        if m.synth is not None:
            synth_checkpoint(
                MODELS_CACHE / m.folder / m.name, comfyui_path=comfyui_path, kind=m.synth
            )
    return MODELS_CACHE


async def _start(proc: ComfyProcess) -> None:
    await proc.start()
    await proc.wait_ready(timeout=120)


class _Shared:
    """One ComfyUI per session even if these fixtures are registered twice.

    A test module importing the fixtures and a conftest importing them too give pytest two
    fixture definitions, each with its own session cache; sharing the process here (released
    by the last user) keeps that from starting a second server.
    """

    proc: ComfyProcess | None = None
    users = 0


@pytest.fixture(scope="session")
def comfy_process(
    comfyui_path: Path, synth_models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ComfyProcess]:
    """A running ComfyUI (CPU) serving the synthetic models; stopped at session end."""
    if _Shared.proc is None:
        work = tmp_path_factory.mktemp("comfyui")
        # With Stencil's batching nodes, as the service starts it (api.services.local_comfy).
        (work / "nodes").mkdir()
        (work / "nodes" / "stencil_batch").symlink_to(REPO_ROOT / "nodes" / "stencil_batch")
        proc = ComfyProcess(
            comfyui_path,
            models_dir=synth_models_dir,
            input_dir=work / "input",
            output_dir=work / "output",
            log_path=work / "comfyui.log",
            custom_nodes=[work / "nodes"],
        )
        try:
            asyncio.run(_start(proc))
        except BaseException:
            proc.close()
            raise
        _Shared.proc = proc
    _Shared.users += 1
    try:
        yield _Shared.proc
    finally:
        _Shared.users -= 1
        if _Shared.users == 0:
            _Shared.proc.close()
            _Shared.proc = None


@pytest.fixture(scope="session")
def comfy_url(comfy_process: ComfyProcess) -> str:
    """Base URL of the session's ComfyUI."""
    return comfy_process.base_url
