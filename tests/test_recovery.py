"""Jobs survive a crashed worker and a dead ComfyUI (real ComfyUI on the CPU)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from api.app import create_app
from api.settings import Settings
from engine.catalog.catalog import load_catalog
from engine.catalog.render import TemplateGraphs, example_params
from engine.db.database import Database, new_id, utcnow
from engine.db.tables import Job, LedgerEntry
from engine.jobs.insert import insert_job
from engine.jobs.states import RUNNING
from engine.tenants.keys import create_key
from tests.helpers import finished, wait_for

pytestmark = pytest.mark.comfy
ROOT = Path(__file__).resolve().parents[1]
SMALL = {"prompt": "a red cube", "width": 64, "height": 64, "steps": 2}


def orphan(db: Database, tenant: str, attempts: int) -> str:
    """A job left `running` by a process that died a minute ago."""
    cat = load_catalog(ROOT / "catalog.yaml")
    t = cat.get("txt2img")
    assert t is not None
    params = {**example_params(t), **SMALL, "seed": attempts}
    rendered = TemplateGraphs(cat).render(t, params)
    stale = utcnow() - timedelta(minutes=1)
    with db.session() as s:
        from engine.tenants.keys import ensure_tenant

        tid = ensure_tenant(s, tenant).id
        job = Job(
            id=new_id("job"),
            tenant_id=tid,
            template="txt2img",
            template_version=t.version,
            status=RUNNING,
            params=params,
            inputs={},
            graph=rendered.graph,
            graph_hash=rendered.sha256,
            seed=params["seed"],
            progress=0.3,
            outputs=[],
            attempts=attempts,
            cancel_requested=False,
            metering={},
            runner="local",
            worker_id="crashed-host:1",
            created_at=stale,
            started_at=stale,
            heartbeat_at=stale,
        )
        insert_job(s, job, quota=100)  # the store's own insert: the tenant counts it
    return job.id


def test_jobs_orphaned_by_a_dead_process_are_recovered(
    make_settings: Callable[..., Settings], comfy_url: str
) -> None:
    settings = make_settings(comfyui_url=comfy_url, heartbeat_timeout_s=2, supervise_interval_s=0.5)
    pre = Database(settings.db_url)
    pre.migrate()
    with pre.session() as s:
        token, _ = create_key(s, "acme")
    retry = orphan(pre, "acme", attempts=1)
    give_up = orphan(pre, "acme", attempts=2)
    pre.dispose()
    h = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(settings)) as client:
        job = wait_for(client, h, retry)
        assert job["status"] == "succeeded", job["error"]
        lost = wait_for(client, h, give_up)
        assert lost["status"] == "failed"
        assert lost["error"]["type"].endswith("/worker_lost")
        # The vanished workers' time is platform cost; the tenant pays only the attempt that ran.
        assert lost["cost"]["charged_to"] == "platform" and lost["cost"]["usd"] == "0.000000"
        assert job["cost"]["charged_to"] == "tenant"
        with client.app.state.services.db.session() as s:  # type: ignore[attr-defined]
            rows = s.scalars(select(LedgerEntry).where(LedgerEntry.job_id.in_([retry, give_up])))
            got = sorted((r.job_id == retry, r.attempt, r.payer, r.outcome) for r in rows)
        assert got == [
            (False, 2, "platform", "failed"),
            (True, 1, "platform", "retried"),
            (True, 2, "tenant", "succeeded"),
        ]


def test_comfyui_killed_mid_job_is_restarted_and_the_job_retried(
    make_settings: Callable[..., Settings], comfyui_path: Path, synth_models_dir: Path
) -> None:
    settings = make_settings(comfyui_path=comfyui_path, models_dir=synth_models_dir)
    app = create_app(settings)
    with TestClient(app) as client:
        services = app.state.services
        with services.db.session() as s:
            token, _ = create_key(s, "acme")
        h = {"Authorization": f"Bearer {token}"}
        proc = services.comfy_process
        assert proc is not None
        job_id = client.post("/v1/txt2img", json={**SMALL, "steps": 60}, headers=h).json()["id"]
        wait_for(client, h, job_id, lambda j: j["status"] == "running" and j["progress"] > 0)
        pid = proc.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        job = wait_for(client, h, job_id, finished, timeout=180)
        # Retried once on the restarted engine: it either succeeds or fails with a clear error.
        assert job["status"] == "succeeded" or job["error"]["type"].endswith("/comfyui_unavailable")
        assert proc.restarts >= 1 and proc.pid != pid
        with services.db.session() as s:
            row = s.get(Job, job_id)
            assert row is not None and row.attempts == 2
            first = s.scalar(
                select(LedgerEntry).where(LedgerEntry.job_id == job_id, LedgerEntry.attempt == 1)
            )
            assert first is not None and (first.payer, first.outcome) == ("platform", "retried")
        if job["status"] == "succeeded":
            # The retry ran on a fresh ComfyUI: it loaded the model again, a cold start.
            assert job["metering"]["cold_start"] is True
            assert job["metering"]["cold_start_seconds"] > 0
            assert job["cost"]["charged_to"] == "tenant"
        scrape = client.get("/metrics").text
        restarts = next(
            s.value
            for fam in text_string_to_metric_families(scrape)
            for s in fam.samples
            if s.name == "stencil_comfyui_restarts_total"
        )
        assert restarts >= 1
        nxt = client.post("/v1/txt2img", json=SMALL, headers=h).json()["id"]
        assert wait_for(client, h, nxt)["status"] == "succeeded"
