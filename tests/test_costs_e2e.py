"""Costs of real jobs on a real ComfyUI (CPU): priced to the cent, ledger = API = CLI = metrics."""

from __future__ import annotations

import csv
import io
import os
import shutil
from collections.abc import Callable, Iterator
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from typer.testing import CliRunner

from api.app import create_app
from api.cli import app as cli
from api.settings import Settings
from engine.db.database import Database
from engine.db.tables import LedgerEntry, Tenant
from engine.tenants.keys import create_key
from tests.helpers import wait_for

pytestmark = pytest.mark.comfy

ROOT = Path(__file__).resolve().parents[1]
Headers = dict[str, str]
SMALL = {"prompt": "a red cube on a table", "width": 64, "height": 64, "steps": 2}
PNG_1PX = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8Dw"
    "HwAFAAH/iZk9HQAAAABJRU5ErkJggg=="
)
L4_RATE = Decimal("0.000222")


@pytest.fixture
def live(
    make_settings: Callable[..., Settings], comfy_url: str
) -> Iterator[tuple[TestClient, Headers, Settings]]:
    """The app with the local runner on the shared real ComfyUI, one job at a time."""
    settings = make_settings(comfyui_url=comfy_url, worker_concurrency=1, active_job_quota=10)
    app = create_app(settings)
    with TestClient(app) as client:
        with app.state.services.db.session() as s:
            token, _ = create_key(s, "acme")
        yield client, {"Authorization": f"Bearer {token}"}, settings


def settled(job: dict[str, Any]) -> bool:
    return job["status"] in ("succeeded", "failed", "cancelled") and job["cost"] is not None


def metrics(client: TestClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    r = client.get("/metrics")
    assert r.status_code == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(r.text)
        for s in fam.samples
    }


def metric(m: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **kw: str) -> float:
    return m.get((name, frozenset(kw.items())), 0.0)


def assert_priced(job: dict[str, Any], rate: Decimal = L4_RATE) -> Decimal:
    """The job's USD is its billable seconds times its class's rate, to the cent and exactly."""
    cost = job["cost"]
    assert cost["gpu_class"] == "l4" and cost["gpu_type"] == "L4"
    assert Decimal(cost["rate"]) == rate
    billable = Decimal(str(cost["billable_seconds"]))
    usd = Decimal(cost["usd"])
    assert usd == (billable * rate).quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)
    assert abs(usd - billable * rate) < Decimal("0.005")  # to the cent, with room to spare
    m = job["metering"]
    assert m["billable_seconds"] == pytest.approx(float(billable), abs=0.0011)
    assert billable > 0 and m["execution_seconds"] > 0
    # The job held the engine at least while ComfyUI ran it...
    assert m["execution_seconds"] <= m["billable_seconds"] + 0.002
    if job["status"] == "succeeded":
        # ...and no longer than it ran. (A cancelled job's finish time is the cancel request;
        # it holds the engine until ComfyUI lets go, and pays for that.)
        assert m["billable_seconds"] <= job["timings"]["run_seconds"] + 0.25
    return usd


def test_real_jobs_are_priced_and_ledger_equals_api_cli_and_metrics(
    live: tuple[TestClient, Headers, Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, h, settings = live
    before = metrics(client)
    ids = [
        client.post("/v1/txt2img", json={**SMALL, "seed": i}, headers=h).json()["id"]
        for i in range(2)
    ]
    ids.append(
        client.post("/v1/upscale", json={"image": PNG_1PX, "scale": 2}, headers=h).json()["id"]
    )
    jobs = [wait_for(client, h, i, settled) for i in ids]
    for job in jobs:
        assert job["status"] == "succeeded", job["error"]
        assert job["cost"]["charged_to"] == "tenant" and job["cost"]["platform_usd"] == "0.000000"
        assert_priced(job)

    # The ledger, read directly.
    db = Database(settings.db_url)
    with db.session() as s:
        tid = s.scalar(select(Tenant.id).where(Tenant.name == "acme"))
        rows = list(s.scalars(select(LedgerEntry).where(LedgerEntry.tenant_id == tid)))
    db.dispose()
    assert sorted(r.job_id for r in rows) == sorted(ids)
    assert all(r.payer == "tenant" and r.outcome == "succeeded" for r in rows)
    by_job = {j["id"]: j for j in jobs}
    for r in rows:
        assert Decimal(r.usd_micros) / 1_000_000 == Decimal(by_job[r.job_id]["cost"]["usd"])
    ledger_usd = {
        t: sum((Decimal(r.usd_micros) for r in rows if r.template == t), Decimal(0)) / 1_000_000
        for t in ("txt2img", "upscale")
    }
    ledger_ms = {t: sum(r.billable_ms for r in rows if r.template == t) for t in ledger_usd}

    # The usage API.
    usage = client.get("/v1/usage", params={"group_by": "template"}, headers=h).json()
    api_rows = {g["key"]: g for g in usage["data"]}
    assert set(api_rows) == {"txt2img", "upscale"}
    for t in ledger_usd:
        assert Decimal(api_rows[t]["usd"]) == ledger_usd[t]
        assert round(api_rows[t]["billable_seconds"] * 1000) == ledger_ms[t]
    assert api_rows["txt2img"]["jobs"] == 2 and api_rows["upscale"]["jobs"] == 1
    assert Decimal(usage["total"]["usd"]) == sum(ledger_usd.values())

    # The CLI report, as CSV.
    for k in list(os.environ):
        if k.startswith("STENCIL_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("STENCIL_HOME", str(settings.home))
    monkeypatch.setenv("STENCIL_DATABASE_URL", settings.db_url)
    monkeypatch.chdir(settings.home.parent)
    r = CliRunner().invoke(cli, ["usage", "report", "--since", "1d", "--tenant", "acme", "--csv"])
    assert r.exit_code == 0, r.output
    table = {row["template"]: row for row in csv.DictReader(io.StringIO(r.output))}
    assert set(table) == {"txt2img", "upscale", "total"}
    for t in ledger_usd:
        assert Decimal(table[t]["usd"]) == ledger_usd[t]
        assert Decimal(table[t]["billable_seconds"]) * 1000 == ledger_ms[t]
        assert int(table[t]["jobs"]) == api_rows[t]["jobs"]
    assert Decimal(table["total"]["usd"]) == Decimal(usage["total"]["usd"])
    pretty = CliRunner().invoke(cli, ["usage", "report", "--since", "30d"])
    assert pretty.exit_code == 0 and "txt2img" in pretty.output and "total" in pretty.output

    # Metrics moved with the jobs, and the database-derived USD equals the ledger.
    after = metrics(client)
    for t, n in (("txt2img", 2), ("upscale", 1)):
        assert metric(after, "stencil_jobs", template=t, status="succeeded") == (
            metric(before, "stencil_jobs", template=t, status="succeeded") + n
        )
        lab = {"template": t, "gpu_class": "l4", "payer": "tenant"}
        assert metric(after, "stencil_cost_usd_total", **lab) == pytest.approx(
            float(ledger_usd[t]), abs=1e-9
        )
        assert metric(after, "stencil_gpu_seconds_total", **lab) == pytest.approx(
            ledger_ms[t] / 1000, abs=1e-9
        )
        assert metric(after, "stencil_run_seconds_count", template=t) == (
            metric(before, "stencil_run_seconds_count", template=t) + n
        )
        assert metric(after, "stencil_queue_wait_seconds_count", template=t) == (
            metric(before, "stencil_queue_wait_seconds_count", template=t) + n
        )

    # Estimates come from these measured jobs.
    est = client.get("/v1/templates/txt2img", headers=h).json()["estimate"]
    assert est["sample_size"] == 2
    assert est["usd_p50"] in {j["cost"]["usd"] for j in jobs[:2]}


def test_cancel_is_charged_and_a_price_change_keeps_history(
    make_settings: Callable[..., Settings], comfy_url: str, tmp_path: Path
) -> None:
    settings = make_settings(comfyui_url=comfy_url, active_job_quota=10)
    with TestClient(create_app(settings)) as client:
        with client.app.state.services.db.session() as s:  # type: ignore[attr-defined]
            token, _ = create_key(s, "acme")
        h = {"Authorization": f"Bearer {token}"}
        done = client.post("/v1/txt2img", json=SMALL, headers=h).json()["id"]
        first = wait_for(client, h, done, settled)
        assert first["status"] == "succeeded"
        long = client.post("/v1/txt2img", json={**SMALL, "steps": 100}, headers=h).json()["id"]
        wait_for(client, h, long, lambda j: j["status"] == "running" and j["progress"] > 0)
        assert client.delete(f"/v1/jobs/{long}", headers=h).json()["status"] == "cancelled"
        cancelled = wait_for(client, h, long, settled, timeout=30)
        # Charged for what it used: the steps it ran before the interrupt.
        assert cancelled["cost"]["charged_to"] == "tenant"
        assert_priced(cancelled)
        old_costs = {j["id"]: j["cost"] for j in (first, cancelled)}

    # The price of l4 goes up: a new catalog on the same database.
    data = yaml.safe_load((ROOT / "catalog.yaml").read_text())
    data["gpu_classes"]["l4"]["usd_per_second"] = "0.001000"
    (tmp_path / "catalog.yaml").write_text(yaml.safe_dump(data))
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    dearer = make_settings(comfyui_url=comfy_url, catalog=tmp_path / "catalog.yaml")
    with TestClient(create_app(dearer)) as client:
        for job_id, cost in old_costs.items():
            assert client.get(f"/v1/jobs/{job_id}", headers=h).json()["cost"] == cost
        new = client.post("/v1/txt2img", json={**SMALL, "seed": 9}, headers=h).json()["id"]
        job = wait_for(client, h, new, settled)
        assert job["status"] == "succeeded"
        assert_priced(job, Decimal("0.001000"))
        usage = client.get("/v1/usage", headers=h).json()["total"]
        expect = sum(Decimal(c["usd"]) for c in [*old_costs.values(), job["cost"]])
        assert Decimal(usage["usd"]) == expect and usage["jobs"] == 3
