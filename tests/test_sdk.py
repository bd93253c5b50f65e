"""The SDKs' hand-written layers without an engine: the Python one against the app in-process
(jobs stay queued), retries against a fake transport, webhook verification against the
server's own signing; the TypeScript layer's unit tests under node."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from standardwebhooks import Webhook
from stencil_client.api.templates import run_txt2img_v1
from stencil_client.models import (
    JobEventType,
    JobStatus,
    JobWebhookEvent,
    ProblemType,
    Txt2ImgV1Request,
    Txt2ImgV1Sampler,
    UpscaleV1Multipart,
)
from stencil_sdk import (
    ConflictError,
    NotFoundError,
    ServiceUnavailableError,
    Stencil,
    StencilDeprecationWarning,
    ValidationError,
    WebhookVerificationError,
    unwrap,
    upload,
    verify_webhook,
)
from stencil_sdk._sse import iter_events

from engine.jobs.states import QUEUED, SUCCEEDED
from engine.jobs.store import transition
from tests.helpers import serve

ROOT = Path(__file__).resolve().parents[1]
TS_DIST = ROOT / "sdk" / "typescript" / "dist"
TXT = Txt2ImgV1Request(prompt="a red cube", width=64, height=64, steps=2)


def png(w: int = 16, h: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def sdk(api: TestClient, new_key: Callable[[str], dict[str, str]]) -> Iterator[Stencil]:
    """The Python SDK over real HTTP to the test's app (no engine: jobs stay queued)."""
    token = new_key("acme")["Authorization"].removeprefix("Bearer ")
    with serve(api.app) as base, Stencil(base, api_key=token) as stencil:
        yield stencil


def test_submit_typed_models_and_mappings(sdk: Stencil) -> None:
    job = sdk.submit("/v1/txt2img", TXT)
    assert job.status == JobStatus.QUEUED and job.template == "txt2img"
    again = sdk.submit("txt2img", {"prompt": "x", "sampler": Txt2ImgV1Sampler.DPMPP_2M})
    assert again.params.to_dict()["sampler"] == "dpmpp_2m"  # type: ignore[union-attr]
    # The same Idempotency-Key answers with the first job.
    a = sdk.submit("/v1/txt2img", TXT, idempotency_key="k-1")
    assert sdk.submit("/v1/txt2img", TXT, idempotency_key="k-1").id == a.id


def test_upload_from_bytes_path_and_model(sdk: Stencil, tmp_path: Path) -> None:
    data = png(20, 10)
    by_bytes = sdk.submit("/v1/upscale", {"image": data, "scale": 2})
    assert by_bytes.inputs.additional_properties["image"].width == 20
    path = tmp_path / "in.png"
    path.write_bytes(png(24, 12))
    by_path = sdk.submit("/v1/upscale", {"image": path, "method": "bicubic"})
    assert by_path.inputs.additional_properties["image"].width == 24
    model = UpscaleV1Multipart(image=upload(data), scale=3.0)
    assert sdk.submit("/v1/upscale", model).params.to_dict()["scale"] == 3.0  # type: ignore[union-attr]


def test_errors_are_typed(sdk: Stencil) -> None:
    with pytest.raises(ValidationError) as e:
        sdk.submit("/v1/txt2img", {"prompt": "x", "width": 65})
    assert e.value.kind == "validation_error" and e.value.status_code == 422
    assert [f.field for f in e.value.errors] == ["width"]
    assert e.value.problem is not None and e.value.problem.type_ == ProblemType.VALIDATION_ERROR
    with pytest.raises(NotFoundError):
        sdk.get_job("job_missing")
    # The generated functions' unions unwrap to the same exceptions.
    with pytest.raises(ValidationError):
        unwrap(
            run_txt2img_v1.sync_detailed(
                client=sdk.client, body=Txt2ImgV1Request(prompt="x", width=65)
            )
        )


def test_cancel_wait_and_events_end_cleanly(sdk: Stencil, api: TestClient) -> None:
    job = sdk.submit("/v1/txt2img", TXT)
    assert sdk.cancel(job).status == JobStatus.CANCELLED
    (event,) = list(sdk.events(job))
    assert event.type_ == JobEventType.JOB_CANCELLED and event.job.id == job.id
    assert list(sdk.events(job, last_event_id=event.id)) == []  # nothing after the end
    assert sdk.wait(job).status == JobStatus.CANCELLED
    done = sdk.submit("/v1/txt2img", TXT)
    db = api.app.state.services.db  # type: ignore[attr-defined]
    with db.session() as s:  # as a worker would finish it
        assert transition(s, done.id, [QUEUED], SUCCEEDED)
    with pytest.raises(ConflictError) as e:
        sdk.cancel(done)
    assert e.value.problem is not None and e.value.problem.status == 409


def test_jobs_pages_through_everything(sdk: Stencil) -> None:
    ids = [sdk.submit("/v1/txt2img", {"prompt": f"p{i}"}).id for i in range(5)]
    assert [j.id for j in sdk.jobs(page_size=2)] == list(reversed(ids))
    page = sdk.list_jobs(limit=2)
    assert len(page.data) == 2 and isinstance(page.next_cursor, str)
    cancelled = sdk.cancel(ids[0])
    assert [j.id for j in sdk.jobs(status=JobStatus.CANCELLED)] == [cancelled.id]


def test_a_deprecated_route_warns_once(
    make_settings: Callable[..., object], tmp_path: Path
) -> None:
    from datetime import date

    from api.app import create_app
    from engine.tenants.keys import create_key
    from tests.test_openapi import versioned_catalog

    catalog = versioned_catalog(tmp_path, deprecated=date(2026, 11, 1))
    app = create_app(make_settings(catalog=catalog), start_engine=False)  # type: ignore[operator]
    with serve(app) as base:
        with app.state.services.db.session() as s:
            token, _ = create_key(s, "acme")
        stencil = Stencil(base, api_key=token)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            stencil.submit("/v1/txt2img", {"prompt": "x"})
            stencil.submit("/v1/txt2img", {"prompt": "x"})
            stencil.submit("/v2/txt2img", {"prompt": "x"})
        (w,) = [c for c in caught if issubclass(c.category, StencilDeprecationWarning)]
        assert "/v2/txt2img" in str(w.message)
        assert stencil.route("txt2img") == "/v2/txt2img"  # a bare name: the newest major


def test_retries_honour_retry_after() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if len(calls) < 3:
            return httpx.Response(429, headers={"Retry-After": "0"}, json={})
        if request.url.path == "/v1/jobs/job_1":
            return httpx.Response(503, headers={"Retry-After": "0"}, json={})
        return httpx.Response(202, json=_job_json())

    stencil = Stencil("http://x", api_key="k", transport=httpx.MockTransport(handler))
    started = time.monotonic()
    assert stencil.submit("/v1/txt2img", TXT).id == "job_1"
    assert calls == ["POST"] * 3 and time.monotonic() - started < 2
    calls.clear()
    with pytest.raises(ServiceUnavailableError) as e:
        stencil.get_job("job_1")
    assert len(calls) == 4 and e.value.retry_after == 0.0  # 1 + 3 retries


def test_a_post_without_idempotency_key_is_not_retried_on_503() -> None:
    from stencil_sdk._retry import RetryTransport

    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(503, headers={"Retry-After": "0"})

    client = httpx.Client(transport=RetryTransport(httpx.MockTransport(handler)))
    assert client.post("http://x/v1/txt2img", json={}).status_code == 503 and calls == 1
    client.post("http://x/v1/txt2img", json={}, headers={"Idempotency-Key": "k"})
    assert calls == 5


def _job_json() -> dict[str, object]:
    now = datetime.now(UTC).isoformat()
    return {
        "id": "job_1", "object": "job", "template": "txt2img", "template_version": "1.0.0",
        "status": "queued", "progress": 0, "params": {}, "inputs": {}, "graph_hash": "0" * 64,
        "comfyui_version": None, "outputs": [], "error": None, "created_at": now,
        "started_at": None, "finished_at": None, "metering": None, "cost": None, "batch": None,
        "webhook_url": None, "events_url": "https://api.example.com/v1/jobs/job_1/events?token=t",
        "timings": {"queue_seconds": None, "run_seconds": None, "total_seconds": None},
    }  # fmt: skip


def signed_webhook() -> tuple[str, bytes, dict[str, str], float]:
    """A job.succeeded body signed by the server's own library, as the dispatcher signs."""
    from engine.webhooks.delivery import new_secret

    secret = new_secret()
    body = json.dumps(
        {
            "type": "job.succeeded",
            "timestamp": "2026-01-02T03:04:05Z",
            "data": {
                "id": "job_1",
                "object": "job",
                "status": "succeeded",
                "template": "txt2img",
                "template_version": "1.0.0",
                "error": None,
                "created_at": "2026-01-02T03:04:00",
                "outputs": [{"content_type": "image/png", "width": 64, "height": 64, "bytes": 9}],
                "finished_at": "2026-01-02T03:04:05",
                "url": "/v1/jobs/job_1",
            },
        }  # fmt: skip
    ).encode()
    now = time.time()
    stamp = datetime.fromtimestamp(int(now), UTC)
    sig = Webhook(secret).sign("msg_1", stamp, body.decode())
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(int(now)), "webhook-signature": sig}
    return secret, body, headers, now


def test_verify_webhook() -> None:
    secret, body, headers, now = signed_webhook()
    event = verify_webhook(body, headers, secret)
    assert isinstance(event, JobWebhookEvent) and event.data.outputs[0].width == 64
    other = "whsec_" + "A" * 43 + "="
    assert isinstance(verify_webhook(body, headers, [other, secret]), JobWebhookEvent)
    upper = {k.upper(): v for k, v in headers.items()}
    assert verify_webhook(body.decode(), upper, secret).type_.value == "job.succeeded"
    for bad_body, bad_headers, key, when in [
        (body.replace(b"64", b"65"), headers, secret, now),  # tampered
        (body, headers, other, now),  # another tenant's secret
        (body, headers, secret, now + 3600),  # a replay an hour later
        (body, {"webhook-id": "msg_1"}, secret, now),  # unsigned
    ]:
        with pytest.raises(WebhookVerificationError):
            verify_webhook(bad_body, bad_headers, key, now=when)


def test_sse_parser_follows_the_format() -> None:
    lines = [": ping", "event: job.running", "id: 7", 'data: {"a":', "data: 1}", "", "", "x"]
    (ev,) = list(iter_events(lines))
    assert (ev.event, ev.id, ev.data) == ("job.running", "7", '{"a":\n1}')


def test_typescript_layer_unit_tests() -> None:
    """`node --test` on the compiled TypeScript layer (built by `make sdk-check`)."""
    unit = TS_DIST / "test" / "unit.test.js"
    node = shutil.which("node")
    if node is None or not unit.exists():
        if os.environ.get("STENCIL_REQUIRE_SDK") == "1":
            pytest.fail("the TypeScript SDK is not built: run `make sdk-check`", pytrace=False)
        pytest.skip("the TypeScript SDK is not built (`make sdk-check`)")
    secret, body, headers, now = signed_webhook()
    fixture = json.dumps({"secret": secret, "body": body.decode(), "headers": headers, "now": now})
    r = subprocess.run(
        [node, "--test", str(unit)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "STENCIL_WEBHOOK_FIXTURE": fixture},
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "# fail 0" in r.stdout
