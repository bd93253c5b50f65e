"""The output encoder: formats, quality, and no metadata, whichever graph made the image."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from engine.runners.outputs import encode_output, output_choice, strip_png_text


def comfy_png(mode: str = "RGB") -> tuple[bytes, np.ndarray]:
    rng = np.random.default_rng(3)
    bands = {"RGB": 3, "RGBA": 4}[mode]
    px = rng.integers(0, 256, (24, 40, bands), dtype=np.uint8)
    info = PngImagePlugin.PngInfo()  # what ComfyUI's SaveImage writes
    info.add_text("prompt", '{"3": {"class_type": "KSampler"}}')
    info.add_text("workflow", "{}")
    buf = io.BytesIO()
    Image.fromarray(px, mode).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue(), px


def test_png_keeps_its_pixels_and_loses_the_graph() -> None:
    data, px = comfy_png()
    out = encode_output(data, "png")
    assert (out.width, out.height, out.content_type, out.extension) == (40, 24, "image/png", "png")
    assert b"prompt" in data and b"prompt" not in out.data and b"workflow" not in out.data
    img = Image.open(io.BytesIO(out.data))
    assert np.array_equal(np.asarray(img), px) and not img.info


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
@pytest.mark.parametrize(("fmt", "pil"), [("jpeg", "JPEG"), ("webp", "WEBP")])
def test_lossy_formats_and_quality(mode: str, fmt: str, pil: str) -> None:
    data, _ = comfy_png(mode)
    fine, rough = encode_output(data, fmt, 95), encode_output(data, fmt, 5)  # type: ignore[arg-type]
    for out in (fine, rough):
        img = Image.open(io.BytesIO(out.data))
        assert img.format == pil and img.size == (40, 24) and (out.width, out.height) == (40, 24)
        assert b"prompt" not in out.data
    assert len(rough.data) < len(fine.data)


def test_broken_png_and_choices() -> None:
    data, _ = comfy_png()
    with pytest.raises(ValueError):
        strip_png_text(data[:40])
    assert output_choice(None) == ("png", 90)
    assert output_choice({"output_format": "webp", "quality": 40}) == ("webp", 40)
    with pytest.raises(ValueError):
        output_choice({"output_format": "gif"})
