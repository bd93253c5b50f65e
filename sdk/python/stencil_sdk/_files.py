"""Files for multipart uploads, from bytes, a path or an open binary file."""

from __future__ import annotations

import io
import mimetypes
import os
from pathlib import Path
from typing import BinaryIO

from stencil_client.types import File

FileInput = bytes | bytearray | memoryview | os.PathLike[str] | BinaryIO | File
"""What `upload` and a request body's image fields accept (a `str` is never a file: in a JSON
body it is a data URL or an `https://` URL)."""


def _sniff(data: bytes) -> str:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


def is_file_input(value: object) -> bool:
    """Whether a body field's value is a file (and so the body goes as multipart)."""
    return isinstance(value, bytes | bytearray | memoryview | os.PathLike | File) or (
        isinstance(value, io.IOBase) and not isinstance(value, io.TextIOBase)
    )


def upload(
    data: FileInput, *, filename: str | None = None, content_type: str | None = None
) -> File:
    """A file part for a multipart body, e.g. `UpscaleV1Multipart(image=upload(png))`.

    Bytes and paths are read now; the content type is sniffed from the first bytes (PNG,
    JPEG, WebP) or guessed from the file name.
    """
    if isinstance(data, File):
        return data
    if isinstance(data, os.PathLike):
        path = Path(data)
        raw = path.read_bytes()
        guessed = mimetypes.guess_type(path.name)[0]
        return File(
            payload=io.BytesIO(raw),
            file_name=filename or path.name,
            mime_type=content_type or guessed or _sniff(raw),
        )
    if isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
        ctype = content_type or _sniff(raw)
        return File(
            payload=io.BytesIO(raw),
            file_name=filename or f"upload.{_EXT.get(ctype, 'bin')}",
            mime_type=ctype,
        )
    name = getattr(data, "name", None)
    base = os.path.basename(name) if isinstance(name, str) else None
    return File(
        payload=data,
        file_name=filename or base or "upload",
        mime_type=content_type or (mimetypes.guess_type(base)[0] if base else None),
    )
