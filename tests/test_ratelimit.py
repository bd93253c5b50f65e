"""Rate limits per API key: counted in memory by one process, shared by every process through
Redis; never a database write per request."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from engine.tenants.keys import create_key, set_tenant_rate_limits

Headers = dict[str, str]
TXT = {"prompt": "a red cube", "width": 64, "height": 64, "steps": 2}
REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def apps(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., list[TestClient]]]:
    """Start N API apps (separate processes' worth of state) on one store."""
    with ExitStack() as stack:

        def start(n: int = 2, **kw: object) -> list[TestClient]:
            settings = make_settings(**{"webhook_dispatch": False, "active_job_quota": 100, **kw})
            return [
                stack.enter_context(TestClient(create_app(settings, start_engine=False)))
                for _ in range(n)
            ]

        yield start


def _key(client: TestClient, tenant: str = "acme") -> Headers:
    with client.app.state.services.db.session() as s:  # type: ignore[attr-defined]
        token, _ = create_key(s, tenant)
    return {"Authorization": f"Bearer {token}"}


def test_over_the_limit_is_429_with_headers_and_nothing_stored(
    apps: Callable[..., list[TestClient]],
) -> None:
    (c,) = apps(1, rate_limit_write="3/minute", rate_limit_read="100/minute")
    h = _key(c)
    remaining = []
    for _ in range(3):
        r = c.post("/v1/txt2img", json=TXT, headers=h)
        assert r.status_code == 202
        assert r.headers["ratelimit-limit"] == "3"
        assert r.headers["ratelimit-policy"] == "3;w=60"
        assert 0 < int(r.headers["ratelimit-reset"]) <= 60
        remaining.append(int(r.headers["ratelimit-remaining"]))
    assert remaining == [2, 1, 0]
    r = c.post("/v1/txt2img", json={**TXT, "prompt": "one too many"}, headers=h)
    assert r.status_code == 429
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["type"].endswith("/rate_limited")
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert r.headers["ratelimit-remaining"] == "0"
    jobs = c.get("/v1/jobs", headers=h).json()["data"]
    assert len(jobs) == 3 and all(j["params"]["prompt"] != "one too many" for j in jobs)
    # Reads have their own budget, and every answer carries it, errors included.
    r = c.get("/v1/jobs/job_missing", headers=h)
    assert r.status_code == 404 and r.headers["ratelimit-limit"] == "100"


def test_limits_are_per_key_and_per_tenant_configurable(
    apps: Callable[..., list[TestClient]],
) -> None:
    (c,) = apps(1, rate_limit_write="2/minute")
    a1, a2, b = _key(c, "acme"), _key(c, "acme"), _key(c, "globex")
    with c.app.state.services.db.session() as s:  # type: ignore[attr-defined]
        set_tenant_rate_limits(s, "globex", "5/minute", None)
    codes = {
        name: [c.post("/v1/txt2img", json=TXT, headers=h).status_code for _ in range(6)]
        for name, h in (("a1", a1), ("a2", a2), ("b", b))
    }
    assert codes["a1"] == [202, 202, 429, 429, 429, 429]
    assert codes["a2"] == [202, 202, 429, 429, 429, 429]  # its own key, its own budget
    assert codes["b"] == [202] * 5 + [429]  # the tenant's own limit


def _shared_budget(clients: list[TestClient], h: Headers, limit: int) -> None:
    def go(i: int) -> int:
        return clients[i % len(clients)].get("/v1/jobs", headers=h).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(go, range(limit + 12)))
    assert codes.count(200) == limit and codes.count(429) == 12, codes


def test_without_redis_each_process_counts_in_memory_and_writes_nothing(
    apps: Callable[..., list[TestClient]],
) -> None:
    clients = apps(2, rate_limit_read="3/minute")
    h = _key(clients[0])
    for c in clients:  # each process holds its own window
        assert [c.get("/v1/jobs", headers=h).status_code for _ in range(4)] == [200] * 3 + [429]
    from limits.aio.storage import MemoryStorage

    assert isinstance(clients[0].app.state.services.rate_limiter.storage, MemoryStorage)  # type: ignore[attr-defined]
    # The counters are not in the database (the table that held them is gone).
    from sqlalchemy import inspect

    engine = clients[0].app.state.services.db.engine  # type: ignore[attr-defined]
    assert "rate_limit_counters" not in inspect(engine).get_table_names()


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not _redis_up(), reason="no Redis at 127.0.0.1:6379")
def test_two_api_instances_share_one_budget_in_redis(
    apps: Callable[..., list[TestClient]],
) -> None:
    clients = apps(2, rate_limit_read="10/minute", redis_url=REDIS_URL)
    from limits.aio.storage import RedisStorage

    assert isinstance(clients[0].app.state.services.rate_limiter.storage, RedisStorage)  # type: ignore[attr-defined]
    h = _key(clients[0], f"acme-{uuid.uuid4().hex[:6]}")
    _shared_budget(clients, h, 10)


def test_redis_down_fails_open_and_the_quota_still_holds(
    apps: Callable[..., list[TestClient]],
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    (c,) = apps(
        1,
        rate_limit_write="1/minute",
        redis_url=f"redis://127.0.0.1:{dead}/0",
        active_job_quota=3,
    )
    h = _key(c)
    codes = [c.post("/v1/txt2img", json=TXT, headers=h) for _ in range(4)]
    assert [r.status_code for r in codes] == [202, 202, 202, 429]
    assert codes[-1].json()["type"].endswith("/quota_exceeded")
