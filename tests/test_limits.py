"""Limits everywhere, and secrets never in the logs."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from engine.tenants.keys import create_key
from tests.netfixtures import Listener, listener, respond

TXT = {"prompt": "a red cube", "width": 64, "height": 64, "steps": 2}


def test_request_limits_are_422_naming_the_field(
    api: TestClient, new_key: Callable[[str], dict[str, str]]
) -> None:
    h = new_key("acme")
    cases = [
        ({**TXT, "webhook_url": "https://example.com/" + "x" * 2048}, "webhook_url"),
        ({**TXT, "prompt": "x" * 2001}, "prompt"),
        ({**TXT, "batch_size": 5}, "batch_size"),
        ({**TXT, "width": 2048}, "width"),
    ]
    for body, field in cases:
        r = api.post("/v1/txt2img", json=body, headers=h)
        assert r.status_code == 422, r.text
        assert [e["field"] for e in r.json()["errors"]] == [field]
    r = api.get("/v1/jobs", params={"limt": 5}, headers=h)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "limt"
    assert api.get("/v1/jobs", headers=h).json()["data"] == []


@pytest.fixture
def receiver() -> Iterator[Listener]:
    with listener("127.0.0.1") as lst:
        lst.routes["/hook"] = respond(204, b"", "text/plain")
        yield lst


def test_api_keys_and_webhook_secrets_never_reach_the_logs(
    make_settings: Callable[..., Settings],
    receiver: Listener,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(
        log_level="DEBUG",
        url_allow_http=True,
        url_allow=f"127.0.0.1:{receiver.port}",
        webhook_poll_interval_s=0.1,
    )
    caplog.set_level(logging.DEBUG)
    app = create_app(settings, start_engine=False)
    with TestClient(app, raise_server_exceptions=False) as c:
        with app.state.services.db.session() as s:
            token, _ = create_key(s, "acme")
        h = {"Authorization": f"Bearer {token}"}
        secret = c.get("/v1/webhook-secret", headers=h).json()["secret"]
        job = c.post(
            "/v1/txt2img", json={**TXT, "webhook_url": f"{receiver.base}/hook"}, headers=h
        ).json()
        c.delete(f"/v1/jobs/{job['id']}", headers=h)
        deadline = time.monotonic() + 10
        while not receiver.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        assert receiver.requests
        # Wrong, malformed and revoked-looking keys, on good and bad routes.
        for bad in (token[:-1] + "x", token + token, "sk_" + "a" * 400):
            c.get("/v1/jobs", headers={"Authorization": f"Bearer {bad}"})
        c.get("/v1/nothing", headers=h)
        c.post("/v1/txt2img", content=b"{nope", headers={**h, "Content-Type": "application/json"})
    text = "\n".join(f"{r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records)
    assert caplog.records, "nothing was logged at DEBUG: the test would prove nothing"
    assert token not in text and token[3:] not in text
    assert secret not in text and secret.removeprefix("whsec_") not in text
