"""engine/verify.py: ComfyUI, models (size, sha256 or synthetic), custom nodes, node types."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.catalog.catalog import Catalog, ModelFile, load_catalog
from engine.catalog.models import synthetic_sidecar
from engine.catalog.render import TemplateGraphs
from engine.comfy import ComfyClient, comfyui_version
from engine.verify import STENCIL_NODE_TYPES, VerifyReport, verify_engine

ROOT = Path(__file__).resolve().parents[1]
CATALOG_CHECKPOINT = "v1-5-pruned-emaonly-fp16.safetensors"
CORE = [
    "CheckpointLoaderSimple",
    "CLIPTextEncode",
    "EmptyLatentImage",
    "KSampler",
    "VAEDecode",
    "SaveImage",
    "LoadImage",
    "ImageScaleBy",
    "LoraLoader",
    "VAEEncode",
    "LoadImageMask",
    "SetLatentNoiseMask",
    "UpscaleModelLoader",
    "ImageUpscaleWithModel",
]


def with_models(catalog: Catalog, models: list[ModelFile]) -> Catalog:
    """The catalog with txt2img's model list replaced."""
    templates = [
        t.model_copy(update={"models": models}) if t.name == "txt2img" else t
        for t in catalog.templates
    ]
    return catalog.model_copy(update={"templates": templates})


def fake_server(
    nodes: list[str], *, snapshot: dict[str, Any] | None = None, down: bool = False
) -> httpx.MockTransport:
    """A ComfyUI (with or without the Stencil extension) behind an httpx.MockTransport."""

    def handle(request: httpx.Request) -> httpx.Response:
        if down:
            raise httpx.ConnectError("refused", request=request)
        path = request.url.path
        if path == "/system_stats":
            return httpx.Response(
                200,
                json={
                    "system": {"comfyui_version": "0.38.1", "python_version": "3.11"},
                    "devices": [{"name": "cuda:0 NVIDIA L4", "type": "cuda"}],
                },
            )
        if path == "/object_info":
            return httpx.Response(200, json={n: {"output": []} for n in nodes})
        if path == "/stencil/snapshot/status" and snapshot is not None:
            return httpx.Response(200, json=snapshot)
        return httpx.Response(404, text="not found")

    return httpx.MockTransport(handle)


def run(
    catalog: Catalog,
    server: httpx.MockTransport | str,
    models_dir: Path | None,
    **kw: Any,
) -> VerifyReport:
    """verify_engine against a mock server, or a real one given by URL."""

    async def go() -> VerifyReport:
        if isinstance(server, str):
            async with ComfyClient(server) as comfy:
                return await verify_engine(
                    catalog, TemplateGraphs(catalog), comfy, models_dir, **kw
                )
        base = "http://comfy.test"
        async with (
            ComfyClient(base, transport=server) as comfy,
            httpx.AsyncClient(base_url=base, transport=server) as http,
        ):
            return await verify_engine(
                catalog, TemplateGraphs(catalog), comfy, models_dir, http=http, **kw
            )

    return asyncio.run(go())


def by_name(report: VerifyReport) -> dict[str, Any]:
    return {c.name: c for c in report.checks}


@pytest.fixture
def catalog() -> Catalog:
    return load_catalog(ROOT / "catalog.yaml")


def test_models_ok_synthetic_missing_and_mismatch(catalog: Catalog, tmp_path: Path) -> None:
    good, fake, bad = b"weights", b"random weights", b"other bytes"
    models = [
        ModelFile(
            name=name,
            folder="checkpoints",
            url=f"https://example.com/{name}",
            sha256=hashlib.sha256(good).hexdigest(),
        )
        for name in ("good.safetensors", "synth.safetensors", "bad.safetensors", "gone.safetensors")
    ]
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "good.safetensors").write_bytes(good)
    (folder / "synth.safetensors").write_bytes(fake)
    synthetic_sidecar(folder / "synth.safetensors").write_text("{}")
    (folder / "bad.safetensors").write_bytes(bad)
    report = run(with_models(catalog, models), fake_server(CORE), tmp_path)
    checks = by_name(report)
    good_c = checks["model:checkpoints/good.safetensors"]
    assert good_c.ok and good_c.data["status"] == "ok" and good_c.data["bytes"] == len(good)
    assert checks["model:checkpoints/synth.safetensors"].data["status"] == "synthetic"
    assert checks["model:checkpoints/synth.safetensors"].ok
    assert checks["model:checkpoints/bad.safetensors"].data["status"] == "mismatch"
    assert not checks["model:checkpoints/bad.safetensors"].ok
    gone = checks["model:checkpoints/gone.safetensors"]
    assert not gone.ok and gone.data["status"] == "missing" and gone.data["bytes"] is None
    assert not report.ok
    json.dumps(report.as_dict())  # plain data, as the Modal method returns it


def test_comfyui_version_and_node_types(catalog: Catalog, tmp_path: Path) -> None:
    report = run(catalog, fake_server([n for n in CORE if n != "KSampler"]), tmp_path)
    checks = by_name(report)
    assert checks["comfyui"].ok and checks["comfyui"].data["version"] == "0.38.1"
    assert checks["comfyui"].data["devices"] == ["cuda:0 NVIDIA L4"]
    txt2img = checks["nodes:txt2img@1.1.0"]
    assert not txt2img.ok and txt2img.data["missing"] == ["KSampler"]
    assert checks["nodes:upscale@1.0.0"].ok


def test_custom_nodes_required_or_optional(catalog: Catalog, tmp_path: Path) -> None:
    optional = by_name(run(catalog, fake_server(CORE), tmp_path))["custom_nodes"]
    assert optional.ok and "not required" in optional.detail
    required = by_name(run(catalog, fake_server(CORE), tmp_path, require_custom_nodes=True))
    assert not required["custom_nodes"].ok
    assert required["custom_nodes"].data["missing"] == list(STENCIL_NODE_TYPES)
    no_gate = fake_server([*CORE, *STENCIL_NODE_TYPES], snapshot={"patched": False})
    assert not by_name(run(catalog, no_gate, tmp_path, require_custom_nodes=True))[
        "custom_nodes"
    ].ok
    loaded = fake_server(
        [*CORE, *STENCIL_NODE_TYPES], snapshot={"patched": True, "device": "cuda:0"}
    )
    check = by_name(run(catalog, loaded, tmp_path, require_custom_nodes=True))["custom_nodes"]
    assert check.ok and "cuda:0" in check.detail


def test_comfyui_down_still_checks_models(catalog: Catalog, tmp_path: Path) -> None:
    report = run(catalog, fake_server(CORE, down=True), tmp_path, installed_version="x")
    checks = by_name(report)
    assert not checks["comfyui"].ok and "does not answer" in checks["comfyui"].detail
    assert f"model:checkpoints/{CATALOG_CHECKPOINT}" in checks
    assert not report.ok


@pytest.mark.comfy
def test_real_comfyui_serves_the_catalog(
    comfy_url: str, synth_models_dir: Path, comfyui_path: Path, catalog: Catalog
) -> None:
    from tests.comfy_fixtures import SYNTH_CHECKPOINT

    dest = synth_models_dir / "checkpoints" / CATALOG_CHECKPOINT
    if not dest.exists():  # what `make models` writes; the worker tests may have made it
        src = synth_models_dir / "checkpoints" / SYNTH_CHECKPOINT
        try:
            dest.symlink_to(src.name)
            synthetic_sidecar(dest).write_text(synthetic_sidecar(src).read_text())
        except FileExistsError:
            pass
    report = run(catalog, comfy_url, synth_models_dir, installed_version="git-x")
    checks = by_name(report)
    # Current ComfyUI reports its own version; the 2024 copy does not, so the installer's
    # marker (passed in) stands in for it.
    tree = comfyui_version(comfyui_path)
    expected = "git-x" if tree.startswith("git-") else tree
    assert checks["comfyui"].ok and checks["comfyui"].data["version"] == expected
    model = checks[f"model:checkpoints/{CATALOG_CHECKPOINT}"]
    assert model.ok and model.data["status"] == "synthetic" and model.data["bytes"] > 0
    assert checks["nodes:txt2img@1.1.0"].ok and checks["nodes:upscale@1.0.0"].ok
    assert checks["custom_nodes"].ok  # not installed in the local ComfyUI; not required here
    assert checks["fits:txt2img@1.1.0"].ok and checks["fits:upscale@1.0.0"].ok
    assert report.ok, report.as_dict()
