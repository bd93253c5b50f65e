"""Output images in the format the request asked for: one encoder for every template.

ComfyUI's SaveImage embeds the whole prompt graph (the vetted template) in PNG text chunks,
which customers must not receive. A PNG output keeps its pixels byte for byte and loses its
text chunks (no decode: re-encoding a 512x512 PNG costs tens of milliseconds per image);
JPEG and WebP outputs are encoded from the decoded pixels, with no metadata carried over.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from PIL import Image

OutputFormat = Literal["png", "jpeg", "webp"]
OUTPUT_FORMATS: tuple[OutputFormat, ...] = ("png", "jpeg", "webp")
DEFAULT_FORMAT: OutputFormat = "png"
DEFAULT_QUALITY = 90
CONTENT_TYPES: dict[str, str] = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
EXTENSIONS: dict[str, str] = {"png": "png", "jpeg": "jpg", "webp": "webp"}


@dataclass(frozen=True)
class EncodedImage:
    """An output ready to store."""

    data: bytes
    format: OutputFormat
    width: int
    height: int

    @property
    def content_type(self) -> str:
        """The MIME type stored and served with it."""
        return CONTENT_TYPES[self.format]

    @property
    def extension(self) -> str:
        """The file extension of its storage key."""
        return EXTENSIONS[self.format]


def encode_output(
    data: bytes, fmt: OutputFormat = DEFAULT_FORMAT, quality: int = DEFAULT_QUALITY
) -> EncodedImage:
    """Re-encode an image ComfyUI wrote as `fmt`; `quality` (1-100) applies to JPEG and WebP."""
    if fmt not in CONTENT_TYPES:
        raise ValueError(f"unknown output format {fmt!r}")
    quality = min(max(int(quality), 1), 100)
    if fmt == "png" and data.startswith(PNG_SIGNATURE):
        stripped, (w, h) = strip_png_text(data)
        return EncodedImage(stripped, "png", w, h)
    with Image.open(io.BytesIO(data)) as src:
        img = src.copy()  # decodes once; no metadata (text chunks, EXIF) is carried over
    out = io.BytesIO()
    if fmt == "jpeg":
        if img.mode not in ("RGB", "L"):
            img = _flatten(img)
        img.save(out, format="JPEG", quality=quality, optimize=True)
    elif fmt == "webp":
        if img.mode not in ("RGB", "RGBA"):
            img = img.convert("RGBA" if "A" in img.getbands() else "RGB")
        img.save(out, format="WEBP", quality=quality, method=4)
    else:
        img.save(out, format="PNG", optimize=False, compress_level=6)
    return EncodedImage(out.getvalue(), fmt, img.size[0], img.size[1])


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks that carry text or other metadata; everything else (pixels, palette, colour space,
# transparency, gamma) is kept as it is.
_METADATA_CHUNKS = frozenset({b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"tIME"})


def strip_png_text(data: bytes) -> tuple[bytes, tuple[int, int]]:
    """A PNG without its text and metadata chunks, and its (width, height); ValueError if
    the file is not a well-formed PNG."""
    out = [PNG_SIGNATURE]
    pos, size = len(PNG_SIGNATURE), (0, 0)
    while pos < len(data):
        if pos + 8 > len(data):
            raise ValueError("truncated PNG chunk header")
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 12 + length
        if end > len(data):
            raise ValueError("truncated PNG chunk")
        if kind == b"IHDR":
            size = struct.unpack(">II", data[pos + 8 : pos + 16])
        if kind not in _METADATA_CHUNKS:
            out.append(data[pos:end])  # length, type, data and CRC, unchanged
        pos = end
        if kind == b"IEND":
            break
    if size == (0, 0):
        raise ValueError("PNG without IHDR")
    return b"".join(out), size


def _flatten(img: Image.Image) -> Image.Image:
    """JPEG has no alpha: composite onto white, as browsers show a transparent PNG."""
    if "A" not in img.getbands() and img.mode != "P":
        return img.convert("RGB")
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def output_choice(params: Mapping[str, Any] | None) -> tuple[OutputFormat, int]:
    """The format and quality a job's params ask for (jobs stored before they existed: PNG)."""
    params = params or {}
    fmt = params.get("output_format") or DEFAULT_FORMAT
    quality = params.get("quality") or DEFAULT_QUALITY
    if fmt not in CONTENT_TYPES:
        raise ValueError(f"unknown output format {fmt!r}")
    return fmt, int(quality)
