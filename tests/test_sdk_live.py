"""Each SDK through one real job flow against a live Stencil on a real ComfyUI, and a catalog edit
that reaches the generated clients with no Python change."""

from __future__ import annotations

import asyncio
import importlib
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from PIL import Image
from stencil_client.models import (
    JobEventType,
    JobStatus,
    RetiredTemplateParams,
    Txt2ImgV1Request,
    UpscaleV2Params,
)
from stencil_sdk import AsyncStencil, Stencil, ValidationError

from api.app import create_app
from api.settings import Settings
from engine.tenants.keys import create_key
from tests.helpers import serve

pytestmark = pytest.mark.comfy

ROOT = Path(__file__).resolve().parents[1]
TS_LIVE = ROOT / "sdk" / "typescript" / "dist" / "test" / "live.js"
TXT = Txt2ImgV1Request(prompt="a red cube", width=64, height=64, steps=2)


def png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (10, 120, 200)).save(buf, format="PNG")
    return buf.getvalue()


def sdk_tools_missing(what: str) -> None:
    if os.environ.get("STENCIL_REQUIRE_SDK") == "1":
        pytest.fail(f"{what} (STENCIL_REQUIRE_SDK=1): run `make sdk-check`", pytrace=False)
    pytest.skip(f"{what}: run `make sdk-check`")


def settings(tmp: Path, comfy_url: str, catalog: Path = ROOT / "catalog.yaml") -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        home=tmp / "home",
        catalog=catalog,
        database_url=f"sqlite:///{tmp / 'stencil.db'}",
        url_signing_secret="live",
        comfyui_url=comfy_url,
        worker_concurrency=2,
        active_job_quota=10,
    )


@pytest.fixture
def live(comfy_url: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A live Stencil over HTTP on the shared real ComfyUI: (base URL, API key)."""
    app = create_app(settings(tmp_path, comfy_url))
    with serve(app) as base:
        with app.state.services.db.session() as s:
            token, _ = create_key(s, "acme")
        yield base, token


def test_python_sdk_real_job_flow(live: tuple[str, str]) -> None:
    base, token = live
    with Stencil(base, api_key=token) as stencil:
        up = stencil.run("/v1/upscale", {"image": png(16, 8), "scale": 2, "method": "bicubic"})
        assert (up.outputs[0].width, up.outputs[0].height) == (32, 16)
        assert stencil.download(up.outputs[0]).startswith(b"\x89PNG")

        job = stencil.submit("/v1/txt2img", TXT)
        events = list(stencil.events(job))
        ids = [e.id for e in events]
        assert ids == sorted(set(ids)) and events[-1].type_ == JobEventType.JOB_SUCCEEDED
        done = stencil.wait(job)
        assert done.status == JobStatus.SUCCEEDED and done.outputs[0].width == 64
        img = Image.open(io.BytesIO(stencil.download(done.outputs[0])))
        assert img.size == (64, 64)

        with pytest.raises(ValidationError) as e:
            stencil.submit("/v1/txt2img", Txt2ImgV1Request(prompt="x", width=65))
        assert [f.field for f in e.value.errors] == ["width"]

        slow = stencil.submit("/v1/txt2img", {"prompt": "slow", "width": 64, "steps": 100})
        assert stencil.cancel(slow).status == JobStatus.CANCELLED

        page = stencil.list_jobs(limit=2)
        assert len(page.data) == 2 and isinstance(page.next_cursor, str)
        assert {j.id for j in stencil.jobs(page_size=2)} == {up.id, job.id, slow.id}

    async def follow() -> list[JobEventType]:
        async with AsyncStencil(base, api_key=token) as a:
            job = await a.submit("/v1/txt2img", TXT)
            return [e.type_ async for e in a.events(job)]

    kinds = asyncio.run(follow())
    assert kinds[-1] == JobEventType.JOB_SUCCEEDED and kinds.count(JobEventType.JOB_SUCCEEDED) == 1


def test_typescript_sdk_real_job_flow(live: tuple[str, str], tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None or not TS_LIVE.exists():
        sdk_tools_missing("the TypeScript SDK is not built")
    base, token = live
    image = tmp_path / "in.png"
    image.write_bytes(png(16, 8))
    env = {
        **os.environ,
        "STENCIL_BASE_URL": base,
        "STENCIL_API_KEY": token,
        "STENCIL_TEST_PNG": str(image),
    }
    r = subprocess.run(
        [str(node), str(TS_LIVE)], env=env, capture_output=True, text=True, timeout=240
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["events"][-1] == "job.succeeded" and summary["field"] == "width"
    assert summary["jobs"] >= 3


# ---- a catalog edit reaches the clients --------------------------------------------------------

IMG2IMG_GRAPH = """{
  "checkpoint": {
    "class_type": "CheckpointLoaderSimple",
    "inputs": {"ckpt_name": "v1-5-pruned-emaonly-fp16.safetensors"}
  },
  "positive": {
    "class_type": "CLIPTextEncode",
    "inputs": {"text": {{ params.prompt | tojson }}, "clip": ["checkpoint", 1]}
  },
  "negative": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["checkpoint", 1]}},
  "load": {"class_type": "LoadImage", "inputs": {"image": {{ params.image | tojson }}}},
  "encode": {
    "class_type": "VAEEncode",
    "inputs": {"pixels": ["load", 0], "vae": ["checkpoint", 2]}
  },
  "sampler": {
    "class_type": "KSampler",
    "inputs": {
      "model": ["checkpoint", 0],
      "positive": ["positive", 0],
      "negative": ["negative", 0],
      "latent_image": ["encode", 0],
      "seed": {{ params.seed | tojson }},
      "steps": {{ params.steps | tojson }},
      "cfg": 7.0,
      "sampler_name": "euler",
      "scheduler": "normal",
      "denoise": {{ params.strength | tojson }}
    }
  },
  "decode": {
    "class_type": "VAEDecode",
    "inputs": {"samples": ["sampler", 0], "vae": ["checkpoint", 2]}
  },
  "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "s"}}
}
"""


def repaint_catalog(tmp: Path) -> Path:
    """The shipped catalog plus one more template (image to image from core nodes)."""
    shutil.copytree(ROOT / "templates", tmp / "templates")
    (tmp / "templates" / "repaint").mkdir()
    (tmp / "templates" / "repaint" / "v1.json.j2").write_text(IMG2IMG_GRAPH)
    data = yaml.safe_load((ROOT / "catalog.yaml").read_text())
    (txt,) = [t for t in data["templates"] if t["name"] == "txt2img"]
    upscale = [t for t in data["templates"] if t["name"] == "upscale"][0]
    data["templates"].append(
        {
            "name": "repaint",
            "version": "1.0.0",
            "summary": "Repaint an image, guided by a prompt (SD1.5-class checkpoint).",
            "description": "Image to image with core ComfyUI nodes: the image is encoded, "
            "partly noised by `strength`, and sampled towards the prompt.",
            "graph": "templates/repaint/v1.json.j2",
            "gpu_class": "l4",
            "models": txt["models"],
            "limits": {"max_queue_seconds": 600, "max_run_seconds": 300, "max_outputs": 1},
            "params": {
                "image": {**upscale["params"]["image"], "description": "The image to start from."},
                "prompt": txt["params"]["prompt"],
                "strength": {
                    "type": "number",
                    "description": "How much to change the image (the sampler's denoise).",
                    "default": 0.6,
                    "minimum": 0.05,
                    "maximum": 1,
                    "example": 0.6,
                },
                "steps": txt["params"]["steps"],
                "seed": txt["params"]["seed"],
            },
        }
    )
    path = tmp / "catalog.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_third_template_reaches_the_document_and_both_clients(
    comfy_url: str, tmp_path: Path
) -> None:
    from scripts.sdk import ToolMissing, generate_python, generate_typescript

    app = create_app(settings(tmp_path, comfy_url, repaint_catalog(tmp_path)))
    doc = app.openapi()
    op = doc["paths"]["/v1/repaint"]["post"]
    assert op["operationId"] == "run_repaint_v1"
    assert set(op["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    comps = doc["components"]["schemas"]
    assert {"RepaintV1Request", "RepaintV1Multipart", "RepaintV1Params"} <= set(comps)
    assert comps["RepaintV1Multipart"]["properties"]["image"]["format"] == "binary"
    assert {"$ref": "#/components/schemas/RepaintV1Params"} in comps["Job"]["properties"]["params"][
        "anyOf"
    ]

    doc_path = tmp_path / "openapi.json"
    doc_path.write_text(json.dumps(doc))
    project = tmp_path / "py"
    project.mkdir()
    shutil.copy(ROOT / "sdk" / "python" / "pyproject.toml", project)
    try:
        pkg = generate_python(doc_path, project, package="stencil_client_edit")
        schema_ts = generate_typescript(doc_path, tmp_path / "schema.ts").read_text()
    except ToolMissing as e:
        sdk_tools_missing(str(e))
    assert (pkg / "api" / "templates" / "run_repaint_v1.py").exists()
    assert '"/v1/repaint": {' in schema_ts and "RepaintV1Multipart: {" in schema_ts

    sys.path.insert(0, str(project))
    try:
        generated = importlib.import_module("stencil_client_edit")
        models = importlib.import_module("stencil_client_edit.models")
        run = importlib.import_module("stencil_client_edit.api.templates.run_repaint_v1")
        types = importlib.import_module("stencil_client_edit.types")
        with serve(app) as base:
            with app.state.services.db.session() as s:
                token, _ = create_key(s, "acme")
            client = generated.AuthenticatedClient(base_url=base, token=token)
            body = models.RepaintV1Multipart(
                image=types.File(payload=io.BytesIO(png(64, 64)), file_name="in.png"),
                prompt="the same, at dusk",
                strength=0.5,
                steps=2,
            )
            job = run.sync(client=client, body=body)
            assert isinstance(job, models.Job), job
            with Stencil(base, api_key=token) as stencil:
                done = stencil.wait(job.id, timeout=240)
                assert done.status == JobStatus.SUCCEEDED, done.error
                assert (done.outputs[0].width, done.outputs[0].height) == (64, 64)
                # The shipped client, older than the template, keeps every one of its params:
                # typed as a known template's where their fields match (the job's `template`
                # says which it is), the rest kept beside them...
                raw = done.params.to_dict()
                assert done.template == "repaint"
                assert raw["prompt"] == "the same, at dusk" and raw["strength"] == 0.5
                assert isinstance(done.params, RetiredTemplateParams | UpscaleV2Params)
            # ...and the one generated from the edited catalog has them typed.
            get_job = importlib.import_module("stencil_client_edit.api.jobs.get_job")
            fresh = get_job.sync(job.id, client=client)
            assert isinstance(fresh.params, models.RepaintV1Params)
            assert fresh.params.strength == 0.5 and isinstance(fresh.params.seed, int)
    finally:
        sys.path.remove(str(project))
        for name in [m for m in sys.modules if m.startswith("stencil_client_edit")]:
            del sys.modules[name]
