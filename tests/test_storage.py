"""Storage backends: local HMAC-signed URLs, and S3 against a local S3-speaking server."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from engine.intake.storage import LocalStorage, S3Storage, StorageError


def test_local_put_get_sign_verify(tmp_path: Path) -> None:
    st = LocalStorage(tmp_path, b"k1")
    st.put("jobs/j1/0.png", b"abc", "image/png")
    assert st.get("jobs/j1/0.png") == b"abc" and st.exists("jobs/j1/0.png")
    url, exp = st.url("jobs/j1/0.png", 60)
    assert url.startswith("/v1/files/jobs/j1/0.png?expires=")
    sig = url.split("signature=")[1]
    assert st.verify("jobs/j1/0.png", exp, sig)
    assert not st.verify("jobs/j1/1.png", exp, sig)  # signature is bound to the key
    assert not st.verify("jobs/j1/0.png", exp + 1, sig)  # and to the expiry
    assert not st.verify("jobs/j1/0.png", exp, sig, now=exp + 1)  # expired
    assert not LocalStorage(tmp_path, b"k2").verify("jobs/j1/0.png", exp, sig)
    st.delete("jobs/j1")
    assert not st.exists("jobs/j1/0.png")


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "a/../../b", "a b", ""])
def test_local_refuses_escaping_keys(tmp_path: Path, key: str) -> None:
    with pytest.raises(StorageError):
        LocalStorage(tmp_path, b"k").put(key, b"x", "text/plain")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def test_s3_roundtrip_and_presigned_urls(s3_endpoint: str) -> None:
    st = S3Storage(
        "outputs",
        endpoint_url=s3_endpoint,
        region="us-east-1",
        access_key_id="test",
        secret_access_key="test",
    )
    st.client.create_bucket(Bucket="outputs")
    st.ping()
    st.put("jobs/j1/0.png", b"\x89PNG-bytes", "image/png")
    assert st.get("jobs/j1/0.png") == b"\x89PNG-bytes"
    assert st.exists("jobs/j1/0.png") and not st.exists("jobs/j1/9.png")
    url, exp = st.url("jobs/j1/0.png", 120)
    assert exp >= time.time() + 100
    r = httpx.get(url)
    assert r.status_code == 200 and r.content == b"\x89PNG-bytes"
    assert r.headers["content-type"] == "image/png"
    url2, _ = st.url("jobs/j1/0.png", 120)
    assert httpx.get(url2).content == b"\x89PNG-bytes"
    st.put("jobs/j1/1.png", b"x", "image/png")
    st.delete("jobs/j1/")
    assert not st.exists("jobs/j1/0.png") and not st.exists("jobs/j1/1.png")
    with pytest.raises(StorageError):
        st.get("jobs/j1/0.png")
