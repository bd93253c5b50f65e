"""ModalRunner against a real database, with Modal's servers replaced at the boundary only.

The double offers exactly `Cls.from_name(...)().run.spawn`, `FunctionCall.from_id` and
`FunctionCall.cancel`, and records what was asked of it.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from engine.catalog.catalog import Catalog, load_catalog
from engine.catalog.render import TemplateGraphs, example_params
from engine.db.database import Database, new_id, utcnow
from engine.db.tables import Job
from engine.jobs.insert import insert_job
from engine.jobs.states import FAILED, QUEUED, RUNNING
from engine.jobs.store import claim_job
from engine.runners.modal import APP_NAME, ModalRunner, worker_cls_name
from engine.tenants.keys import create_key, ensure_tenant

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class FakeCall:
    object_id: str
    cancelled: list[str]

    def cancel(self) -> None:
        self.cancelled.append(self.object_id)


@dataclass
class FakeModal:
    """Modal's servers, as far as the runner may see them."""

    spawned: list[tuple[str, str]] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    apps: list[str] = field(default_factory=list)
    fail: bool = False
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def run_method(self, app_name: str, cls_name: str) -> FakeRun:
        self.apps.append(app_name)
        return FakeRun(self, cls_name)

    def function_call(self, call_id: str) -> FakeCall:
        return FakeCall(call_id, self.cancelled)


@dataclass
class FakeRun:
    """`Cls.from_name(app, cls)().run`: talks to Modal only when spawning."""

    modal: FakeModal
    cls_name: str

    def spawn(self, job_id: str) -> FakeCall:
        if self.modal.fail:
            raise ConnectionError("Modal is unreachable")
        self.modal.spawned.append((self.cls_name, job_id))
        return FakeCall(f"fc-{next(self.modal.ids)}", self.modal.cancelled)


@pytest.fixture
def catalog() -> Catalog:
    return load_catalog(ROOT / "catalog.yaml")


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    database.migrate()
    yield database
    database.dispose()


@pytest.fixture
def fake() -> FakeModal:
    return FakeModal()


@pytest.fixture
def runner(db: Database, catalog: Catalog, fake: FakeModal) -> ModalRunner:
    return ModalRunner(db, catalog, lookup=fake)


def add_job(db: Database, catalog: Catalog, *, age_s: float = 0, **fields: object) -> str:
    """Store a txt2img job as the API would (runner "modal")."""
    t = catalog.get("txt2img")
    assert t is not None
    rendered = TemplateGraphs(catalog).render(t, example_params(t))
    with db.session() as s:
        tenant = ensure_tenant(s, "acme")
        job = Job(
            id=new_id("job"),
            tenant_id=tenant.id,
            template=t.name,
            template_version=t.version,
            status=QUEUED,
            params=example_params(t),
            inputs={},
            graph=rendered.graph,
            graph_hash=rendered.sha256,
            progress=0.0,
            outputs=[],
            attempts=0,
            cancel_requested=False,
            metering={},
            runner="modal",
            created_at=utcnow() - timedelta(seconds=age_s),
        )
        for k, v in fields.items():
            setattr(job, k, v)
        insert_job(s, job, quota=100)  # the store's own insert: the tenant counts it
        return job.id


def load(db: Database, job_id: str) -> Job:
    with db.session() as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job


def test_submit_through_the_api_spawns_on_the_template_gpu_class(
    make_settings: Callable[..., Settings], db: Database, catalog: Catalog, fake: FakeModal
) -> None:
    runner = ModalRunner(db, catalog, lookup=fake)
    app = create_app(make_settings(), runner=runner)
    with TestClient(app) as client:
        with db.session() as s:
            token, _ = create_key(s, "acme")
        h = {"Authorization": f"Bearer {token}"}
        r = client.post("/v1/txt2img", json={"prompt": "a cube", "steps": 2}, headers=h)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        assert fake.spawned == [(worker_cls_name("l4"), job_id)]
        assert fake.apps == [APP_NAME]
        job = load(db, job_id)
        assert (job.call_id, job.runner, job.status) == ("fc-1", "modal", QUEUED)

        # A worker claims it; DELETE then cancels the Modal call it was spawned as.
        with db.session() as s:
            assert claim_job(s, job_id, "modal:l4:test") is not None
        r = client.delete(f"/v1/jobs/{job_id}", headers=h)
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        assert fake.cancelled == ["fc-1"]

        # A queued job is cancelled in the store alone: it never starts, no call to stop.
        r = client.post("/v1/txt2img", json={"prompt": "a cube", "steps": 2}, headers=h)
        assert client.delete(f"/v1/jobs/{r.json()['id']}", headers=h).status_code == 200
        assert fake.cancelled == ["fc-1"]


def test_spawn_failure_leaves_the_job_queued_for_the_supervisor(
    runner: ModalRunner, db: Database, catalog: Catalog, fake: FakeModal
) -> None:
    job_id = add_job(db, catalog)
    fake.fail = True
    assert asyncio.run(runner.submitted(job_id, "l4")) is None
    assert load(db, job_id).call_id is None
    fake.fail = False
    # Within the grace period the API may still be saving the call id: leave it alone.
    assert asyncio.run(runner.supervise(heartbeat_timeout_s=30)) == []
    assert fake.spawned == []
    later = utcnow() + timedelta(seconds=runner.dispatch_grace_s + 1)
    asyncio.run(runner.supervise(heartbeat_timeout_s=30, now=later))
    assert fake.spawned == [("Worker_l4", job_id)]
    assert load(db, job_id).call_id == "fc-1"


def test_cancel_finds_the_stored_call_id(
    runner: ModalRunner, db: Database, catalog: Catalog, fake: FakeModal
) -> None:
    job_id = add_job(db, catalog, call_id="fc-77")
    asyncio.run(runner.cancel(job_id, None))
    assert fake.cancelled == ["fc-77"]
    bare = add_job(db, catalog)
    asyncio.run(runner.cancel(bare, None))  # nothing dispatched: nothing to cancel
    assert fake.cancelled == ["fc-77"]


def test_supervisor_fails_late_jobs_and_cancels_their_calls(
    runner: ModalRunner, db: Database, catalog: Catalog, fake: FakeModal
) -> None:
    t = catalog.get("txt2img")
    assert t is not None
    waited = add_job(db, catalog, age_s=t.limits.max_queue_seconds + 5, call_id="fc-q")
    fresh = add_job(db, catalog, age_s=60, call_id="fc-fresh")  # under the 10-minute limit
    now = utcnow()
    ran_long = add_job(
        db,
        catalog,
        status=RUNNING,
        attempts=1,
        call_id="fc-r",
        started_at=now - timedelta(seconds=t.limits.max_run_seconds + 60),
        heartbeat_at=now,
    )
    actions = asyncio.run(runner.supervise(heartbeat_timeout_s=30, now=now))
    assert {(a.job_id, a.action) for a in actions} == {
        (waited, "queue_timeout"),
        (ran_long, "run_timeout"),
    }
    assert sorted(fake.cancelled) == ["fc-q", "fc-r"]
    assert load(db, waited).status == FAILED and load(db, ran_long).status == FAILED
    assert load(db, fresh).status == QUEUED
    assert fake.spawned == []


def test_supervisor_recovers_a_vanished_worker_on_a_new_call(
    runner: ModalRunner, db: Database, catalog: Catalog, fake: FakeModal
) -> None:
    now = utcnow()
    stale = now - timedelta(seconds=120)
    once = add_job(
        db, catalog, status=RUNNING, attempts=1, call_id="fc-old", started_at=stale,
        heartbeat_at=stale,
    )  # fmt: skip
    twice = add_job(
        db, catalog, status=RUNNING, attempts=2, call_id="fc-dead", started_at=stale,
        heartbeat_at=stale,
    )  # fmt: skip
    actions = asyncio.run(runner.supervise(heartbeat_timeout_s=30, now=now))
    assert {(a.job_id, a.action) for a in actions} == {(once, "requeued"), (twice, "worker_lost")}
    # The old calls are stopped; the re-queued job gets a fresh call, saved on the job.
    assert sorted(fake.cancelled) == ["fc-dead", "fc-old"]
    assert fake.spawned == [("Worker_l4", once)]
    job = load(db, once)
    assert (job.status, job.call_id, job.worker_id) == (QUEUED, "fc-1", None)
    lost = load(db, twice)
    assert lost.status == FAILED and lost.error is not None
    assert lost.error["type"].endswith("worker_lost")


def test_unknown_gpu_class_is_not_spawned(runner: ModalRunner, fake: FakeModal) -> None:
    assert asyncio.run(runner.submitted("job_x", "h100")) is None
    assert fake.spawned == []


def test_ready_names_the_app_and_classes(runner: ModalRunner) -> None:
    facts = asyncio.run(runner.ready())
    assert facts == {
        "runner": "modal",
        "app": APP_NAME,
        "classes": {"l4": "Worker_l4", "a10g": "Worker_a10g"},
    }


def test_batched_templates_go_to_their_gpu_class_batcher(
    db: Database, catalog: Catalog, fake: FakeModal
) -> None:
    from engine.runners.batch import batcher_cls_name

    runner = ModalRunner(db, catalog, lookup=fake, batching="auto")
    txt = add_job(db, catalog, call_id=None)
    assert asyncio.run(runner.submitted(txt, "l4")) == "fc-1"
    up = catalog.get("upscale")
    assert up is not None
    other = add_job(db, catalog, template="upscale", template_version=up.version)
    asyncio.run(runner.submitted(other, "l4"))
    assert fake.spawned == [(batcher_cls_name("l4"), txt), (worker_cls_name("l4"), other)]
    # Cancelling a batched job leaves its Modal input alone (the batch's heartbeat sees the
    # cancelled row); a lone job's call is cancelled as before.
    asyncio.run(runner.cancel(txt, "fc-1"))
    asyncio.run(runner.cancel(other, "fc-2"))
    assert fake.cancelled == ["fc-2"]
    # `off` sends every job to the one-job class.
    plain = ModalRunner(db, catalog, lookup=FakeModal(), batching="off")
    asyncio.run(plain.submitted(txt, "l4"))
    assert plain.lookup.spawned == [(worker_cls_name("l4"), txt)]  # type: ignore[attr-defined]
