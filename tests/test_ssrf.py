"""URL inputs are SSRF-proof: every bypass is refused with a 422 before any connection.

A recording listener on 127.0.0.1 (and ::1) is the target every attack aims at, on a port the
guard allows, so only the address checks stand in the way; `connections` must stay empty. Names
resolve through an injected table (never real DNS), and the suite-wide egress tripwire in
conftest fails any test whose traffic would have left the machine.
"""

from __future__ import annotations

import io
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.app import create_app
from api.services import make_guard
from api.settings import Settings
from engine.errors import InvalidMedia
from engine.intake.fetch import UrlGuard, UrlRefused, parse_allow
from engine.tenants.keys import create_key
from tests.netfixtures import Listener, fake_resolver, listener, redirect, respond

Headers = dict[str, str]


def png(w: int = 16, h: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (1, 2, 3)).save(buf, format="PNG")
    return buf.getvalue()


NAMES = {
    "evil.example": ["127.0.0.1"],
    "v6.example": ["::1"],
    "mapped.example": ["::ffff:127.0.0.1"],
    "rebind.example": ["93.184.216.34", "127.0.0.1"],
    "meta.example": ["169.254.169.254"],
    "private.example": ["10.0.0.7"],
    "cgnat.example": ["100.64.1.1"],
    "zero.example": ["0.0.0.0"],
    "127.0.0.1.nip.io": ["127.0.0.1"],
    "public.example": ["93.184.216.34"],
}


@pytest.fixture
def trap() -> Iterator[Listener]:
    """The target of every attack: it must never see a connection."""
    with listener("127.0.0.1") as lst:
        lst.routes["/x.png"] = respond(body=png())
        yield lst


@pytest.fixture
def trap6(trap: Listener) -> Iterator[Listener | None]:
    """The same port on ::1, when this machine has IPv6 loopback."""
    try:
        with listener("::1", trap.port) as lst:
            lst.routes["/x.png"] = respond(body=png())
            yield lst
    except OSError:
        yield None


@pytest.fixture
def good() -> Iterator[Listener]:
    """An allowlisted origin (127.0.0.1 on its own port only), serving images and redirects."""
    with listener("127.0.0.1") as lst:
        lst.routes["/ok.png"] = respond(body=png(20, 10))
        yield lst


@pytest.fixture
def client(
    make_settings: Callable[..., Settings], trap: Listener, good: Listener
) -> Iterator[tuple[TestClient, Headers]]:
    """The API with http allowed and the trap's port allowed: only the address rules refuse."""
    settings = make_settings(
        url_allow_http=True,
        url_ports=f"80,443,{trap.port}",
        url_allow=f"127.0.0.1:{good.port}",
        url_read_timeout_s=1.0,
        webhook_dispatch=False,
        rate_limit_write="1000/minute",
    )
    app = create_app(settings, start_engine=False)
    app.state.services.guard = make_guard(settings, resolver=fake_resolver(NAMES))
    with TestClient(app) as c:
        with app.state.services.db.session() as s:
            token, _ = create_key(s, "acme")
        yield c, {"Authorization": f"Bearer {token}"}


def _attacks(p: int) -> list[str]:
    return [
        # literal and encoded loopback
        f"http://127.0.0.1:{p}/x.png",
        f"http://127.0.0.2:{p}/x.png",
        f"http://2130706433:{p}/x.png",
        f"http://017700000001:{p}/x.png",
        f"http://0177.0.0.1:{p}/x.png",
        f"http://0x7f.0.0.1:{p}/x.png",
        f"http://0x7f000001:{p}/x.png",
        f"http://0x7F.1:{p}/x.png",
        f"http://127.1:{p}/x.png",
        f"http://127.0.1:{p}/x.png",
        f"http://%31%32%37.0.0.1:{p}/x.png",
        f"http://\u2460\u2461\u2466.0.0.1:{p}/x.png",
        f"http://0.0.0.0:{p}/x.png",
        f"http://0:{p}/x.png",
        # IPv6 and mapped forms
        f"http://[::1]:{p}/x.png",
        f"http://[0:0:0:0:0:0:0:1]:{p}/x.png",
        f"http://[::ffff:127.0.0.1]:{p}/x.png",
        f"http://[::ffff:7f00:1]:{p}/x.png",
        f"http://[0:0:0:0:0:ffff:7f00:1]:{p}/x.png",
        f"http://[::127.0.0.1]:{p}/x.png",
        f"http://[64:ff9b::7f00:1]:{p}/x.png",
        f"http://[2002:7f00:1::]:{p}/x.png",
        f"http://[::]:{p}/x.png",
        # localhost names
        f"http://localhost:{p}/x.png",
        f"http://LOCALHOST:{p}/x.png",
        f"http://localhost.:{p}/x.png",
        f"http://api.localhost:{p}/x.png",
        f"http://printer.local:{p}/x.png",
        f"http://metadata.google.internal:{p}/x.png",
        f"http://intranet:{p}/x.png",
        # DNS names resolving to private addresses
        f"http://evil.example:{p}/x.png",
        f"http://v6.example:{p}/x.png",
        f"http://mapped.example:{p}/x.png",
        f"http://rebind.example:{p}/x.png",
        f"http://zero.example:{p}/x.png",
        f"http://127.0.0.1.nip.io:{p}/x.png",
        "http://meta.example/latest/meta-data/",
        "http://private.example/x.png",
        "http://cgnat.example/x.png",
        # private, link-local, metadata, CGNAT, multicast, reserved literals
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "http://[::ffff:a9fe:a9fe]/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://10.0.0.1/x.png",
        "http://172.16.0.1/x.png",
        "http://192.168.1.1/x.png",
        "http://100.64.0.1/x.png",
        "http://[fe80::1]/x.png",
        "http://[fc00::1]/x.png",
        "http://224.0.0.1/x.png",
        "http://[ff02::1]/x.png",
        "http://240.0.0.1/x.png",
        "http://255.255.255.255/x.png",
        "http://198.18.0.1/x.png",
        "http://192.0.2.1/x.png",
        "http://[2001:db8::1]/x.png",
        # schemes and credentials
        f"ftp://127.0.0.1:{p}/x.png",
        "file:///etc/passwd",
        f"gopher://127.0.0.1:{p}/_GET",
        f"dict://127.0.0.1:{p}/info",
        "javascript:alert(1)",
        f"http://user:pw@127.0.0.1:{p}/x.png",
        f"http://public.example@127.0.0.1:{p}/x.png",
        "http://user@public.example/x.png",
        # ports
        "http://public.example:22/x.png",
        "https://public.example:6379/x.png",
    ]


def _assert_refused(r: Any, field: str = "image") -> None:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["type"].endswith(("/invalid_media", "/validation_error")), body
    assert [e["field"] for e in body["errors"]] == [field], body
    assert body["detail"].startswith(f"{field}: ")


def test_every_bypass_attempt_is_refused_before_connecting(
    client: tuple[TestClient, Headers], trap: Listener, trap6: Listener | None, good: Listener
) -> None:
    c, h = client
    refused = []
    for url in _attacks(trap.port):
        r = c.post("/v1/upscale", json={"image": url, "scale": 2}, headers=h)
        _assert_refused(r)
        refused.append((url, r.json()["detail"]))
    assert trap.connections == [], "an attack reached the listener"
    assert trap6 is None or trap6.connections == []
    assert good.connections == []
    assert c.get("/v1/jobs", headers=h).json()["data"] == []
    # Each refusal says why, in words a caller can act on.
    for url, detail in refused:
        assert "refused" in detail or "expected" in detail, (url, detail)


def test_redirects_to_private_targets_are_refused(
    client: tuple[TestClient, Headers], trap: Listener, good: Listener
) -> None:
    c, h = client
    p = trap.port
    targets = {
        "/to-trap": f"http://127.0.0.1:{p}/x.png",
        "/to-name": f"http://evil.example:{p}/x.png",
        "/to-v6": f"http://[::1]:{p}/x.png",
        "/to-mapped": f"http://[::ffff:127.0.0.1]:{p}/x.png",
        "/to-decimal": f"http://2130706433:{p}/x.png",
        "/to-localhost": f"http://localhost:{p}/x.png",
        "/to-meta": "http://169.254.169.254/latest/meta-data/",
        "/to-file": "file:///etc/passwd",
        "/to-creds": f"http://a:b@127.0.0.1:{good.port}/ok.png",
        "/to-other-port": f"http://127.0.0.1:{good.port + 1 if good.port < 65535 else 1}/x",
    }
    for path, location in targets.items():
        good.routes[path] = redirect(location)
    for i, path in enumerate(targets):
        good.routes[f"/via{i}"] = redirect(path, 307)  # a relative hop first
        r = c.post("/v1/upscale", json={"image": f"{good.base}/via{i}", "scale": 2}, headers=h)
        _assert_refused(r)
    assert trap.connections == []
    assert c.get("/v1/jobs", headers=h).json()["data"] == []


def test_redirect_chain_is_capped_at_three(
    client: tuple[TestClient, Headers], good: Listener
) -> None:
    c, h = client
    for i in range(1, 5):
        good.routes[f"/r{i}"] = redirect(f"/r{i + 1}" if i < 4 else "/ok.png")
    good.routes["/r5"] = redirect("/ok.png")
    ok = c.post("/v1/upscale", json={"image": f"{good.base}/r2", "scale": 2}, headers=h)
    assert ok.status_code == 202, ok.text  # r2 -> r3 -> r4 -> ok.png: three redirects
    r = c.post("/v1/upscale", json={"image": f"{good.base}/r1", "scale": 2}, headers=h)
    _assert_refused(r)
    assert "redirects" in r.json()["detail"]


def test_allowlisted_fetch_succeeds_and_is_stored_like_an_upload(
    client: tuple[TestClient, Headers], good: Listener
) -> None:
    c, h = client
    r = c.post("/v1/upscale", json={"image": f"{good.base}/ok.png", "scale": 2}, headers=h)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["inputs"]["image"]["width"] == 20 and job["inputs"]["image"]["height"] == 10
    assert job["params"]["image"] == {"sha256": job["inputs"]["image"]["sha256"]}
    (req,) = good.requests
    assert req["headers"]["Accept-Encoding"] == "identity"
    # Multipart text fields take URLs too.
    r2 = c.post(
        "/v1/upscale",
        files={"image": (None, f"{good.base}/ok.png"), "scale": (None, "2")},
        headers=h,
    )
    assert r2.status_code == 202, r2.text


@pytest.mark.parametrize(
    ("route", "message"),
    [
        (respond(body=b"<html></html>", content_type="text/html"), "content type 'text/html'"),
        (respond(body=b"not an image at all"), "not a decodable image"),
        (respond(body=png(2100, 2100)), "pixels"),
        (respond(status=404, body=b""), "answered 404"),
        (respond(body=b"x", headers={"X-Pad": "1"}, content_type="image/gif"), "image/gif"),
        (respond(body=b"\0" * (10_485_760 + 1), chunked=True), "over the limit"),
        (respond(body=png(), delay_s=2.0), "timed out"),
    ],
)
def test_fetched_content_is_checked(
    client: tuple[TestClient, Headers], good: Listener, route: Any, message: str
) -> None:
    c, h = client
    good.routes["/thing"] = route
    r = c.post("/v1/upscale", json={"image": f"{good.base}/thing", "scale": 2}, headers=h)
    _assert_refused(r)
    assert message in r.json()["detail"], r.json()["detail"]
    assert c.get("/v1/jobs", headers=h).json()["data"] == []


def test_declared_oversize_is_refused_before_reading(good: Listener) -> None:
    import asyncio

    def big(hd: Any) -> None:
        hd.send_response(200)
        hd.send_header("Content-Type", "image/png")
        hd.send_header("Content-Length", str(50_000_000))
        hd.end_headers()
        hd.wfile.write(b"\x89PNG")  # and then nothing: reading on would hang

    good.routes["/big"] = big
    guard = UrlGuard(allow_http=True, allow=parse_allow(f"127.0.0.1:{good.port}"))
    with pytest.raises(InvalidMedia, match="50000000 bytes; the limit is 1000"):
        asyncio.run(
            guard.fetch_image(
                "image", f"{good.base}/big", formats=["PNG"], max_bytes=1000, max_pixels=10**6
            )
        )


def test_total_timeout_bounds_a_slow_server(good: Listener) -> None:
    import asyncio
    import time

    good.routes["/slow"] = respond(body=png(), delay_s=1.5)
    guard = UrlGuard(
        allow_http=True,
        allow=parse_allow(f"127.0.0.1:{good.port}"),
        read_timeout_s=10,
        total_timeout_s=0.3,
    )
    t0 = time.monotonic()
    with pytest.raises(InvalidMedia, match="longer than 0.3 s"):
        asyncio.run(
            guard.fetch_image(
                "image", f"{good.base}/slow", formats=["PNG"], max_bytes=10**6, max_pixels=10**6
            )
        )
    assert time.monotonic() - t0 < 1.2


def test_defaults_refuse_http_and_loopback(
    make_settings: Callable[..., Settings], good: Listener
) -> None:
    app = create_app(make_settings(webhook_dispatch=False), start_engine=False)
    with TestClient(app) as c:
        with app.state.services.db.session() as s:
            token, _ = create_key(s, "acme")
        h = {"Authorization": f"Bearer {token}"}
        r = c.post("/v1/upscale", json={"image": f"{good.base}/ok.png"}, headers=h)
        _assert_refused(r)
        assert "scheme 'http'" in r.json()["detail"]
        r = c.post("/v1/upscale", json={"image": "https://127.0.0.1/ok.png"}, headers=h)
        _assert_refused(r)
        assert "Loopback" in r.json()["detail"]
    assert good.connections == []


def test_allowlist_is_one_address_on_one_port(good: Listener, trap: Listener) -> None:
    import asyncio

    guard = UrlGuard(
        allow_http=True,
        ports=frozenset({80, 443, trap.port}),
        allow=parse_allow(f"127.0.0.1:{good.port}"),
        resolver=fake_resolver(NAMES),
    )
    asyncio.run(guard.check(f"{good.base}/ok.png"))
    for url in (
        f"http://127.0.0.1:{trap.port}/x.png",  # the allowlisted address on another port
        f"http://evil.example:{good.port}/ok.png",  # a name pointing at it
        f"http://127.0.0.2:{good.port}/ok.png",  # a neighbour
        f"http://[::ffff:127.0.0.1]:{good.port}/ok.png",  # another form of it
        f"http://public.example:{good.port}/ok.png",  # a public host on the odd port
    ):
        with pytest.raises(UrlRefused):
            asyncio.run(guard.check(url))
    assert good.connections == [] and trap.connections == []


def test_webhook_url_is_guarded_at_submit(
    client: tuple[TestClient, Headers], trap: Listener
) -> None:
    c, h = client
    for url in (
        f"http://127.0.0.1:{trap.port}/hook",
        f"http://evil.example:{trap.port}/hook",
        "http://169.254.169.254/hook",
        "ftp://public.example/hook",
        "https://a:b@public.example/hook",
        "http://nowhere.example/hook",
    ):
        r = c.post(
            "/v1/txt2img",
            json={"prompt": "x", "width": 64, "height": 64, "webhook_url": url},
            headers=h,
        )
        _assert_refused(r, "webhook_url")
    assert trap.connections == []
    assert c.get("/v1/jobs", headers=h).json()["data"] == []


def test_the_tripwire_itself_refuses_egress() -> None:
    """The suite's safety net: a connect to a non-loopback address never leaves."""
    from tests import conftest

    with socket.socket() as s, pytest.raises(PermissionError, match="tripwire"):
        s.connect(("192.0.2.1", 9))
    assert conftest.EGRESS_ATTEMPTS == ["connect ('192.0.2.1', 9)"]
    conftest.EGRESS_ATTEMPTS.clear()
