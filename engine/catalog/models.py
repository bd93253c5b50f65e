"""Download model files with checksum verification, and report their state on disk."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Literal

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

logger = logging.getLogger(__name__)

ModelStatus = Literal["missing", "ok", "mismatch", "synthetic"]
_CHUNK = 1024 * 1024


class ModelDownloadError(Exception):
    """The model could not be downloaded (network failure or non-2xx answer)."""


class ModelChecksumError(ModelDownloadError):
    """The downloaded bytes do not have the expected sha256."""

    def __init__(self, path: Path, expected: str, actual: str) -> None:
        self.path = path
        self.expected = expected
        self.actual = actual
        super().__init__(f"sha256 mismatch for {path.name}: expected {expected}, got {actual}")


def synthetic_sidecar(path: Path) -> Path:
    """Sidecar that marks `path` as generated random weights (see engine.synth)."""
    return path.with_name(path.name + ".synthetic.json")


def partial_path(dest: Path) -> Path:
    """Where an in-flight download of `dest` is written before verification."""
    # name + ".part" rather than with_suffix(".part"): model.ckpt and model.safetensors must
    # not share one partial file.
    return dest.with_name(dest.name + ".part")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _norm(sha: str) -> str:
    return sha.strip().lower().removeprefix("sha256:")


def model_status(path: Path, sha256: str | None) -> ModelStatus:
    """Whether `path` is missing, matches `sha256`, mismatches, or is a synthetic stand-in."""
    path = Path(path)
    if not path.is_file():
        return "missing"
    if synthetic_sidecar(path).is_file():
        return "synthetic"
    if sha256 is None:
        return "ok"
    return "ok" if sha256_file(path) == _norm(sha256) else "mismatch"


def fetch_model(
    url: str,
    dest: Path,
    sha256: str,
    *,
    progress: bool = True,
    client: httpx.Client | None = None,
) -> Path:
    """Download `url` to `dest`, verifying `sha256`; skip when `dest` already matches."""
    dest = Path(dest)
    expected = _norm(sha256)
    if dest.is_file():
        if sha256_file(dest) == expected:
            logger.info("%s already present and verified", dest)
            return dest
        logger.warning("%s exists but its sha256 differs; downloading again", dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = partial_path(dest)
    own_client = client is None
    http = client or httpx.Client(follow_redirects=True, timeout=httpx.Timeout(60.0, connect=15.0))
    h = hashlib.sha256()
    try:
        with http.stream("GET", url) as resp:
            if resp.status_code >= 400:
                raise ModelDownloadError(f"GET {url} answered HTTP {resp.status_code}")
            total = int(resp.headers.get("content-length") or 0) or None
            with open(part, "wb") as fh, _progress(progress) as bar:
                task = bar.add_task(dest.name, total=total)
                for chunk in resp.iter_bytes(_CHUNK):
                    fh.write(chunk)
                    h.update(chunk)
                    bar.update(task, advance=len(chunk))
                fh.flush()
                os.fsync(fh.fileno())
        actual = h.hexdigest()
        if actual != expected:
            raise ModelChecksumError(dest, expected, actual)
        os.replace(part, dest)
    except httpx.HTTPError as exc:
        raise ModelDownloadError(f"GET {url} failed: {exc}") from exc
    finally:
        # A refused or interrupted download must never be mistaken for a model later.
        part.unlink(missing_ok=True)
        if own_client:
            http.close()
    logger.info("downloaded %s (sha256 %s)", dest, expected)
    return dest


def _progress(enabled: bool) -> Progress:
    """A rich download bar on stderr; disabled bars still accept updates."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=not enabled,
    )
