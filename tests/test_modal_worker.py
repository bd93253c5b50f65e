"""The container-side worker (engine/modal_worker.py), called directly as Modal would call it.

Real SQLite store, real local storage, the real CPU ComfyUI of the test session; only Modal's
`stop_fetching_inputs` and the current call id are injected.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.catalog.catalog import Catalog, load_catalog
from engine.catalog.render import TemplateGraphs
from engine.comfy import ComfyClient
from engine.comfy.process import free_port
from engine.db.database import Database, new_id, utcnow
from engine.db.tables import Job
from engine.intake.storage import LocalStorage
from engine.jobs.insert import insert_job
from engine.jobs.states import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED
from engine.jobs.store import transition
from engine.runners.modal_worker import (
    EngineLost,
    ModalWorker,
    WorkerConfig,
    ensure_database_url,
)
from engine.tenants.keys import ensure_tenant
from tests.comfy_fixtures import SYNTH_CHECKPOINT

ROOT = Path(__file__).resolve().parents[1]
CATALOG_CHECKPOINT = "v1-5-pruned-emaonly-fp16.safetensors"
SMALL = {"prompt": "a red cube", "width": 64, "height": 64, "steps": 2, "seed": 1}


class Recorder:
    """Stands in for modal.experimental.stop_fetching_inputs."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1


@pytest.fixture(scope="session")
def catalog_checkpoint(synth_models_dir: Path) -> Path:
    """The catalog's checkpoint name in the test models folder (what `make models` writes)."""
    dest = synth_models_dir / "checkpoints" / CATALOG_CHECKPOINT
    if not dest.exists():
        src = synth_models_dir / "checkpoints" / SYNTH_CHECKPOINT
        try:
            dest.symlink_to(src.name)
            sidecar = src.with_name(src.name + ".synthetic.json")
            dest.with_name(dest.name + ".synthetic.json").write_text(sidecar.read_text())
        except FileExistsError:
            pass  # another test process made it first
    return dest


@pytest.fixture
def catalog() -> Catalog:
    return load_catalog(ROOT / "catalog.yaml")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'stencil.db'}")
    database.migrate()
    yield database
    database.dispose()


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "files", b"test-secret")


def add_job(
    db: Database, catalog: Catalog, params: dict[str, Any], *, steps: int | None = None
) -> str:
    """Store a queued txt2img job rendered from the catalog template."""
    t = catalog.get("txt2img")
    assert t is not None
    full = {**{k: p.default for k, p in t.params.items() if p.default is not None}, **params}
    rendered = TemplateGraphs(catalog).render(t, full)
    graph = rendered.graph
    if steps is not None:  # past the API's bound, to keep a job busy long enough to cancel
        for node in graph.values():
            if node["class_type"] == "KSampler":
                node["inputs"]["steps"] = steps
    with db.session() as s:
        tenant = ensure_tenant(s, "acme")
        job = Job(
            id=new_id("job"),
            tenant_id=tenant.id,
            template=t.name,
            template_version=t.version,
            status=QUEUED,
            params=full,
            inputs={},
            graph=graph,
            graph_hash=rendered.sha256,
            progress=0.0,
            outputs=[],
            attempts=0,
            cancel_requested=False,
            metering={},
            runner="modal",
            created_at=utcnow(),
        )
        insert_job(s, job, quota=100)  # the store's own insert: the tenant counts it
        return job.id


def load(db: Database, job_id: str) -> Job:
    with db.session() as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job


def stored_files(storage: LocalStorage, job_id: str) -> list[Path]:
    folder = storage.root / "jobs" / job_id
    return sorted(folder.iterdir()) if folder.exists() else []


async def started_worker(
    url: str,
    db: Database,
    storage: LocalStorage,
    catalog: Catalog,
    stop: Recorder,
    *,
    heartbeat_s: float = 5.0,
) -> ModalWorker:
    worker = ModalWorker(
        WorkerConfig(gpu_class="l4", comfy_url=url, heartbeat_s=heartbeat_s),
        stop_fetching_inputs=stop,
        current_call_id=lambda: "fc-test",
        worker_id="modal:l4:test",
    )
    await worker.launch(catalog)  # nothing to launch: ComfyUI is already there
    await worker.restore(db=db, storage=storage, catalog=catalog)
    return worker


async def wait_until_sampling(url: str, db: Database, job_id: str, timeout: float = 60) -> None:
    """Until ComfyUI runs the job's prompt and the job has reported progress."""
    deadline = time.monotonic() + timeout
    async with ComfyClient(url) as comfy:
        while time.monotonic() < deadline:
            if (await comfy.queue()).running and load(db, job_id).progress > 0:
                return
            await asyncio.sleep(0.1)
    raise AssertionError("the job never started sampling")


@pytest.mark.comfy
def test_job_succeeds_and_a_retried_input_does_nothing(
    comfy_url: str,
    catalog_checkpoint: Path,
    db: Database,
    storage: LocalStorage,
    catalog: Catalog,
) -> None:
    stop = Recorder()

    async def go() -> None:
        worker = await started_worker(comfy_url, db, storage, catalog, stop)
        job_id = add_job(db, catalog, {**SMALL, "seed": int(time.time())})
        assert await worker.run(job_id) == SUCCEEDED
        job = load(db, job_id)
        assert (job.status, job.attempts, job.worker_id) == (SUCCEEDED, 1, "modal:l4:test")
        assert job.call_id == "fc-test"  # recorded by the worker for DELETE
        assert len(job.outputs) == 1 and job.outputs[0]["width"] == 64
        assert storage.get(job.outputs[0]["key"]).startswith(b"\x89PNG")
        # Modal may deliver the input again (a retry): the claim fails, nothing runs twice.
        assert await worker.run(job_id) == SUCCEEDED
        assert load(db, job_id).attempts == 1
        assert stop.calls == 0
        await worker.close()

    asyncio.run(go())


@pytest.mark.comfy
def test_modal_cancel_interrupts_comfyui_and_stores_nothing(
    comfy_url: str,
    catalog_checkpoint: Path,
    db: Database,
    storage: LocalStorage,
    catalog: Catalog,
) -> None:
    async def go() -> None:
        worker = await started_worker(comfy_url, db, storage, catalog, Recorder())
        job_id = add_job(db, catalog, {**SMALL, "seed": int(time.time())}, steps=10_000)
        task = asyncio.create_task(worker.run(job_id))
        await wait_until_sampling(comfy_url, db, job_id)
        # DELETE /v1/jobs/{id}: the row is cancelled, then FunctionCall.cancel() cancels the
        # input, which Modal delivers to an async method as task cancellation.
        with db.session() as s:
            assert transition(s, job_id, [RUNNING], CANCELLED, finished_at=utcnow())
        t0 = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - t0 < 30
        async with ComfyClient(comfy_url) as comfy:
            assert (await comfy.queue()).idle
        job = load(db, job_id)
        assert job.status == CANCELLED and job.outputs == []
        assert stored_files(storage, job_id) == []
        await worker.close()

    asyncio.run(go())


@pytest.mark.comfy
def test_cancel_seen_in_the_store_interrupts_comfyui(
    comfy_url: str,
    catalog_checkpoint: Path,
    db: Database,
    storage: LocalStorage,
    catalog: Catalog,
) -> None:
    async def go() -> None:
        worker = await started_worker(comfy_url, db, storage, catalog, Recorder(), heartbeat_s=0.2)
        job_id = add_job(db, catalog, {**SMALL, "seed": int(time.time())}, steps=10_000)
        task = asyncio.create_task(worker.run(job_id))
        await wait_until_sampling(comfy_url, db, job_id)
        with db.session() as s:  # only the row: the heartbeat notices it
            assert transition(s, job_id, [RUNNING], CANCELLED, finished_at=utcnow())
        assert await asyncio.wait_for(task, timeout=30) == CANCELLED
        async with ComfyClient(comfy_url) as comfy:
            assert (await comfy.queue()).idle
        assert load(db, job_id).outputs == [] and stored_files(storage, job_id) == []
        await worker.close()

    asyncio.run(go())


@pytest.mark.comfy
def test_dead_comfyui_stops_fetching_and_the_job_runs_on_a_fresh_container(
    comfy_url: str,
    catalog_checkpoint: Path,
    db: Database,
    storage: LocalStorage,
    catalog: Catalog,
) -> None:
    async def go() -> None:
        stop = Recorder()
        dead = await started_worker(f"http://127.0.0.1:{free_port()}", db, storage, catalog, stop)
        job_id = add_job(db, catalog, {**SMALL, "seed": int(time.time())})
        with pytest.raises(EngineLost):
            await dead.run(job_id)  # raising makes Modal's retries re-run the input
        assert stop.calls == 1  # once, although the worker reports the fault twice
        job = load(db, job_id)
        assert (job.status, job.attempts, job.worker_id) == (QUEUED, 1, None)
        await dead.close()

        fresh_stop = Recorder()
        fresh = await started_worker(comfy_url, db, storage, catalog, fresh_stop)
        assert await fresh.run(job_id) == SUCCEEDED  # the retried input claims it again
        assert load(db, job_id).attempts == 2 and fresh_stop.calls == 0
        await fresh.close()

    asyncio.run(go())


def test_dead_comfyui_on_the_last_attempt_fails_the_job(
    db: Database, storage: LocalStorage, catalog: Catalog
) -> None:
    async def go() -> None:
        stop = Recorder()
        dead = await started_worker(f"http://127.0.0.1:{free_port()}", db, storage, catalog, stop)
        job_id = add_job(db, catalog, SMALL)
        with db.session() as s:  # one attempt already spent on another container
            s.get(Job, job_id).attempts = 1  # type: ignore[union-attr]
        assert await dead.run(job_id) == FAILED  # nothing left to retry: no raise
        job = load(db, job_id)
        assert job.error is not None and job.error["type"].endswith("comfyui_unavailable")
        assert stop.calls == 1
        await dead.close()

    asyncio.run(go())


def test_run_before_restore_is_an_error() -> None:
    worker = ModalWorker(WorkerConfig(gpu_class="l4", comfy_url="http://127.0.0.1:1"))
    with pytest.raises(RuntimeError, match="restore"):
        asyncio.run(worker.run("job_x"))


def test_database_url_from_a_secret_named_database_url() -> None:
    env = {"DATABASE_URL": "postgresql://u@h/db"}
    ensure_database_url(env)
    assert env["STENCIL_DATABASE_URL"] == "postgresql://u@h/db"
    env = {"DATABASE_URL": "postgresql://a", "STENCIL_DATABASE_URL": "postgresql://b"}
    ensure_database_url(env)
    assert env["STENCIL_DATABASE_URL"] == "postgresql://b"


def test_models_path_defaults_to_comfyui_models(tmp_path: Path) -> None:
    cfg = WorkerConfig(gpu_class="l4", comfyui_path=tmp_path)
    assert cfg.models_path == tmp_path / "models"
    assert WorkerConfig(gpu_class="l4", models_dir=tmp_path / "m").models_path == tmp_path / "m"
    assert os.environ.get("STENCIL_SNAPSHOT_DEFER_DEVICE") is None


def test_group_jobs_by_key_and_max_jobs(db: Database, catalog: Catalog) -> None:
    from engine.runners.batch import group_jobs

    same = [add_job(db, catalog, {**SMALL, "seed": i}) for i in range(10)]
    other = add_job(db, catalog, {**SMALL, "steps": 3})
    groups = group_jobs(db, catalog, [*same, other], "force", "l4")
    assert groups == [same[:8], same[8:], [other]]  # txt2img's max_jobs is 8
    assert group_jobs(db, catalog, same[:2], "off", "l4") == [[same[0]], [same[1]]]


@pytest.mark.comfy
def test_a_modal_batch_runs_as_one_prompt(
    comfy_url: str,
    catalog_checkpoint: Path,
    db: Database,
    storage: LocalStorage,
    catalog: Catalog,
) -> None:
    stop = Recorder()

    async def go() -> None:
        worker = await started_worker(comfy_url, db, storage, catalog, stop)
        seed = int(time.time())
        ids = [add_job(db, catalog, {**SMALL, "seed": seed + i}) for i in range(3)]
        gone = add_job(db, catalog, {**SMALL, "seed": seed + 3})
        with db.session() as s:
            assert transition(s, gone, [QUEUED], CANCELLED)
        assert await worker.run_batch([*ids, gone], "force") == [SUCCEEDED] * 3 + [CANCELLED]
        jobs = [load(db, i) for i in ids]
        assert len({j.batch_id for j in jobs}) == 1 and {j.batch_size for j in jobs} == {3}
        assert len({j.comfy_prompt_id for j in jobs}) == 1
        assert all(len(j.outputs) == 1 and j.attempts == 1 for j in jobs)
        assert load(db, gone).outputs == [] and load(db, gone).attempts == 0
        # A retried input does nothing again.
        assert await worker.run_batch(ids, "force") == [SUCCEEDED] * 3
        assert [load(db, i).attempts for i in ids] == [1, 1, 1]
        await worker.close()

    asyncio.run(go())
