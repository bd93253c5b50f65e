"""Shared fixtures: settings on SQLite or PostgreSQL, apps, keys."""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from api.app import create_app
from api.settings import Settings
from engine.db.database import Database
from engine.tenants.keys import create_key

ROOT = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get(
    "STENCIL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)

pytest_plugins = ["tests.comfy_fixtures"]

# ---- egress tripwire ------------------------------------------------------------------------
# Tests may only ever talk to this machine. An audit hook refuses, before any packet leaves, a
# socket connect to a non-loopback address and a name lookup other than `localhost`, and
# records the attempt; an autouse fixture fails the test that made one. So a broken SSRF guard
# fails loudly here instead of sending traffic anywhere.
EGRESS_ATTEMPTS: list[str] = []
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def _is_loopback(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _egress_audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.connect":
        sock, addr = args
        if getattr(sock, "family", None) in (socket.AF_INET, socket.AF_INET6):
            if isinstance(addr, tuple) and not _is_loopback(str(addr[0])):
                EGRESS_ATTEMPTS.append(f"connect {addr!r}")
                raise PermissionError(f"test egress tripwire: connect to {addr!r} refused")
    elif event == "socket.getaddrinfo":
        host = args[0]
        if isinstance(host, bytes):
            host = host.decode(errors="replace")
        if host is None or host.lower().rstrip(".") in _LOCAL_NAMES:
            return
        try:
            ipaddress.ip_address(str(host).split("%")[0])
            return  # a literal: no lookup leaves the machine
        except ValueError:
            EGRESS_ATTEMPTS.append(f"getaddrinfo {host!r}")
            raise socket.gaierror(f"test egress tripwire: lookup of {host!r} refused") from None


sys.addaudithook(_egress_audit)


@pytest.fixture(autouse=True)
def _no_egress() -> Iterator[None]:
    """Fail any test that tried to reach beyond this machine."""
    EGRESS_ATTEMPTS.clear()
    yield
    attempts, EGRESS_ATTEMPTS[:] = list(EGRESS_ATTEMPTS), []
    assert not attempts, f"the test tried to reach beyond this machine: {attempts}"


def _fresh_pg_database() -> str:
    """A new, empty PostgreSQL database for one test; dropped at the end of the run."""
    name = f"stencil_t_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    _CREATED.append(name)
    return PG_URL.rsplit("/", 1)[0] + "/" + name


_CREATED: list[str] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _CREATED:
        return
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        for name in _CREATED:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database: SQLite file or PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'stencil.db'}"
    return _fresh_pg_database()


@pytest.fixture
def make_settings(tmp_path: Path, db_url: str) -> Callable[..., Settings]:
    """Settings for a test, with overrides."""

    def make(**kw: object) -> Settings:
        base: dict[str, object] = {
            "home": tmp_path / "home",
            "catalog": ROOT / "catalog.yaml",
            "database_url": db_url,
            "url_signing_secret": "test-secret",
            # TestClient's Host; real servers in tests answer on 127.0.0.1 (trusted by default).
            "trusted_hosts": "testserver,127.0.0.1,localhost",
        }
        base.update(kw)
        return Settings(_env_file=None, **base)  # type: ignore[call-arg]

    return make


@pytest.fixture
def api(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    """An app with no engine: jobs are stored and stay queued (an API-only process)."""
    app = create_app(make_settings(), start_engine=False)
    with TestClient(app) as client:
        yield client


@pytest.fixture
def new_key(api: TestClient) -> Callable[[str], dict[str, str]]:
    """Create a key for a tenant; returns auth headers."""

    def make(tenant: str) -> dict[str, str]:
        db: Database = api.app.state.services.db  # type: ignore[attr-defined]
        with db.session() as s:
            token, _ = create_key(s, tenant)
        return {"Authorization": f"Bearer {token}"}

    return make
