"""Schemathesis against the served OpenAPI document: no 5xx, every answer as documented.

Generated requests (valid and invalid) go to the ASGI app in-process with a real API key; the
checks are schemathesis' defaults (server errors, status codes, content types, headers and
response bodies against the schema). Bounded examples keep it near a minute.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import positive_data_acceptance

from api.app import create_app
from api.services import make_guard
from api.settings import Settings
from engine.store import create_key
from tests.netfixtures import fake_resolver

ROOT = Path(__file__).resolve().parents[1]
_AUTH: dict[str, str] = {}
_HOME = Path(tempfile.mkdtemp(prefix="stencil-fuzz-"))  # schemathesis needs the app at import
APP = create_app(
    Settings(  # type: ignore[call-arg]
        _env_file=None,
        home=_HOME,
        catalog=ROOT / "catalog.yaml",
        database_url=f"sqlite:///{_HOME / 'stencil.db'}",
        url_signing_secret="fuzz",
        trusted_hosts="testserver",
        active_job_quota=100_000,
        rate_limit_write="100000/minute",
        rate_limit_read="100000/minute",
        webhook_dispatch=False,
    ),
    start_engine=False,
)
# Generated webhook URLs must never reach real DNS: names resolve through an empty table.
APP.state.services.guard = make_guard(APP.state.services.settings, resolver=fake_resolver({}))
# /ready is 503 by design in a process without an engine (test_e2e covers it with one).
schema = schemathesis.openapi.from_asgi("/openapi.json", APP).exclude(path="/ready")


@pytest.fixture(scope="module", autouse=True)
def _store() -> Iterator[None]:
    """Run the app's lifespan (migrations) and make a key; remove the store afterwards."""
    with TestClient(APP):
        with APP.state.services.db.session() as s:
            token, _ = create_key(s, "fuzz")
        _AUTH["Authorization"] = f"Bearer {token}"
        yield
    shutil.rmtree(_HOME, ignore_errors=True)


@schema.parametrize()
@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_api_matches_its_documentation(case: Any) -> None:
    key = (case.headers or {}).get("Idempotency-Key")
    if isinstance(key, str) and key:
        # Keys are reused across generated cases with other bodies, a 422 by design (tested in
        # test_idempotency); a unique suffix keeps the fuzzer on the rest of the contract.
        case.headers["Idempotency-Key"] = f"{key[:200]}-{uuid.uuid4().hex}"
    # A case whose headers are deliberately wrong (say, Authorization removed) goes out as
    # generated, and must be refused; every other case carries a real key.
    negative_headers = case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER)
    case.call_and_validate(
        headers={} if negative_headers else dict(_AUTH),
        # Valid-by-schema data that the API still refuses is by design where a string carries
        # more than JSON Schema can say (an image, a cursor, a reachable webhook URL).
        excluded_checks=[positive_data_acceptance],
    )
