"""Every catalog template runs a real job on the real ComfyUI (CPU), and so does each format.

Images are tiny (64x64, 2 steps): the point is that each graph runs and means what its params
say, which noise from random weights shows as well as a real model would.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.app import create_app
from api.settings import Settings
from engine.tenants.keys import create_key
from tests.helpers import finished, wait_for

pytestmark = pytest.mark.comfy

Headers = dict[str, str]
SMALL = {"prompt": "a red cube on a table", "width": 64, "height": 64, "steps": 2, "seed": 7}


def image_bytes(
    w: int, h: int, fmt: str = "PNG", colour: tuple[int, int, int] = (10, 120, 200)
) -> bytes:
    img = Image.new("RGB", (w, h), colour)
    # a gradient, so that "kept" and "changed" are measurable
    px = np.asarray(img).copy()
    px[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    buf = io.BytesIO()
    Image.fromarray(px).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def live(
    comfy_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient, Headers]]:
    """One app for the module (SQLite; the store is tested on both databases elsewhere)."""
    home = tmp_path_factory.mktemp("templates-e2e")
    settings = Settings(
        _env_file=None,
        home=home,
        catalog=Path(__file__).resolve().parents[1] / "catalog.yaml",
        database_url=f"sqlite:///{home / 'stencil.db'}",
        url_signing_secret="test-secret",
        trusted_hosts="testserver",  # TestClient's Host
        comfyui_url=comfy_url,
        worker_concurrency=1,
        active_job_quota=20,
    )
    app = create_app(settings)
    with TestClient(app) as client:
        with app.state.services.db.session() as s:
            token, _ = create_key(s, "acme")
        yield client, {"Authorization": f"Bearer {token}"}


def run(
    live: tuple[TestClient, Headers], route: str, **kw: Any
) -> tuple[dict[str, Any], list[tuple[Any, str, bytes]]]:
    """Submit, wait, download every output: (job, [(image, content type, bytes)])."""
    client, h = live
    r = client.post(route, headers=h, **kw)
    assert r.status_code == 202, r.text
    job = wait_for(client, h, r.json()["id"], finished)
    assert job["status"] == "succeeded", job["error"]
    got = []
    for out in job["outputs"]:
        f = client.get(out["url"])
        assert f.status_code == 200
        assert f.headers["content-type"] == out["content_type"]
        assert len(f.content) == out["bytes"]
        img = Image.open(io.BytesIO(f.content))
        img.load()
        assert img.size == (out["width"], out["height"])
        got.append((img, out["content_type"], f.content))
    return job, got


def pixels(img: Image.Image) -> Any:
    return np.asarray(img.convert("RGB"), dtype=np.float64)


def test_style_applies_its_lora(live: tuple[TestClient, Headers]) -> None:
    _, [(plain, _, _)] = run(live, "/v1/txt2img", json={**SMALL, "style": "none"})
    job, [(styled, _, _)] = run(live, "/v1/txt2img", json={**SMALL, "style": "pokemon"})
    assert job["params"]["style"] == "pokemon" and job["template_version"] == "1.1.0"
    # Same seed and prompt: only the LoRA differs, and it changes the picture.
    assert np.abs(pixels(plain) - pixels(styled)).mean() > 2.0
    _, [(again, _, _)] = run(live, "/v1/txt2img", json={**SMALL, "style": "none"})
    assert np.abs(pixels(plain) - pixels(again)).mean() < 0.5  # and `none` is the checkpoint


@pytest.mark.parametrize(
    ("fmt", "ctype", "pil"), [("jpeg", "image/jpeg", "JPEG"), ("webp", "image/webp", "WEBP")]
)
def test_output_formats(live: tuple[TestClient, Headers], fmt: str, ctype: str, pil: str) -> None:
    body = {**SMALL, "output_format": fmt}
    fine_job, [(fine, c1, fine_bytes)] = run(live, "/v1/txt2img", json={**body, "quality": 95})
    _, [(rough, c2, rough_bytes)] = run(live, "/v1/txt2img", json={**body, "quality": 5})
    assert c1 == c2 == ctype and fine.format == rough.format == pil
    assert (
        fine_job["outputs"][0]["url"].split("?")[0].endswith(".jpg" if fmt == "jpeg" else ".webp")
    )
    assert len(rough_bytes) < len(fine_bytes)  # quality reaches the encoder
    assert fine.size == (64, 64)


def test_png_outputs_carry_no_graph(live: tuple[TestClient, Headers]) -> None:
    _, [(img, ctype, data)] = run(live, "/v1/txt2img", json=SMALL)
    assert ctype == "image/png"
    # ComfyUI writes the prompt graph into PNG text chunks; the engine re-encodes without them.
    assert b"prompt" not in data and b"workflow" not in data and not img.info.get("prompt")


def test_img2img_keeps_size_and_follows_strength(live: tuple[TestClient, Headers]) -> None:
    src = image_bytes(64, 48)
    files = {"image": ("in.png", src, "image/png")}
    form = {"prompt": "a harbour", "steps": "2", "seed": "3"}
    _, [(low, _, _)] = run(live, "/v1/img2img", files=files, data={**form, "strength": "0.1"})
    _, [(high, _, _)] = run(live, "/v1/img2img", files=files, data={**form, "strength": "1.0"})
    original = pixels(Image.open(io.BytesIO(src)))
    assert low.size == high.size == (64, 48)
    # A low strength stays near the input; a full one moves far away from it.
    assert np.abs(pixels(low) - original).mean() < np.abs(pixels(high) - original).mean()


def mask_png(repaint: tuple[int, int, int, int] | None) -> bytes:
    mask = Image.new("RGB", (64, 64), (0, 0, 0))
    if repaint is not None:
        mask.paste((255, 255, 255), repaint)
    buf = io.BytesIO()
    mask.save(buf, format="PNG")
    return buf.getvalue()


def test_inpaint_changes_only_the_masked_part(live: tuple[TestClient, Headers]) -> None:
    src = image_bytes(64, 64)
    form = {"prompt": "a red door", "steps": "2", "seed": "5", "strength": "1.0"}

    def inpaint(mask: bytes) -> tuple[dict[str, Any], Image.Image]:
        files = {"image": ("in.png", src, "image/png"), "mask": ("m.png", mask, "image/png")}
        job, [(out, _, _)] = run(live, "/v1/inpaint", files=files, data=form)
        return job, out

    # Nothing masked: the input through the VAE and back, the latent otherwise untouched.
    _, kept_all = inpaint(mask_png(None))
    job, right = inpaint(mask_png((32, 0, 64, 64)))  # repaint the right half
    _, whole = inpaint(mask_png((0, 0, 64, 64)))
    assert right.size == (64, 64) and set(job["inputs"]) == {"image", "mask"}
    base = pixels(kept_all)
    half_diff = np.abs(pixels(right) - base).mean(axis=2)
    whole_diff = np.abs(pixels(whole) - base).mean(axis=2)
    # The mask decides what changes: half a mask changes less than a whole one, and mostly
    # on its own side. (A random-weight VAE's attention spreads some change everywhere, so
    # the kept side is not pixel-exact as it would be with a trained one.)
    assert 0 < half_diff.mean() < whole_diff.mean()
    left_change, right_change = half_diff[:, :16].mean(), half_diff[:, 48:].mean()
    assert right_change > 1.3 * left_change, (left_change, right_change)


def test_upscale_v2_uses_the_model(live: tuple[TestClient, Headers]) -> None:
    client, h = live
    files = {"image": ("in.png", image_bytes(40, 24), "image/png")}
    job, [(out, _, _)] = run(live, "/v2/upscale", files=files)
    assert out.size == (80, 48) and job["template_version"] == "2.0.0"
    lo, hi = cast(tuple[int, int], out.convert("L").getextrema())
    assert hi - lo > 16  # a picture, not a flat field
    # /v1/upscale keeps its resampling filters and arbitrary factors.
    _, [(v1, _, _)] = run(
        live, "/v1/upscale", files=files, data={"scale": "3", "method": "bicubic"}
    )
    assert v1.size == (120, 72)


def test_template_params_are_validated_before_anything_runs(
    live: tuple[TestClient, Headers],
) -> None:
    client, h = live
    r = client.post("/v1/txt2img", json={**SMALL, "style": "disco"}, headers=h)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "style"
    r = client.post("/v1/txt2img", json={**SMALL, "output_format": "gif"}, headers=h)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "output_format"
    r = client.post("/v1/txt2img", json={**SMALL, "quality": 0}, headers=h)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "quality"
    files = {"image": ("in.png", image_bytes(64, 64), "image/png")}
    r = client.post("/v1/inpaint", headers=h, files=files, data={"prompt": "x"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "mask"
