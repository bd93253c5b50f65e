"""Where inputs and outputs live: a local folder (embedded) or an S3-compatible bucket.

Only keys are stored on jobs; URLs are signed afresh on every read, so they never go dead.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/")


class StorageError(Exception):
    """A storage operation failed."""


def check_key(key: str) -> str:
    """Refuse keys that could escape the storage root."""
    if not key or key.startswith("/") or ".." in key.split("/") or not KEY_CHARS.issuperset(key):
        raise StorageError(f"bad storage key {key!r}")
    return key


class Storage(Protocol):
    """The storage backend every runner and the API share."""

    # True when `exists` is a local file check (a stat): cheaper on the event loop than the
    # hop to a thread. A network store (S3) is always reached from a thread.
    local: bool

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Store bytes under a key."""

    def get(self, key: str) -> bytes:
        """Read a stored object."""

    def delete(self, key: str) -> None:
        """Delete an object (missing is fine)."""

    def exists(self, key: str) -> bool:
        """True when the key holds an object."""

    def url(self, key: str, expires_in: int) -> tuple[str, int]:
        """A signed URL (absolute, or a path relative to the API) and its expiry (unix s)."""


class LocalStorage:
    """Files under a folder, served by the API at /v1/files/{key} with an HMAC signature."""

    local = True

    def __init__(self, root: Path, secret: bytes, route: str = "/v1/files/") -> None:
        self.root = root
        self.secret = secret
        self.route = route
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Write atomically: a reader never sees half a file.

        Each write has its own temporary name, so concurrent writes of one key (two requests
        with the same input image) each rename a whole file into place and the last one wins,
        instead of sharing one temporary file that the first rename takes from the second.
        """
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; stored files are read like any other
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        """Read a file."""
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise StorageError(f"no object {key}") from None

    def delete(self, key: str) -> None:
        """Delete a file or a whole prefix folder."""
        path = self._path(key)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        """True when the file exists."""
        return self._path(key).is_file()

    def sign(self, key: str, expires: int) -> str:
        """The HMAC-SHA256 signature of a key and its expiry."""
        msg = f"{key}\n{expires}".encode()
        return hmac.new(self.secret, msg, hashlib.sha256).hexdigest()

    def verify(self, key: str, expires: int, sig: str, now: float | None = None) -> bool:
        """True for an unexpired URL with a valid signature."""
        if expires < (now if now is not None else time.time()):
            return False
        if not sig.isascii():  # compare_digest refuses non-ASCII str: a bad link, not a crash
            return False
        return hmac.compare_digest(self.sign(key, expires), sig)

    def url(self, key: str, expires_in: int) -> tuple[str, int]:
        """A relative signed URL, valid for `expires_in` seconds."""
        expires = int(time.time()) + expires_in
        # An integer and a hex digest: nothing to escape (`urlencode` would only cost time).
        q = f"expires={expires}&signature={self.sign(key, expires)}"
        return f"{self.route}{quote(check_key(key))}?{q}", expires


class S3Storage:
    """An S3-compatible bucket (Cloudflare R2 in production) through boto3."""

    local = False

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str = "auto",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        prefix: str = "",
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=Config(signature_version="s3v4", retries={"max_attempts": 3}),
        )

    def _k(self, key: str) -> str:
        return self.prefix + check_key(key)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Upload an object."""
        self.client.put_object(
            Bucket=self.bucket, Key=self._k(key), Body=data, ContentType=content_type
        )

    def get(self, key: str) -> bytes:
        """Download an object."""
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._k(key))["Body"]
            data: bytes = body.read()
            return data
        except self.client.exceptions.NoSuchKey:
            raise StorageError(f"no object {key}") from None

    def delete(self, key: str) -> None:
        """Delete an object, or every object under a prefix ending in '/'."""
        if key.endswith("/"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._k(key)
            )
            for page in pages:
                objs = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if objs:
                    self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": objs})
            return
        self.client.delete_object(Bucket=self.bucket, Key=self._k(key))

    def exists(self, key: str) -> bool:
        """True when the object exists."""
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._k(key))
            return True
        except self.client.exceptions.ClientError:
            return False

    def url(self, key: str, expires_in: int) -> tuple[str, int]:
        """A presigned GET URL, made now from the stored key."""
        url: str = self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": self._k(key)},
            ExpiresIn=expires_in,
        )
        return url, int(time.time()) + expires_in

    def ping(self) -> None:
        """Raise if the bucket cannot be reached."""
        self.client.head_bucket(Bucket=self.bucket)
