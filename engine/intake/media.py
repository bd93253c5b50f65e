"""Media intake: decode and check images before a job is stored."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from engine.errors import InvalidMedia

_DATA_URL = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w-]+=[\w.-]+)*);base64,", re.I
)
CONTENT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}


@dataclass(frozen=True)
class CheckedImage:
    """An image that passed the checks, with what the job records of it."""

    data: bytes
    format: str
    width: int
    height: int
    sha256: str

    @property
    def content_type(self) -> str:
        """The image's MIME type."""
        return CONTENT_TYPES[self.format]

    @property
    def comfy_name(self) -> str:
        """Content-addressed file name for ComfyUI's input folder."""
        return f"stencil_{self.sha256[:32]}.{EXTENSIONS[self.format]}"

    def record(self, key: str) -> dict[str, object]:
        """What the job row stores for this input (no bytes)."""
        return {
            "key": key,
            "sha256": self.sha256,
            "content_type": self.content_type,
            "width": self.width,
            "height": self.height,
            "bytes": len(self.data),
            "comfy_name": self.comfy_name,
        }


def is_url(value: str) -> bool:
    """True for a value meant as a URL to fetch (any scheme but `data:`), checked by the guard."""
    head = value[:16].lower()
    return "://" in head or (":" in head.split("/")[0] and not head.startswith("data:"))


def decode_data_url(field: str, value: str, max_bytes: int) -> bytes:
    """Bytes of a base64 data URL, refusing oversize input before decoding it."""
    m = _DATA_URL.match(value)
    if not m:
        raise InvalidMedia(
            field, "expected a base64 data URL (data:image/png;base64,...) or an https:// URL"
        )
    b64 = value[m.end() :]
    if len(b64) * 3 // 4 > max_bytes + 3:
        raise InvalidMedia(field, f"image is larger than {max_bytes} bytes")
    try:
        return base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidMedia(field, "data URL is not valid base64") from None


def check_image(
    field: str,
    data: bytes,
    *,
    formats: list[str],
    max_bytes: int,
    max_pixels: int,
) -> CheckedImage:
    """Decode with Pillow and enforce format, byte and pixel caps (bombs refused unread).

    Pixels are counted over every frame: ComfyUI's LoadImage decodes them all (an animated PNG
    or WebP becomes a batch), so a small file with many large frames costs the shared engine
    what its frames cost, not what its first frame does. Animated images are refused outright
    (a template's image param is one image; a batch of frames would only fail later at the
    output limit, after the engine paid for it); the count comes from the header, before any
    pixel is decoded.
    """
    if len(data) > max_bytes:
        raise InvalidMedia(field, f"image is {len(data)} bytes; the limit is {max_bytes}")
    if not data:
        raise InvalidMedia(field, "image is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            fmt = img.format or ""
            if fmt not in formats:
                raise InvalidMedia(
                    field, f"format {fmt or 'unknown'} is not accepted; use {', '.join(formats)}"
                )
            w, h = img.size
            frames = int(getattr(img, "n_frames", 1) or 1)
            # The header's size and frame count are checked before any pixel is decoded.
            if w * h * frames > max_pixels:
                shape = f"{w}x{h}" + (f" in {frames} frames" if frames > 1 else "")
                raise InvalidMedia(
                    field,
                    f"image is {shape} ({w * h * frames} pixels); the limit is {max_pixels}",
                )
            if frames > 1:
                raise InvalidMedia(
                    field, f"animated images are not accepted ({frames} frames); send one frame"
                )
            img.load()
    except InvalidMedia:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidMedia(field, "not a decodable image") from None
    except (OSError, ValueError, SyntaxError):
        raise InvalidMedia(field, "image data is corrupt or truncated") from None
    return CheckedImage(data, fmt, w, h, hashlib.sha256(data).hexdigest())
