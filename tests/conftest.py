"""Shared fixtures: settings on SQLite or PostgreSQL, apps, keys."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from api.app import create_app
from api.settings import Settings
from engine.store import Database, create_key

ROOT = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get(
    "STENCIL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)

pytest_plugins = ["tests.comfy_fixtures"]


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
