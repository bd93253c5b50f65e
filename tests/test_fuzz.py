"""Schemathesis against the served OpenAPI document: no 5xx, every answer as documented, on
SQLite and on PostgreSQL.

Generated requests (valid and invalid) go to the ASGI app in-process with a real API key; the
checks are schemathesis' defaults (server errors, status codes, content types, headers and
response bodies against the schema). Two runs per database:

- stateless: every operation on its own, valid and invalid data;
- stateful: scenarios that follow links (inferred by schemathesis from the document: a created
  job's id into its read, cancel, event stream, webhook log and replay; an event's id into its
  read and replay), so generated junk meets real rows too.

Part of the generated cases carry hostile spellings (`tests/hostile.py`): control characters
in ids, filters and cursors, datetimes at the ends of the calendar, JSON bodies past the
parser limits. Examples are bounded to keep both databases near two minutes together.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    positive_data_acceptance,
    response_schema_conformance,
)
from sqlalchemy import create_engine, text

from api.app import create_app
from api.services import make_guard
from api.settings import Settings
from engine.tenants.keys import create_key
from tests.conftest import PG_URL, _fresh_pg_database
from tests.hostile import hostile_case
from tests.netfixtures import fake_resolver

pytestmark = pytest.mark.fuzz
ROOT = Path(__file__).resolve().parents[1]
# Valid-by-schema data that the API still refuses is by design where a string carries more
# than JSON Schema can say (an image, a cursor, a reachable webhook URL).
EXCLUDED = [positive_data_acceptance]


def _pg_reachable() -> bool:
    try:
        engine = create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as c:
            c.execute(text("SELECT 1"))
        engine.dispose()
        return True
    except Exception:
        return False


class Target:
    """One app on one database, built at import (schemathesis reads its document then)."""

    def __init__(self, name: str, database_url: str) -> None:
        self.name = name
        self.home = Path(tempfile.mkdtemp(prefix=f"stencil-fuzz-{name}-"))
        self.auth: dict[str, str] = {}
        self.app: FastAPI = create_app(
            Settings(  # type: ignore[call-arg]
                _env_file=None,
                home=self.home,
                catalog=ROOT / "catalog.yaml",
                database_url=database_url or f"sqlite:///{self.home / 'stencil.db'}",
                url_signing_secret="fuzz",
                trusted_hosts="testserver",
                active_job_quota=100_000,
                rate_limit_write="100000/minute",
                rate_limit_read="100000/minute",
                webhook_dispatch=False,
            ),
            start_engine=False,
        )
        services = self.app.state.services
        # Generated webhook URLs must never reach real DNS: names resolve through an empty table.
        services.guard = make_guard(services.settings, resolver=fake_resolver({}))
        # /ready is 503 by design in a process without an engine (test_e2e covers it with one).
        self.schema = schemathesis.openapi.from_asgi("/openapi.json", self.app).exclude(
            path="/ready"
        )
        # Some generated cases carry hostile spellings (control characters in ids, filters
        # and cursors, edge datetimes, JSON past the parser limits): see tests/hostile.py.
        self.schema.hooks.register_hook_with_name(hostile_case, "flatmap_case")

    @property
    def client(self) -> TestClient:
        return TestClient(self.app, base_url="http://testserver")


SQLITE = Target("sqlite", "")
PG = Target("postgres", _fresh_pg_database()) if _pg_reachable() else None


@pytest.fixture(scope="module", autouse=True)
def _stores() -> Iterator[None]:
    """Run each app's lifespan (migrations) and make a key; remove the homes afterwards."""
    with SQLITE.client:
        if PG is None:
            _key(SQLITE)
            yield
        else:
            with PG.client:
                _key(SQLITE)
                _key(PG)
                yield
    for t in (SQLITE, PG):
        if t is not None:
            shutil.rmtree(t.home, ignore_errors=True)


def _key(t: Target) -> None:
    with t.app.state.services.db.session() as s:
        token, _ = create_key(s, "fuzz")
    t.auth["Authorization"] = f"Bearer {token}"


def _prepare(t: Target, case: Any) -> dict[str, str]:
    """The headers to send: a real key unless the case's headers are deliberately wrong."""
    key = (case.headers or {}).get("Idempotency-Key")
    if isinstance(key, str) and key:
        # Keys are reused across generated cases with other bodies, a 422 by design (tested in
        # test_idempotency); a unique suffix keeps the fuzzer on the rest of the contract.
        case.headers["Idempotency-Key"] = f"{key[:200]}-{uuid.uuid4().hex}"
    negative_headers = case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER)
    return {} if negative_headers else dict(t.auth)


def _excluded(case: Any) -> list[Any]:
    """The checks left out for `case`: `EXCLUDED`, and for a negative multipart body, the
    check that it is refused. A multipart field is text on the wire: a value the schema calls
    a number (a prompt of 0.0) arrives as its text, which a string field rightly accepts, so a
    type mutation of a multipart body is not negative once sent. Refusals of malformed
    multipart bodies are tested in tests/test_api.py and tests/test_intake.py."""
    if (
        case.media_type == "multipart/form-data"
        and case.meta is not None
        and case.meta.is_negative_at(ParameterLocation.BODY)
    ):
        return [*EXCLUDED, negative_data_rejection]
    return list(EXCLUDED)


STATELESS = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)


@SQLITE.schema.parametrize()
@STATELESS
def test_api_matches_its_documentation_sqlite(case: Any) -> None:
    case.call_and_validate(headers=_prepare(SQLITE, case), excluded_checks=_excluded(case))


pg_only = pytest.mark.skipif(PG is None, reason="PostgreSQL is not reachable at PG_URL")
_PG_SCHEMA = PG.schema if PG is not None else SQLITE.schema


@pytest.mark.postgres
@pg_only
@_PG_SCHEMA.parametrize()
@STATELESS
def test_api_matches_its_documentation_postgres(case: Any) -> None:
    assert PG is not None
    case.call_and_validate(headers=_prepare(PG, case), excluded_checks=_excluded(case))


STATEFUL = settings(
    max_examples=100,
    stateful_step_count=10,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)


def _machine(t: Target) -> Any:
    base = t.schema.as_state_machine()

    class Machine(base):  # type: ignore[misc,valid-type]
        def call(self, case: Any, **kwargs: Any) -> Any:
            waits = case.operation.path == "/v1/jobs/{job_id}" and (case.query or {}).get("wait")
            if (
                case.operation.path == "/v1/jobs/{job_id}/events" or waits
            ) and case.method == "GET":
                # A stream (and a `?wait=` read) follows its job to the end, and no engine runs
                # here: finish the job first (a cancel) so it answers at once.
                job_id = (case.path_parameters or {}).get("job_id")
                if isinstance(job_id, str) and job_id.isascii() and job_id.isprintable():
                    # No `with`: the app's lifespan is already running.
                    TestClient(t.app).delete(f"/v1/jobs/{quote(job_id, safe='')}", headers=t.auth)
            return case.call(**kwargs)

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": _prepare(t, case)}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            excluded = _excluded(case)
            if case.operation.path == "/v1/jobs/{job_id}/events":
                # The document describes the stream as a string (what the SDK generators
                # need), while schemathesis reads an OpenAPI 3.1 `schema` of an event stream as
                # one event, an object: its body is checked by tests/test_stream.py instead.
                excluded.append(response_schema_conformance)
            case.validate_response(response, excluded_checks=excluded)

    return Machine


def test_stateful_scenarios_sqlite() -> None:
    _machine(SQLITE).run(settings=STATEFUL)


@pytest.mark.postgres
@pg_only
def test_stateful_scenarios_postgres() -> None:
    assert PG is not None
    _machine(PG).run(settings=STATEFUL)
