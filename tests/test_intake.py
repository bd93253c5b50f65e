"""Intake bounds the work an input implies, and concurrent twins cost nothing extra.

- Animated images (class 1): frames count in the pixel budget and an animated image is a 422
  at intake, by upload, data URL or URL, so the shared ComfyUI never decodes a frame of one.
- Hosts written with non-ASCII digits or letters (class 5): refused as a 422 on the URL-input
  path and as a `webhook_url`, in many spellings, before any connection.
- Two writes of one input at the same moment (class 7): each through its own temporary name.
- Idempotent retries at the quota (class 8): every concurrent retry gets the original job.
"""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from api.app import create_app
from api.services import make_guard
from api.settings import Settings
from engine.db.database import Database
from engine.db.tables import Tenant
from engine.errors import InvalidMedia
from engine.intake.media import check_image
from engine.intake.storage import LocalStorage
from engine.tenants.keys import create_key
from tests.netfixtures import Listener, fake_resolver, listener, respond

Headers = dict[str, str]
TXT = {"prompt": "a red cube", "width": 64, "height": 64, "steps": 2}
PROPERTY = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def image(fmt: str, frames: int, w: int, h: int) -> bytes:
    """An image of `frames` distinct frames (Pillow would merge identical ones)."""
    imgs = [
        Image.new("RGB", (w, h), ((37 * i) % 256, (91 * i) % 256, i % 256)) for i in range(frames)
    ]
    buf = io.BytesIO()
    if frames == 1:
        imgs[0].save(buf, format=fmt)
    else:
        imgs[0].save(buf, format=fmt, save_all=True, append_images=imgs[1:], duration=40, loop=0)
    return buf.getvalue()


def _data_url(data: bytes, fmt: str) -> str:
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(data).decode()


# ---- class 1: animated images ------------------------------------------------------------------


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    fmt=st.sampled_from(["PNG", "WEBP"]),
    frames=st.integers(1, 12),
    w=st.integers(1, 40),
    h=st.integers(1, 40),
    budget=st.integers(1, 40 * 40 * 12),
)
def test_frames_count_in_the_pixel_budget_and_animation_is_refused(
    fmt: str, frames: int, w: int, h: int, budget: int
) -> None:
    data = image(fmt, frames, w, h)
    try:
        got = check_image(
            "image", data, formats=["PNG", "WEBP"], max_bytes=10**7, max_pixels=budget
        )
    except InvalidMedia as e:
        message = e.errors[0]["message"]
        if w * h * frames > budget:
            assert "pixels" in message and str(w * h * frames) in message
        else:
            assert frames > 1 and "animated" in message and f"{frames} frames" in message
        return
    assert frames == 1 and w * h <= budget and (got.width, got.height) == (w, h)


@pytest.fixture
def served_image() -> Iterator[Listener]:
    with listener("127.0.0.1") as lst:
        yield lst


@pytest.fixture
def intake(
    make_settings: Callable[..., Settings], served_image: Listener
) -> Iterator[tuple[TestClient, Headers]]:
    settings = make_settings(
        url_allow_http=True,
        url_allow=f"127.0.0.1:{served_image.port}",
        webhook_dispatch=False,
        rate_limit_write="100000/minute",
        active_job_quota=1000,
    )
    app = create_app(settings, start_engine=False)
    app.state.services.guard = make_guard(settings, resolver=fake_resolver(NAMES))
    with TestClient(app) as c:
        with app.state.services.db.session() as s:
            token, _ = create_key(s, "acme")
        yield c, {"Authorization": f"Bearer {token}"}


def _nothing_stored(c: TestClient, h: Headers) -> None:
    assert c.get("/v1/jobs", headers=h).json()["data"] == []
    inputs: Path = c.app.state.services.storage.root / "inputs"  # type: ignore[attr-defined]
    assert not inputs.exists() or not any(inputs.iterdir())


@PROPERTY
@given(
    fmt=st.sampled_from(["PNG", "WEBP"]),
    frames=st.integers(2, 24),
    side=st.sampled_from([1, 8, 64, 300]),
    how=st.sampled_from(["multipart", "data_url", "url"]),
)
def test_animated_images_are_refused_at_intake_by_every_transport(
    intake: tuple[TestClient, Headers],
    served_image: Listener,
    fmt: str,
    frames: int,
    side: int,
    how: str,
) -> None:
    c, h = intake
    data = image(fmt, frames, side, side)
    if how == "multipart":
        r = c.post(
            "/v1/upscale",
            data={"scale": "2"},
            files={"image": (f"a.{fmt.lower()}", data, f"image/{fmt.lower()}")},
            headers=h,
        )
    elif how == "data_url":
        r = c.post("/v1/upscale", json={"image": _data_url(data, fmt), "scale": 2}, headers=h)
    else:
        served_image.routes["/anim"] = respond(body=data, content_type=f"image/{fmt.lower()}")
        r = c.post("/v1/upscale", json={"image": f"{served_image.base}/anim"}, headers=h)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["type"].endswith("/invalid_media") and [e["field"] for e in body["errors"]] == [
        "image"
    ]
    assert "animated" in body["detail"] or "pixels" in body["detail"]
    _nothing_stored(c, h)


def test_a_still_image_of_each_format_is_accepted(intake: tuple[TestClient, Headers]) -> None:
    c, h = intake
    for fmt in ("PNG", "WEBP", "JPEG"):
        r = c.post("/v1/upscale", json={"image": _data_url(image(fmt, 1, 32, 16), fmt)}, headers=h)
        assert r.status_code == 202, r.text
        assert r.json()["inputs"]["image"]["width"] == 32


# ---- class 5: hosts written with non-ASCII digits and letters ------------------------------------

NAMES = {
    "hooks1.example": ["93.184.216.34"],
    "img2.example": ["127.0.0.1"],
    "pub3.example": ["93.184.216.34"],
}
_DIGIT_BASES = [0xFF10, 0x0660, 0x06F0, 0x0966, 0x09E6, 0x1D7CE, 0x1D7D8, 0x1D7EC, 0x1D7F6]
_DOTS = ["\u3002", "\uff0e", "\uff61"]


def _digit(d: str, base: int) -> str:
    return chr(base + int(d))


@st.composite
def respelled(draw: st.DrawFn, host: str) -> tuple[str, bool]:
    """`host` with some characters replaced by look-alikes; and whether any is a digit or a
    letter (then no single ASCII reading exists; dots alone read the same to every parser)."""
    out, other = [], False
    for ch in host:
        choice = draw(st.integers(0, 2))
        if choice and ch.isdigit():
            base = draw(st.sampled_from(_DIGIT_BASES + [0x245F] * (ch != "0")))
            out.append(_digit(ch, base) if base != 0x245F else chr(0x245F + int(ch)))  # ①..⑨
            other = True
        elif choice and ch.isalpha():
            out.append(chr(0xFF41 + ord(ch) - ord("a")))  # full-width letters
            other = True
        elif choice and ch == ".":
            out.append(draw(st.sampled_from(_DOTS)))
        else:
            out.append(ch)
    text = "".join(out)
    if text == host:  # at least one look-alike
        text, other = host.replace("1", "\uff11", 1).replace("2", "\uff12", 1), True
    return text, other


@PROPERTY
@given(
    spelling=(
        respelled("127.0.0.1") | respelled("img2.example") | respelled("pub3.example")
    ).filter(lambda sp: sp[1]),
    scheme=st.sampled_from(["http", "https"]),
)
def test_non_ascii_hosts_on_the_url_input_path_are_422_not_500(
    intake: tuple[TestClient, Headers],
    served_image: Listener,
    spelling: tuple[str, bool],
    scheme: str,
) -> None:
    # Standard ports, and a name the resolver maps to a public address: the URL passes every
    # other rule, so only the host's spelling stands between it and the HTTP client (which
    # cannot build it, a 500 before round two). The egress tripwire fails any connection.
    c, h = intake
    host, _ = spelling
    r = c.post("/v1/upscale", json={"image": f"{scheme}://{host}/x.png"}, headers=h)
    assert r.status_code == 422, r.text
    body = r.json()
    assert [e["field"] for e in body["errors"]] == ["image"] and "URL refused" in body["detail"]
    assert served_image.connections == []
    _nothing_stored(c, h)


def test_hosts_whose_only_look_alikes_are_dots_read_the_same_everywhere(
    intake: tuple[TestClient, Headers], served_image: Listener
) -> None:
    # Every parser reads 。 ． ｡ as `.`: one ASCII host, checked and reached as such.
    c, h = intake
    served_image.routes["/x.png"] = respond(body=image("PNG", 1, 8, 8))
    for dot in _DOTS:
        url = f"http://127{dot}0{dot}0{dot}1:{served_image.port}/x.png"
        r = c.post("/v1/upscale", json={"image": url}, headers=h)
        assert r.status_code == 202, r.text


@PROPERTY
@given(spelling=respelled("hooks1.example"), field=st.sampled_from(["webhook_url", "url"]))
def test_non_ascii_webhook_hosts_are_refused_at_submit(
    intake: tuple[TestClient, Headers], spelling: tuple[str, bool], field: str
) -> None:
    c, h = intake
    host, lookalike = spelling
    url = f"https://{host}/hook"
    if field == "webhook_url":
        r = c.post("/v1/txt2img", json={**TXT, "webhook_url": url}, headers=h)
    else:
        r = c.put("/v1/webhook-endpoint", json={"url": url}, headers=h)
    if lookalike:
        assert r.status_code == 422, r.text
        assert [e["field"] for e in r.json()["errors"]] == [field]
        assert "URL refused" in r.json()["detail"]
    else:
        assert r.status_code in (200, 202), r.text


def test_ascii_and_punycode_hosts_still_pass(intake: tuple[TestClient, Headers]) -> None:
    c, h = intake
    for url in ("https://hooks1.example/hook", "https://HOOKS1.example./hook"):
        r = c.post("/v1/txt2img", json={**TXT, "webhook_url": url}, headers=h)
        assert r.status_code == 202, r.text


# ---- class 7: two writes of one input at the same moment ---------------------------------------


@settings(max_examples=25, deadline=None, derandomize=True)
@given(writers=st.integers(2, 16), size=st.integers(0, 200_000))
def test_concurrent_writes_of_one_key_never_collide(
    tmp_path_factory: pytest.TempPathFactory, writers: int, size: int
) -> None:
    storage = LocalStorage(tmp_path_factory.mktemp("files"), b"k")
    payloads = [bytes([i]) * size for i in range(writers)]
    start = threading.Barrier(writers)

    def write(data: bytes) -> None:
        start.wait()
        storage.put("inputs/same.png", data, "image/png")

    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(write, payloads))  # any exception is re-raised here
    assert storage.get("inputs/same.png") in payloads
    leftovers = [p.name for p in (storage.root / "inputs").iterdir() if p.name != "same.png"]
    assert leftovers == [], "a temporary file was left behind"


def test_the_same_image_submitted_at_once_is_accepted_every_time(
    intake: tuple[TestClient, Headers],
) -> None:
    c, h = intake
    img = _data_url(image("PNG", 1, 48, 48), "PNG")
    with ThreadPoolExecutor(12) as pool:
        codes = list(
            pool.map(
                lambda _: c.post("/v1/upscale", json={"image": img}, headers=h).status_code,
                range(24),
            )
        )
    assert codes == [202] * 24


# ---- class 8: idempotent retries at the quota ---------------------------------------------------


@pytest.fixture
def quota_app(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    app = create_app(
        make_settings(active_job_quota=3, rate_limit_write="100000/minute"), start_engine=False
    )
    with TestClient(app) as c:
        yield c


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_retries_one_below_the_quota_all_get_the_original_job(
    quota_app: TestClient, round_: int
) -> None:
    c = quota_app
    db: Database = c.app.state.services.db  # type: ignore[attr-defined]
    with db.session() as s:
        token, _ = create_key(s, f"tenant{round_}")
    h = {"Authorization": f"Bearer {token}"}
    for i in range(2):  # one below the quota of 3
        assert c.post("/v1/txt2img", json={**TXT, "seed": i}, headers=h).status_code == 202
    retry = {**h, "Idempotency-Key": f"order-{round_}"}
    barrier = threading.Barrier(30)

    def send(_: int) -> httpx.Response:
        barrier.wait()
        return c.post("/v1/txt2img", json={**TXT, "seed": 99}, headers=retry)

    with ThreadPoolExecutor(30) as pool:
        answers = list(pool.map(send, range(30)))
    assert [r.status_code for r in answers] == [202] * 30, [
        r.text for r in answers if r.status_code != 202
    ]
    assert len({r.json()["id"] for r in answers}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in answers) == 29
    jobs = c.get("/v1/jobs", headers=h).json()["data"]
    assert len(jobs) == 3
    # A new request (no key) is still refused at the quota: the limit holds.
    assert c.post("/v1/txt2img", json=TXT, headers=h).status_code == 429


def test_the_early_quota_check_honours_a_tenant_quota(quota_app: TestClient) -> None:
    c = quota_app
    db: Database = c.app.state.services.db  # type: ignore[attr-defined]
    with db.session() as s:
        token, key = create_key(s, "big")
        tenant = s.get(Tenant, key.tenant_id)
        assert tenant is not None
        tenant.active_job_quota = 5
    h = {"Authorization": f"Bearer {token}"}
    codes = [c.post("/v1/txt2img", json=TXT, headers=h).status_code for _ in range(6)]
    assert codes == [202] * 5 + [429]
