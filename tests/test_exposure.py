"""What a request can make the service expose or spend on everyone's behalf.

- Logs (class 9): API keys sent in query strings, URL signatures and secrets never reach a
  log line: the redactor is checked on generated spellings, and a real `stencil serve`
  process's access log is read after requests that carry them.
- The Host header (class 10): without STENCIL_PUBLIC_BASE_URL only trusted names are served,
  so a forged Host never chooses where output links point; production requires the base URL.
- Open event streams (class 11): bounded per API key, so one key cannot hold a hundred.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.app import create_app
from api.logs import REDACTED, SAFE_QUERY, redact
from api.settings import Settings, SettingsError
from engine.db.database import Database, utcnow
from engine.intake.storage import LocalStorage
from engine.jobs.states import QUEUED, RUNNING, SUCCEEDED
from engine.jobs.store import transition
from engine.tenants.keys import create_key
from tests.servers import served

ROOT = Path(__file__).resolve().parents[1]
TXT = {"prompt": "a red cube", "width": 64, "height": 64, "steps": 2}
PROPERTY = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# ---- class 9: secrets and capabilities in logs --------------------------------------------------

token_chars = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", min_size=20
)
param_names = st.sampled_from(
    ["api_key", "API_KEY", "apiKey", "key", "token", "access_token", "auth", "signature",
     "X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token", "sig", "password", "k"]
)  # fmt: skip


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    name=param_names,
    value=token_chars,
    prefix=st.sampled_from(["", "sk_", "whsec_"]),
    path=st.sampled_from(["/v1/jobs", "/v1/files/jobs/job_1/0.png", "/", "/v1/usage"]),
    before=st.sampled_from(["", "limit=5&", "expires=1700000000&", "status=queued&"]),
    after=st.sampled_from(["", "&limit=5", "#frag", " HTTP/1.1"]),
    frame=st.sampled_from(['127.0.0.1:5 - "GET {} HTTP/1.1" 200', "fetching {} failed", "{}"]),
)
def test_no_secret_query_value_survives_redaction(
    name: str, value: str, prefix: str, path: str, before: str, after: str, frame: str
) -> None:
    secret = prefix + value
    line = frame.format(f"{path}?{before}{name}={secret}{after}")
    clean = redact(line)
    assert secret not in clean and value not in clean, clean
    assert f"{name}={REDACTED}" in clean or f"{prefix}{REDACTED}" in clean
    for safe in ("limit=5", "expires=1700000000", "status=queued"):
        if safe in line:
            assert safe in clean  # what is safe to read stays readable


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    value=token_chars,
    kind=st.sampled_from(["sk_", "whsec_", "Bearer ", "bearer  ", "sk%5F"]),
    around=st.sampled_from(["{}", "key {} refused", "Authorization: {}", "'{}'", "x={}"]),
)
def test_keys_and_secrets_are_redacted_anywhere_in_a_line(
    value: str, kind: str, around: str
) -> None:
    clean = redact(around.format(kind + value))
    assert value not in clean, clean


@settings(max_examples=100, deadline=None, derandomize=True)
@given(name=st.sampled_from(sorted(SAFE_QUERY)), value=st.text(alphabet="abc0123-:", max_size=20))
def test_safe_query_values_are_kept(name: str, value: str) -> None:
    line = f"GET /v1/jobs?{name}={value} HTTP/1.1"
    assert redact(line) == line


def test_task_names_are_not_mistaken_for_keys() -> None:
    assert redact("task_id ask_me disk_usage") == "task_id ask_me disk_usage"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_access_log_of_a_served_process_holds_no_key_and_no_signature(
    tmp_path: Path,
) -> None:
    db_url = f"sqlite:///{tmp_path / 'stencil.db'}"
    db = Database(db_url)
    db.migrate()
    with db.session() as s:
        token, _ = create_key(s, "acme")
    db.dispose()
    secret = "log-test-signing-secret"
    storage = LocalStorage(tmp_path / "home" / "files", secret.encode())
    storage.put("jobs/job_x/0.png", b"\x89PNG not really", "image/png")
    signed, _ = storage.url("jobs/job_x/0.png", 3600)
    signature = signed.split("signature=")[1]
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("STENCIL_")},
        "STENCIL_HOME": str(tmp_path / "home"),
        "STENCIL_CATALOG": str(ROOT / "catalog.yaml"),
        "STENCIL_DATABASE_URL": db_url,
        "STENCIL_PORT": str(port),
        "STENCIL_COMFYUI_URL": f"http://127.0.0.1:{free_port()}",  # no engine: not needed here
        "STENCIL_URL_SIGNING_SECRET": secret,
        "STENCIL_LOG_LEVEL": "DEBUG",
    }
    log = tmp_path / "serve.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "api", "serve"],
            cwd=ROOT,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        with httpx.Client(base_url=base, timeout=10) as c:
            for name in ("api_key", "key", "token", "access_token", "Authorization"):
                r = c.get(f"/v1/jobs?{name}={quote(token)}")
                assert r.status_code in (401, 422), r.text
            c.get(f"/v1/jobs/{token}", headers={"Authorization": f"Bearer {token}"})
            assert c.get(signed).status_code == 200
            forged = signature[:-1] + ("1" if signature.endswith("0") else "0")
            assert c.get(signed.replace(signature, forged)).status_code == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert '"GET /v1/files/jobs/job_x/0.png?expires=' in text, "no access log: proves nothing"
    assert token not in text and token.removeprefix("sk_") not in text
    assert signature not in text and forged not in text and signature[:-1] not in text


# ---- class 10: the Host header and the public base URL -------------------------------------------


def _finished_with_output(c: TestClient, h: dict[str, str]) -> str:
    job = c.post("/v1/txt2img", json=TXT, headers=h).json()
    services = c.app.state.services  # type: ignore[attr-defined]
    services.storage.put(f"jobs/{job['id']}/0.png", b"png", "image/png")
    out = {"key": f"jobs/{job['id']}/0.png", "content_type": "image/png"}
    out |= {"width": 64, "height": 64, "bytes": 3}
    with services.db.session() as s:
        transition(s, job["id"], [QUEUED], RUNNING, started_at=utcnow())
        transition(s, job["id"], [RUNNING], SUCCEEDED, finished_at=utcnow(), outputs=[out])
    return str(job["id"])


@pytest.fixture
def local(make_settings: Callable[..., Settings]) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """The local default: no public base URL, trusted hosts from the settings' defaults."""
    app = create_app(make_settings(trusted_hosts=""), start_engine=False)
    with TestClient(app, base_url="http://127.0.0.1:8000") as c:
        with app.state.services.db.session() as s:
            token, _ = create_key(s, "acme")
        yield c, {"Authorization": f"Bearer {token}"}


hostnames = st.from_regex(r"\A[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,10}){0,3}\Z")
forged = st.one_of(
    hostnames.filter(lambda h: h not in ("localhost",)),
    st.sampled_from(
        ["evil.example", "127.0.0.1.evil.example", "localhost.evil", "[::2]", "0.0.0.0", "::1x"]
    ),
).flatmap(lambda h: st.sampled_from([h, f"{h}:8000", f"{h}:443"]))


@PROPERTY
@given(host=forged)
def test_a_forged_host_is_refused_and_never_chooses_the_links(
    local: tuple[TestClient, dict[str, str]], host: str
) -> None:
    c, h = local
    r = c.get("/v1/jobs", headers={**h, "Host": host})
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["type"].endswith("/untrusted_host") and body["field"] == "Host"


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost", "LOCALHOST:9", "[::1]:8000"])
def test_trusted_hosts_are_served_and_their_links_are_theirs(
    local: tuple[TestClient, dict[str, str]], host: str
) -> None:
    c, h = local
    job_id = _finished_with_output(c, h)
    r = c.get(f"/v1/jobs/{job_id}", headers={**h, "Host": host})
    assert r.status_code == 200, r.text
    link = urlsplit(r.json()["outputs"][0]["url"])
    assert link.netloc.lower() == host.lower()


@PROPERTY
@given(host=forged)
def test_with_a_public_base_url_the_host_header_chooses_nothing(
    make_settings: Callable[..., Settings], host: str
) -> None:
    app = create_app(
        make_settings(public_base_url="https://api.stencil.example", trusted_hosts=""),
        start_engine=False,
    )
    with TestClient(app) as c:
        with app.state.services.db.session() as s:
            token, _ = create_key(s, "acme")
        h = {"Authorization": f"Bearer {token}"}
        job_id = _finished_with_output(c, h)
        r = c.get(f"/v1/jobs/{job_id}", headers={**h, "Host": host})
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["url"].startswith("https://api.stencil.example/v1/files/")


def test_production_refuses_to_serve_without_a_public_base_url() -> None:
    prod: dict[str, Any] = {
        "_env_file": None,
        "env": "production",
        "database_url": "postgresql://u@db/stencil",
        "storage": "s3",
        "s3_bucket": "out",
        "catalog": ROOT / "catalog.yaml",
    }
    with pytest.raises(SettingsError, match="STENCIL_PUBLIC_BASE_URL"):
        create_app(Settings(**prod), start_engine=False)
    with pytest.raises(ValueError, match="http"):
        Settings(**{**prod, "public_base_url": "ftp://x"})


# ---- class 11: open event streams per key -------------------------------------------------------


def test_open_streams_are_bounded_per_key(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings(streams_per_key=3), start_engine=False)
    with served(app) as base, ExitStack() as stack:
        with app.state.services.db.session() as s:
            token_a, key_a = create_key(s, "acme")
            token_b, _ = create_key(s, "acme")
        a = {"Authorization": f"Bearer {token_a}"}
        b = {"Authorization": f"Bearer {token_b}"}
        client = stack.enter_context(httpx.Client(base_url=base, timeout=10))
        job = client.post("/v1/txt2img", json=TXT, headers=a).json()  # stays queued: no engine
        url = f"/v1/jobs/{job['id']}/events"

        def open_stream(h: dict[str, str]) -> tuple[ExitStack, httpx.Response]:
            one = ExitStack()
            r = one.enter_context(client.stream("GET", url, headers=h))
            if r.status_code == 200:
                lines = r.iter_lines()  # kept: dropping the iterator would close the stream
                one.callback(lines.close)
                next(lines)  # the first event: the stream is established
            else:
                r.read()
            stack.callback(one.close)
            return one, r

        held = [open_stream(a) for _ in range(3)]
        assert [r.status_code for _, r in held] == [200] * 3
        _, over = open_stream(a)
        assert over.status_code == 429, over.text
        assert over.json()["type"].endswith("/too_many_streams") and over.json()["limit"] == 3
        assert int(over.headers["retry-after"]) > 0
        other, r_b = open_stream(b)  # another key, even of the same tenant, is not affected
        assert r_b.status_code == 200
        other.close()
        held[0][0].close()  # close one: its slot comes back
        slots = app.state.services.streams
        deadline = time.monotonic() + 10
        while slots.open(key_a.id) > 2:
            assert time.monotonic() < deadline, "the closed stream kept its slot"
            time.sleep(0.05)
        _, again = open_stream(a)
        assert again.status_code == 200
