"""Load without loss: a bounded load test with faults, on loopback.

A real `python -m api serve` process with its own ComfyUI (CPU, tiny 64x64 2-step images) on a
fresh PostgreSQL database takes a few hundred jobs from several clients (tenants), each with a
signed webhook to a receiver on 127.0.0.1, while ComfyUI is killed twice (SIGKILL) and the API
process once (SIGKILL, then restarted on the same store). Clients retry with their
Idempotency-Key through the outage, as a real client would. Then:

- every submitted job exists once and reached exactly one terminal state;
- every succeeded job has its output, and the output downloads;
- the ledger has exactly one charge per attempt (1..attempts, nothing else), and the usage
  API agrees with the ledger per tenant;
- every job's terminal event was delivered, and never under two webhook ids.

Bounded in count and time (STENCIL_LOAD_JOBS, default 200); it stops by itself.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from standardwebhooks import Webhook

from engine.db.database import Database, utcnow
from engine.db.tables import Job, LedgerEntry, WebhookEvent
from engine.jobs.states import TERMINAL
from engine.tenants.keys import create_key
from tests.conftest import _fresh_pg_database
from tests.netfixtures import listener, respond
from tests.test_faults import Served, alive, free_port, wait_until

ROOT = Path(__file__).resolve().parents[1]
JOBS = int(os.environ.get("STENCIL_LOAD_JOBS", "200"))
CLIENTS = 4
SMALL = {"prompt": "a red cube", "width": 64, "height": 64, "steps": 2}
PACE_S = 1.6  # between one client's submissions: 4 clients, about 2.5 jobs a second
DEADLINE_S = 420  # the whole test, faults and all, or it fails


class Client(threading.Thread):
    """One tenant submitting its share of jobs, retrying each with its Idempotency-Key."""

    def __init__(self, base: str, token: str, count: int, hook: str, stop_at: float) -> None:
        super().__init__(daemon=True)
        self.base, self.count, self.hook, self.stop_at = base, count, hook, stop_at
        self.headers = {"Authorization": f"Bearer {token}"}
        self.jobs: dict[str, str] = {}  # idempotency key -> job id
        self.retries = 0
        self.errors: list[str] = []

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=10) as c:
            for i in range(self.count):
                key = uuid.uuid4().hex
                body = {**SMALL, "seed": i, "webhook_url": self.hook}
                while time.monotonic() < self.stop_at:
                    try:
                        r = c.post(
                            "/v1/txt2img",
                            json=body,
                            headers={**self.headers, "Idempotency-Key": key},
                        )
                    except httpx.HTTPError:
                        self.retries += 1  # the API is down (killed): retry the same request
                        time.sleep(0.3)
                        continue
                    if r.status_code in (429, 503):
                        self.retries += 1
                        time.sleep(float(r.headers.get("retry-after", "1")) / 5)
                        continue
                    if r.status_code != 202:
                        self.errors.append(f"{r.status_code} {r.text[:200]}")
                        break
                    self.jobs[key] = r.json()["id"]
                    break
                time.sleep(PACE_S)  # a steady stream, near what one CPU ComfyUI can run


def _comfy(served: Served) -> int:
    """The pid of the served API's one live ComfyUI (waiting out a restart in progress)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return served.comfy_pid()
        except AssertionError:
            assert time.monotonic() < deadline, "no single live ComfyUI under the API"
            time.sleep(0.2)


def _terminal_count(db: Database) -> int:
    with db.session() as s:
        return int(
            s.scalar(select(func.count()).select_from(Job).where(Job.status.in_(TERMINAL))) or 0
        )


def _running_count(db: Database) -> int:
    with db.session() as s:
        return int(
            s.scalar(select(func.count()).select_from(Job).where(Job.status == "running")) or 0
        )


@pytest.mark.load
@pytest.mark.comfy
@pytest.mark.postgres
def test_load_with_comfyui_and_api_killed_loses_nothing(
    tmp_path: Path, comfyui_path: Path, synth_models_dir: Path
) -> None:
    started = time.monotonic()
    db_url = _fresh_pg_database()
    db = Database(db_url)
    db.migrate()
    tokens = []
    with db.session() as s:
        for n in range(CLIENTS):
            token, _ = create_key(s, f"load{n}")
            tokens.append(token)
    with listener("127.0.0.1") as hook:
        hook.routes["/hook"] = respond(204, b"", "text/plain")
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("STENCIL_")},
            "STENCIL_HOME": str(tmp_path / "home"),
            "STENCIL_CATALOG": str(ROOT / "catalog.yaml"),
            "STENCIL_DATABASE_URL": db_url,
            "STENCIL_PORT": str(free_port()),
            "STENCIL_COMFYUI_PATH": str(comfyui_path),
            "STENCIL_MODELS_DIR": str(synth_models_dir),
            "STENCIL_URL_SIGNING_SECRET": "load",
            "STENCIL_WORKER_CONCURRENCY": "2",
            "STENCIL_HEARTBEAT_TIMEOUT_S": "3",
            "STENCIL_SUPERVISE_INTERVAL_S": "1",
            "STENCIL_ACTIVE_JOB_QUOTA": "1000",
            "STENCIL_RATE_LIMIT_WRITE": "100000/minute",
            "STENCIL_RATE_LIMIT_READ": "100000/minute",
            "STENCIL_URL_ALLOW_HTTP": "true",
            "STENCIL_URL_ALLOW": f"127.0.0.1:{hook.port}",
            "STENCIL_WEBHOOK_BACKOFF_BASE_S": "0.5",
            "STENCIL_WEBHOOK_BACKOFF_MAX_S": "2",
            "STENCIL_WEBHOOK_POLL_INTERVAL_S": "0.2",
            "STENCIL_LOG_LEVEL": "WARNING",
        }
        served = Served(env, tmp_path / "serve.log")
        try:
            served.start()
            _load(served, db, tokens, f"{hook.base}/hook", hook, started)
        finally:
            served.stop()
            for pid in served.seen_comfy:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
    db.dispose()


def _load(
    served: Served, db: Database, tokens: list[str], url: str, hook: Any, started: float
) -> None:
    stop_at = started + DEADLINE_S
    window_start = utcnow() - timedelta(minutes=1)
    share = JOBS // CLIENTS
    clients = [Client(served.base, t, share, url, stop_at) for t in tokens]
    for c in clients:
        c.start()
    total = share * CLIENTS
    faults: list[str] = []
    # Faults at fixed points of the run: ComfyUI killed twice, then the API process once.
    for at, fault in ((0.15, "comfy"), (0.35, "comfy"), (0.55, "api")):
        wait_until(
            lambda at=at: _terminal_count(db) >= int(total * at), timeout=stop_at - time.monotonic()
        )
        # Strike while a job runs: the paced load leaves ComfyUI idle between jobs now and then,
        # and a fault in such a gap would cost no attempt and prove nothing.
        wait_until(lambda: _running_count(db) >= 1, timeout=stop_at - time.monotonic(), every=0.05)
        comfy = _comfy(served)
        if fault == "comfy":
            os.kill(comfy, signal.SIGKILL)  # the API's supervisor restarts it
        else:
            assert served.proc is not None
            served.proc.kill()
            served.proc.wait()
            wait_until(lambda comfy=comfy: not alive(comfy), timeout=15)  # dies with its parent
            served.start()  # the same store: the supervisor requeues what the dead worker held
        faults.append(fault)
    for c in clients:
        c.join(timeout=max(1.0, stop_at - time.monotonic()))
        assert not c.is_alive(), "a client did not finish in time"
        assert c.errors == [], c.errors
    submitted = {job for c in clients for job in c.jobs.values()}
    assert len(submitted) == total, f"{total - len(submitted)} submissions never got a job"
    assert faults == ["comfy", "comfy", "api"]

    wait_until(lambda: _terminal_count(db) >= total, timeout=max(5.0, stop_at - time.monotonic()))
    with db.session() as s:
        jobs = {j.id: j for j in s.scalars(select(Job))}
        charges = list(s.scalars(select(LedgerEntry)))
        outbox = list(s.scalars(select(WebhookEvent.job_id)))
    # One terminal transition per job: its outbox event is written by it, once.
    assert sorted(outbox) == sorted(jobs)
    # Exactly the submitted jobs exist (retries made none twice), each in one terminal state.
    assert set(jobs) == submitted
    assert all(j.status in TERMINAL for j in jobs.values())
    succeeded = [j for j in jobs.values() if j.status == "succeeded"]
    assert len(succeeded) >= total * 0.9, {j.status for j in jobs.values()}
    assert all(len(j.outputs) == 1 for j in succeeded)
    assert all(j.finished_at is not None for j in jobs.values())
    # One charge per attempt: attempts 1..n of each job, no gaps, no doubles.
    per_job: dict[str, list[int]] = defaultdict(list)
    for ch in charges:
        per_job[ch.job_id].append(ch.attempt)
    for j in jobs.values():
        assert sorted(per_job.get(j.id, [])) == list(range(1, j.attempts + 1)), (j.id, j.status)
    retried = sum(1 for j in jobs.values() if j.attempts > 1)
    assert retried >= 1, "no attempt was lost to a fault: the faults proved nothing"

    with httpx.Client(base_url=served.base, timeout=30) as api:
        # The usage API agrees with the ledger, tenant by tenant.
        end = (utcnow() + timedelta(minutes=1)).isoformat()
        for c, token in zip(clients, tokens, strict=True):
            h = {"Authorization": f"Bearer {token}"}
            usage = api.get(
                "/v1/usage", params={"start": window_start.isoformat(), "end": end}, headers=h
            )
            assert usage.status_code == 200, usage.text
            mine = [ch for ch in charges if ch.job_id in set(c.jobs.values())]
            tenant_ms = sum(ch.billable_ms for ch in mine if ch.payer == "tenant")
            platform_ms = sum(ch.billable_ms for ch in mine if ch.payer == "platform")
            total_row = usage.json()["total"]
            assert round(total_row["billable_seconds"] * 1000) == tenant_ms
            assert round(total_row["platform_seconds"] * 1000) == platform_ms
            assert total_row["jobs"] == len({ch.job_id for ch in mine if ch.payer == "tenant"})
        # Every succeeded job's output downloads.
        h0 = {"Authorization": f"Bearer {tokens[0]}"}
        some = next(iter(clients[0].jobs.values()))
        view = api.get(f"/v1/jobs/{some}", headers=h0).json()
        if view["status"] == "succeeded":
            assert api.get(view["outputs"][0]["url"]).status_code == 200
        secrets = [
            api.get("/v1/webhook-secret", headers={"Authorization": f"Bearer {t}"}).json()["secret"]
            for t in tokens
        ]

    # Every terminal event arrived, signed, and each job's event under one webhook id only.
    def delivered() -> dict[str, set[str]]:
        ids: dict[str, set[str]] = defaultdict(set)
        for r in list(hook.requests):
            data = _verified(secrets, r)
            ids[data["data"]["id"]].add(r["headers"]["webhook-id"])
        return ids

    got = wait_until(
        lambda: (d := delivered()) and set(d) >= submitted and d,
        timeout=max(5.0, stop_at - time.monotonic()),
    )
    assert set(got) == submitted
    doubled = {job: ids for job, ids in got.items() if len(ids) != 1}
    assert doubled == {}, f"events delivered under two ids: {doubled}"


def _verified(secrets: list[str], req: dict[str, Any]) -> dict[str, Any]:
    for secret in secrets:
        try:
            out: dict[str, Any] = Webhook(secret).verify(req["body"], req["headers"])
            return out
        except Exception:
            continue
    raise AssertionError("a webhook no tenant's secret signed")
