"""The edge refuses, as a 4xx that names the problem, what the app or a database cannot hold.

Property-based: each class of input is generated in many spellings (hypothesis), on SQLite
and PostgreSQL alike, and every answer is checked: never a 5xx, the documented 4xx, the same
on both databases.

- JSON the parser accepts but the app cannot handle: deep nesting (whole body or one field),
  number literals thousands of digits long, NaN/Infinity, lone surrogates (class 2).
- Characters a database cannot store in ids, filters and cursors (class 3).
- Datetimes at the ends of the calendar, with offsets (class 4).
- The problem builder, which no extension can break (class 6), and cancel's 409.
- A 500 carries a request id that is also in the log line, and the connection survives.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.app import create_app
from api.jsonbody import MAX_DEPTH, MAX_NUMBER_CHARS, depth_of, parse_json
from api.settings import Settings
from engine.db.bounds import EARLIEST, LATEST
from engine.db.cursors import encode_cursor
from engine.db.database import Database
from engine.errors import STANDARD_MEMBERS, BadRequest, problem
from engine.tenants.keys import create_key
from tests.servers import raw_exchange, served

Headers = dict[str, str]
TXT = {"prompt": "a red cube", "width": 64, "height": 64, "steps": 2}
PROPERTY = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def problem_of(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["detail"]
    return body


@pytest.fixture
def admin(api: TestClient) -> Headers:
    db: Database = api.app.state.services.db  # type: ignore[attr-defined]
    with db.session() as s:
        token, _ = create_key(s, "root", ("jobs", "admin"))
    return {"Authorization": f"Bearer {token}"}


# ---- class 2: JSON the parser accepts but the app cannot handle -----------------------------


@st.composite
def nested(draw: st.DrawFn, min_depth: int, max_depth: int) -> str:
    """JSON text nesting arrays and objects `depth` deep, with whitespace here and there."""
    depth = draw(st.integers(min_depth, max_depth))
    kinds = draw(st.lists(st.sampled_from("[{"), min_size=depth, max_size=depth))
    ws = draw(st.sampled_from(["", " ", "\n", "\t "]))
    inner = draw(st.sampled_from(["1", '"x"', "null", "[]", "{}", "true"]))
    if inner in ("[]", "{}"):
        kinds = kinds[:-1]  # the innermost empty container is the last level
    opens = "".join(("[" if k == "[" else '{"k":') + ws for k in kinds)
    closes = "".join(ws + ("]" if k == "[" else "}") for k in reversed(kinds))
    return opens + inner + closes


@st.composite
def long_number(draw: st.DrawFn) -> str:
    digits = draw(st.integers(MAX_NUMBER_CHARS + 1, 6000))
    sign = draw(st.sampled_from(["", "-"]))
    lead = draw(st.sampled_from("123456789"))
    text = sign + lead + "7" * (digits - 1)
    tail = draw(st.sampled_from(["", ".5", "e10", ".25E-3"]))
    return text + tail


BAD_CONSTANTS = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e999", "1E+309"])
SURROGATE = st.sampled_from(["\\ud800", "\\uDBFF", "\\udc00", "\\uDFFF", "a\\ud83d", "\\ude00b"])


def _bodies(route: str, value: str) -> list[str]:
    """Where an attacker can put a value: the whole body, or inside one field."""
    field = "url" if route == "/v1/webhook-endpoint" else "prompt"
    return [value, f'{{"{field}": {value}}}', f'{{"{field}": "ok", "extra": [{value}]}}']


ROUTES = [("POST", "/v1/txt2img"), ("POST", "/v1/upscale"), ("PUT", "/v1/webhook-endpoint")]


def _send(api: TestClient, h: Headers, method: str, route: str, text: str) -> httpx.Response:
    return api.request(
        method,
        route,
        content=text.encode("utf-8"),
        headers={**h, "content-type": "application/json"},
    )


def _refused_by_parser(r: httpx.Response) -> str:
    body = problem_of(r, 400)
    assert body["type"].endswith("/invalid_request") and body["field"] == "body", body
    assert body["detail"].startswith("The body is not acceptable JSON")
    return str(body["detail"])


@PROPERTY
@given(
    value=st.one_of(
        nested(MAX_DEPTH + 1, 3000),
        long_number(),
        BAD_CONSTANTS,
        SURROGATE.map(lambda s: f'"{s}"'),
    ),
    where=st.integers(0, 2),
    route=st.sampled_from(ROUTES),
)
def test_json_past_the_parser_limits_is_a_400_naming_the_body(
    api: TestClient,
    new_key: Callable[[str], Headers],
    value: str,
    where: int,
    route: tuple[str, str],
) -> None:
    h = new_key("acme")
    method, path = route
    _refused_by_parser(_send(api, h, method, path, _bodies(path, value)[where]))
    assert api.get("/v1/jobs", headers=h).json()["data"] == []


def test_a_request_refused_before_its_body_is_read_is_never_parsed(api: TestClient) -> None:
    # No key: a 401 from the dependency, before the submit route reads (and parses) the body.
    deep = ("[" * 50_000 + "]" * 50_000).encode()
    r = api.post("/v1/txt2img", content=deep, headers={"content-type": "application/json"})
    assert r.status_code == 401, r.text


@PROPERTY
@given(value=nested(1, MAX_DEPTH - 1), route=st.sampled_from(ROUTES))
def test_json_within_the_limits_reaches_validation(
    api: TestClient, new_key: Callable[[str], Headers], value: str, route: tuple[str, str]
) -> None:
    # The limit is exact: a body nesting MAX_DEPTH deep (the field is one level) is parsed, then
    # refused by the request model (the field wants a string) as a 422 naming the field.
    h = new_key("acme")
    method, path = route
    r = _send(api, h, method, path, _bodies(path, value)[1])
    body = problem_of(r, 422)
    assert body["errors"], body


@PROPERTY
@given(text=st.text(alphabet="abc\\u", max_size=12))
def test_escaped_backslashes_are_not_mistaken_for_surrogates(text: str) -> None:
    # `"\\ud800"` is a backslash then `ud800`, valid text: only real \u escapes are judged.
    literal = json.dumps("\\ud800" + text)
    assert parse_json(literal.encode()) == "\\ud800" + text


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**15), 10**15) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=40,
)


def _true_depth(v: Any) -> int:
    if isinstance(v, list):
        return 1 + max((_true_depth(x) for x in v), default=0)
    if isinstance(v, dict):
        return 1 + max((_true_depth(x) for x in v.values()), default=0)
    return 0


@settings(max_examples=300, deadline=None, derandomize=True)
@given(value=json_values, indent=st.sampled_from([None, 0, 2]))
def test_depth_of_agrees_with_a_walk(value: Any, indent: int | None) -> None:
    text = json.dumps(value, indent=indent)
    assert depth_of(text) == min(_true_depth(value), MAX_DEPTH + 1)
    assert parse_json(text.encode()) == value


def test_parser_refusals_say_which_limit() -> None:
    cases = {
        b"[" * 40 + b"]" * 40: "nests deeper",
        b"[" * 100_000: "nests deeper",  # past the C parser's own recursion limit
        b"9" * 5000: "longer than",
        b'{"a": NaN}': "NaN",
        b'{"a": 1e400}': "out of range",
        b'"\\ud800"': "surrogate",
        b"\xff\xfe": "not UTF-8",
        b"{nope": "Expecting",
    }
    for raw, why in cases.items():
        with pytest.raises(BadRequest) as e:
            parse_json(raw)
        assert why in e.value.detail, (raw[:20], e.value.detail)
    assert parse_json(b'"\\ud83d\\ude00"') == "\U0001f600"  # a real pair is a character


# ---- class 3: what a database cannot store, in ids, filters and cursors ----------------------

UNSTORABLE = st.sampled_from(["\x00", "\x01", "\x1f", "\x7f", "\n", "\t"])


@st.composite
def poisoned(draw: st.DrawFn, base: str) -> str:
    """`base` with one or more characters no id or filter may hold, anywhere in it."""
    chars = list(base)
    for _ in range(draw(st.integers(1, 3))):
        chars.insert(draw(st.integers(0, len(chars))), draw(UNSTORABLE))
    return "".join(chars)


def _quote(s: str) -> str:
    from urllib.parse import quote

    return quote(s, safe="")


ID_ROUTES = [
    ("GET", "/v1/jobs/{}"),
    ("DELETE", "/v1/jobs/{}"),
    ("GET", "/v1/jobs/{}/events"),
    ("GET", "/v1/jobs/{}/webhooks"),
    ("POST", "/v1/jobs/{}/webhooks/replay"),
    ("GET", "/v1/events/{}"),
    ("POST", "/v1/events/{}/replay"),
]


@PROPERTY
@given(
    bad=st.one_of(
        poisoned("job_0123456789abcdef0123456789abcdef"),
        st.text(alphabet="abcdef0123456789_", min_size=41, max_size=80),
        st.sampled_from(["a b", "é", "job_%", "a/b"]),
    ),
    route=st.sampled_from(ID_ROUTES),
)
def test_unstorable_ids_are_422_on_every_route_and_database(
    api: TestClient, new_key: Callable[[str], Headers], bad: str, route: tuple[str, str]
) -> None:
    h = new_key("acme")
    method, path = route
    r = api.request(method, path.format(_quote(bad)), headers=h)
    if "/" in bad:  # a slash changes the route itself: a 404 of the router, still a 4xx
        assert 400 <= r.status_code < 500, r.text
        return
    body = problem_of(r, 422)
    assert [e["field"] for e in body["errors"]] in (["job_id"], ["event_id"])


FILTERS = [
    ("/v1/jobs", "template", "txt2img"),
    ("/v1/events", "type", "budget.threshold"),
    ("/v1/admin/usage", "tenant", "acme corp"),
]


@PROPERTY
@given(data=st.data(), which=st.sampled_from(FILTERS))
def test_unstorable_filters_are_422_naming_the_filter(
    api: TestClient,
    new_key: Callable[[str], Headers],
    admin: Headers,
    data: st.DataObject,
    which: tuple[str, str, str],
) -> None:
    path, name, good = which
    h = admin if path.startswith("/v1/admin") else new_key("acme")
    assert api.get(path, params={name: good}, headers=h).status_code in (200, 404)  # no such
    bad = data.draw(poisoned(good))
    body = problem_of(api.get(path, params={name: bad}, headers=h), 422)
    assert [e["field"] for e in body["errors"]] == [name]


def _cursor(ts: str, row_id: str) -> str:
    return base64.urlsafe_b64encode(f"{ts}|{row_id}".encode()).decode().rstrip("=")


@PROPERTY
@given(
    row_id=st.one_of(poisoned("job_0123456789abcdef"), st.text(min_size=41, max_size=60)),
    ts=st.sampled_from(
        [
            "2026-01-01T00:00:00+00:00",
            "0001-01-01T00:00:00+05:00",
            "9999-12-31T23:59:59-05:00",
            "1969-12-31T23:59:59+00:00",
            "3000-01-01T00:00:00",
        ]
    ),
    path=st.sampled_from(["/v1/jobs", "/v1/events"]),
)
def test_cursors_decoding_to_unstorable_values_are_400(
    api: TestClient, new_key: Callable[[str], Headers], row_id: str, ts: str, path: str
) -> None:
    h = new_key("acme")
    cursor = _cursor(ts, row_id)
    r = api.get(path, params={"cursor": cursor}, headers=h)
    if len(cursor) > 200:  # refused by its length before decoding
        assert [e["field"] for e in problem_of(r, 422)["errors"]] == ["cursor"]
    else:
        assert problem_of(r, 400)["field"] == "cursor"


def test_a_real_cursor_still_pages(api: TestClient, new_key: Callable[[str], Headers]) -> None:
    h = new_key("acme")
    ids = [api.post("/v1/txt2img", json=TXT, headers=h).json()["id"] for _ in range(3)]
    page = api.get("/v1/jobs", params={"limit": 2}, headers=h).json()
    rest = api.get("/v1/jobs", params={"cursor": page["next_cursor"]}, headers=h).json()
    assert [j["id"] for j in page["data"] + rest["data"]] == ids[::-1]
    with api.app.state.services.db.session() as s:  # type: ignore[attr-defined]
        from engine.db.tables import Job

        job = s.get(Job, ids[0])
        assert job is not None
        assert page["next_cursor"] == encode_cursor(job) or rest["next_cursor"] is None


# ---- class 4: datetimes at the ends of the calendar --------------------------------------------

offsets = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
any_time = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
    st.datetimes(
        min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59), timezones=offsets
    ),
    st.sampled_from(
        [
            datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))),
            datetime(9999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-5))),
            datetime(9999, 12, 31, 23, 59, 59, 999999),
        ]
    ),
)


def _in_bounds(d: datetime) -> bool:
    try:
        utc = d.replace(tzinfo=UTC) if d.tzinfo is None else d.astimezone(UTC)
    except OverflowError:
        return False
    return EARLIEST <= utc < LATEST


@PROPERTY
@given(
    start=any_time,
    end=st.none() | any_time,
    path=st.sampled_from(["/v1/usage", "/v1/admin/usage"]),
    as_date=st.booleans(),
)
def test_usage_ranges_at_the_calendar_edges_are_200_or_422(
    api: TestClient,
    new_key: Callable[[str], Headers],
    admin: Headers,
    start: datetime,
    end: datetime | None,
    path: str,
    as_date: bool,
) -> None:
    h = admin if path.startswith("/v1/admin") else new_key("acme")
    params = {"start": start.date().isoformat() if as_date else start.isoformat()}
    if end is not None:
        params["end"] = end.isoformat()
    r = api.get(path, params=params, headers=h)
    assert r.status_code in (200, 422), r.text
    s = datetime.fromisoformat(params["start"])
    ok = _in_bounds(s) and (end is None or _in_bounds(end))
    if not ok:
        body = problem_of(r, 422)
        assert {e["field"] for e in body["errors"]} <= {"start", "end"}
    elif r.status_code == 200:
        assert r.json()["start"] < r.json()["end"]


# ---- class 6: the problem builder, and cancel of a finished job ---------------------------------


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    extensions=st.dictionaries(
        st.one_of(st.sampled_from(sorted(STANDARD_MEMBERS)), st.text(max_size=10)),
        st.one_of(st.none(), st.integers(), st.text(max_size=10), st.lists(st.integers())),
        max_size=8,
    ),
    instance=st.none() | st.text(max_size=20),
)
def test_no_extension_can_collide_with_the_problem_builder(
    extensions: dict[str, Any], instance: str | None
) -> None:
    body = problem("conflict", "Conflict", 409, "detail", instance=instance, extensions=extensions)
    assert (body["type"], body["title"], body["status"], body["detail"]) == (
        "https://stencil.dev/problems/conflict",
        "Conflict",
        409,
        "detail",
    )
    assert body.get("instance") == instance
    for k, v in extensions.items():
        if k not in STANDARD_MEMBERS:
            assert body[k] == v
    json.dumps(body)


def test_cancel_of_a_finished_job_is_409_and_the_connection_lives_on(
    make_settings: Callable[..., Settings],
) -> None:
    app = create_app(make_settings(), start_engine=False)
    with served(app) as base:
        db: Database = app.state.services.db
        with db.session() as s:
            token, _ = create_key(s, "acme")
        auth = f"Authorization: Bearer {token}\r\n".encode()
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as c:
            job = c.post("/v1/txt2img", json=TXT).json()
            _finish(db, job["id"])
        one = b"DELETE /v1/jobs/%s HTTP/1.1\r\nHost: 127.0.0.1\r\n" % job["id"].encode()
        read = b"GET /v1/jobs/%s HTTP/1.1\r\nHost: 127.0.0.1\r\n" % job["id"].encode()
        answers = raw_exchange(base, [one + auth + b"\r\n", read + auth + b"\r\n"])
        assert answers[0].startswith(b"HTTP/1.1 409"), answers[0][:300]
        body = json.loads(answers[0].split(b"\r\n\r\n", 1)[1])
        assert body["status"] == 409 and body["job_status"] == "succeeded"
        assert body["type"].endswith("/conflict")
        assert answers[1].startswith(b"HTTP/1.1 200"), "the connection did not survive the 409"


def _finish(db: Database, job_id: str) -> None:
    from engine.db.database import utcnow
    from engine.jobs.states import QUEUED, RUNNING, SUCCEEDED
    from engine.jobs.store import transition

    with db.session() as s:
        assert transition(s, job_id, [QUEUED], RUNNING, started_at=utcnow())
        assert transition(s, job_id, [RUNNING], SUCCEEDED, finished_at=utcnow())


# ---- a 500 that remains possible: a request id in the body and the log ------------------------


@pytest.fixture
def broken(make_settings: Callable[..., Settings]) -> Iterator[tuple[str, Headers]]:
    """A served app whose job reads fail unexpectedly (as a bug would)."""
    app = create_app(make_settings(), start_engine=False)

    def fail(*_: Any, **__: Any) -> Any:
        raise RuntimeError("a bug, sk_should_never_be_logged")

    import api.routes.jobs as jobs

    original = jobs.job_view
    with served(app) as base:
        with app.state.services.db.session() as s:
            token, _ = create_key(s, "acme")
        h = {"Authorization": f"Bearer {token}"}
        assert httpx.post(f"{base}/v1/txt2img", json=TXT, headers=h).status_code == 202
        jobs.job_view = fail  # type: ignore[assignment]
        try:
            yield base, h
        finally:
            jobs.job_view = original


def test_an_unexpected_500_names_a_request_id_that_is_in_the_log(
    broken: tuple[str, Headers], caplog: pytest.LogCaptureFixture
) -> None:
    base, h = broken
    caplog.set_level(logging.ERROR, logger="stencil.api")
    auth = f"Authorization: {h['Authorization']}\r\n".encode()
    get = b"GET /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n" + auth
    health = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    answers = raw_exchange(
        base, [get + b"X-Request-Id: trace-0123456789\r\n\r\n", get + b"\r\n", health]
    )
    bodies = []
    for a in answers[:2]:
        assert a.startswith(b"HTTP/1.1 500"), a[:200]
        assert b"application/problem+json" in a.split(b"\r\n\r\n")[0]
        bodies.append(json.loads(a.split(b"\r\n\r\n", 1)[1]))
    assert bodies[0]["request_id"] == "trace-0123456789"  # a caller's tame id is kept
    assert bodies[1]["request_id"] != bodies[0]["request_id"]
    for b in bodies:
        assert b["type"].endswith("/internal_error") and b["request_id"] in b["detail"]
        assert "bug" not in json.dumps(b)  # nothing about the failure leaks
        logged = [r for r in caplog.records if b["request_id"] in r.getMessage()]
        assert logged and logged[0].exc_info is not None
    assert answers[2].startswith(b"HTTP/1.1 200"), "the connection died with the 500"
    assert all("sk_should" not in (r.exc_text or "") for r in caplog.records)
