"""Costs without an engine: pricing, metering, the ledger, budgets, usage API, metrics.

API tests run in-process on SQLite and PostgreSQL. Jobs are submitted through the API and
claimed from the real store; where a job needs to have run, its attempt is settled with the
same ledger function the worker uses.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from api.settings import Settings
from engine.billing.budgets import THRESHOLD_EVENT, set_budget
from engine.billing.ledger import PLATFORM, TENANT, settle
from engine.billing.metering import PromptMeter, split_batch
from engine.billing.pricing import MICRO, from_micros, price, rate_for, rate_of, seconds, to_micros
from engine.billing.usage import percentile
from engine.catalog.catalog import parse_catalog
from engine.comfy import ComfyClient, ProgressEvent
from engine.db.database import Database, utcnow
from engine.db.tables import Job, LedgerEntry, TenantEvent
from engine.jobs.states import FAILED, QUEUED, RUNNING, SUCCEEDED
from engine.jobs.store import claim_job, transition
from engine.jobs.supervisor import sweep
from engine.runners.worker import WorkerContext, execute_job
from engine.tenants.keys import create_key

ROOT = Path(__file__).resolve().parents[1]
Headers = dict[str, str]
TXT = {"prompt": "a red cube", "width": 64, "height": 64, "steps": 2}


# ---- pricing and metering (pure) ---------------------------------------------------------


def test_price_is_seconds_times_rate_rounded_once() -> None:
    cat = _catalog()
    rate = rate_for(cat, "l4")
    assert rate.usd_per_second == Decimal("0.000222") and rate.gpu_type == "L4"
    billable = seconds(2.3456)
    assert billable == Decimal("2.346")  # whole milliseconds
    usd = price(billable, rate)
    assert usd == Decimal("0.000520812").quantize(MICRO)  # 2.346 * 0.000222, one rounding
    assert from_micros(to_micros(usd)) == usd
    # Rounding once: pricing 1000 jobs one by one and summing can differ from pricing the sum,
    # which is why each charge is rounded, stored, and sums are of stored micro-dollars.
    assert price(seconds(0.001), rate) == Decimal("0.000000")


def test_cpu_and_memory_rates_add_to_the_gpu_rate() -> None:
    data = yaml.safe_load((ROOT / "catalog.yaml").read_text())
    data["gpu_classes"]["l4"].update(
        cpu_usd_per_core_second="0.00001",
        cpu_cores="4",
        memory_usd_per_gib_second="0.000002",
        memory_gib="16",
    )
    cat = parse_catalog(data, "catalog.yaml", ROOT)
    rate = rate_of("l4", cat.gpu_classes["l4"], "A10G")
    assert rate.usd_per_second == Decimal("0.000222") + Decimal("0.00004") + Decimal("0.000032")
    assert rate.gpu_type == "A10G"  # ran on a fallback, priced at its class
    assert price(Decimal("10.000"), rate) == Decimal("0.002940")


def test_split_batch_shares_add_up_to_the_whole() -> None:
    whole = {"billable_seconds": 1.8, "execution_seconds": 1.7, "cold_start_seconds": 0.3}
    parts = split_batch(whole, [1, 1, 1, 1, 1, 1, 1, 1])
    assert len(parts) == 8
    assert sum(p["billable_seconds"] for p in parts) == pytest.approx(1.8, abs=1e-12)
    assert parts[0]["billable_seconds"] == pytest.approx(0.225)
    (one,) = split_batch(whole, [1])
    assert one["billable_seconds"] == 1.8 and one["batch_size"] == 1
    weighted = split_batch(whole, [3, 1])
    assert weighted[0]["billable_seconds"] == pytest.approx(1.35)
    with pytest.raises(ValueError):
        split_batch(whole, [0, 0])


def test_prompt_meter_times_loaders_and_excludes_engine_queue() -> None:
    graph = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {}},
        "sampler": {"class_type": "KSampler", "inputs": {}},
    }
    m = PromptMeter(graph, t0=100.0)
    m.input_upload_seconds = 0.2
    m.submitted_at = 100.2
    # ComfyUI ran another prompt first: ours started 1.0 s after submission.
    events = [("execution_start", None, 101.2), ("executing", "ckpt", 101.2)]
    events += [("executing", "sampler", 103.7), ("executing", None, 105.0)]
    for kind, node, at in events:
        m.on_event(ProgressEvent(prompt_id="p", type=kind, node=node, at=at))
    m.upload_seconds = 0.5
    m.ended = 105.6
    f = m.figures()
    assert f["model_load_seconds"] == pytest.approx(2.5)
    assert f["cold_start"] is True and f["cold_start_seconds"] == pytest.approx(2.5)
    assert f["execution_seconds"] == pytest.approx(3.8)
    assert f["engine_queue_seconds"] == pytest.approx(1.0)
    assert f["worker_seconds"] == pytest.approx(5.6)
    assert f["billable_seconds"] == pytest.approx(4.6)
    # A warm engine serves the loader from its cache: no loader time, no cold start.
    warm = PromptMeter(graph, t0=0.0)
    warm.submitted_at = 0.0
    for kind, node, at in [("execution_start", None, 0.0), ("executing", "sampler", 0.01)]:
        warm.on_event(ProgressEvent(prompt_id="p", type=kind, node=node, at=at))
    warm.on_event(ProgressEvent(prompt_id="p", type="execution_success", at=1.0))
    warm.ended = 1.1
    assert warm.figures()["cold_start"] is False


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 21))
    assert percentile(values, 50) == 10 and percentile(values, 95) == 19
    assert percentile([7], 95) == 7


# ---- ledger, budgets, usage API ----------------------------------------------------------


def _catalog(**prices: str) -> Any:
    data = yaml.safe_load((ROOT / "catalog.yaml").read_text())
    for cls, p in prices.items():
        data["gpu_classes"][cls]["usd_per_second"] = p
    return parse_catalog(data, "catalog.yaml", ROOT)


def _db(api: TestClient) -> Database:
    db: Database = api.app.state.services.db  # type: ignore[attr-defined]
    return db


def _ran(api: TestClient, h: Headers, body: dict[str, Any] | None = None) -> Job:
    """Submit through the API and claim from the store: a job a worker now holds."""
    r = api.post("/v1/txt2img", json=body or TXT, headers=h)
    assert r.status_code == 202, r.text
    with _db(api).session() as s:
        job = claim_job(s, r.json()["id"], "test-worker")
    assert job is not None
    return job


def _finish(
    api: TestClient,
    job: Job,
    billable: float,
    *,
    to: str = SUCCEEDED,
    catalog: Any = None,
    error: dict[str, Any] | None = None,
) -> None:
    """End the attempt as the worker does: terminal state and charge in one transaction."""
    catalog = catalog or api.app.state.services.catalog  # type: ignore[attr-defined]
    m = {"billable_seconds": billable, "worker_seconds": billable, "execution_seconds": billable}
    with _db(api).session() as s:
        assert transition(s, job.id, [RUNNING], to, finished_at=utcnow(), error=error, metering=m)
        fresh = s.get(Job, job.id)
        assert fresh is not None
        settle(
            s,
            fresh,
            catalog=catalog,
            attempt=job.attempts,
            metering=m,
            payer=PLATFORM if error and error.get("platform_fault") else TENANT,
            outcome=to,
        )


def test_settling_twice_writes_one_charge(
    api: TestClient, new_key: Callable[[str], Headers]
) -> None:
    h = new_key("acme")
    job = _ran(api, h)
    _finish(api, job, 10.0)
    cat = api.app.state.services.catalog  # type: ignore[attr-defined]
    with _db(api).session() as s:
        again = settle(
            s,
            job,
            catalog=cat,
            attempt=job.attempts,
            metering={"billable_seconds": 99.0},
            payer=TENANT,
            outcome=SUCCEEDED,
        )
        assert again is None
        rows = list(s.scalars(select(LedgerEntry).where(LedgerEntry.job_id == job.id)))
    assert len(rows) == 1 and rows[0].billable_ms == 10_000 and rows[0].usd_micros == 2220
    cost = api.get(f"/v1/jobs/{job.id}", headers=h).json()["cost"]
    assert cost == {
        "gpu_class": "l4",
        "gpu_type": "L4",
        "billable_seconds": 10.0,
        "usd": "0.002220",
        "rate": "0.000222",
        "charged_to": "tenant",
        "platform_usd": "0.000000",
    }


def test_price_change_leaves_settled_costs_untouched(
    api: TestClient, new_key: Callable[[str], Headers]
) -> None:
    h = new_key("acme")
    old = _ran(api, h, {**TXT, "seed": 1})
    _finish(api, old, 4.0)
    before = api.get(f"/v1/jobs/{old.id}", headers=h).json()["cost"]
    dearer = _catalog(l4="0.001000")
    new = _ran(api, h, {**TXT, "seed": 2})
    _finish(api, new, 4.0, catalog=dearer)
    assert api.get(f"/v1/jobs/{old.id}", headers=h).json()["cost"] == before
    assert before["usd"] == "0.000888" and before["rate"] == "0.000222"
    newer = api.get(f"/v1/jobs/{new.id}", headers=h).json()["cost"]
    assert newer["usd"] == "0.004000" and newer["rate"] == "0.001000"
    usage = api.get("/v1/usage", headers=h).json()
    assert usage["total"]["usd"] == "0.004888" and usage["total"]["jobs"] == 2


def test_usage_api_groups_and_validates(api: TestClient, new_key: Callable[[str], Headers]) -> None:
    a, b = new_key("acme"), new_key("globex")
    for i, secs in enumerate((1.5, 2.25)):
        _finish(api, _ran(api, a, {**TXT, "seed": i}), secs)
    _finish(api, _ran(api, b), 100.0)
    u = api.get("/v1/usage", params={"group_by": "template"}, headers=a).json()
    assert u["tenant"] == "acme" and u["group_by"] == "template" and u["budget"] is None
    (g,) = u["data"]
    assert g["key"] == "txt2img" and g["jobs"] == 2 and g["billable_seconds"] == 3.75
    assert g["usd"] == str(price(Decimal("1.500"), rate_for(_catalog(), "l4")) + Decimal("0.0005"))
    assert u["total"]["usd"] == g["usd"]  # globex's charge is not acme's
    day = api.get("/v1/usage", params={"group_by": "day"}, headers=a).json()["data"]
    assert [d["key"] for d in day] == [utcnow().strftime("%Y-%m-%d")]
    cls = api.get("/v1/usage", params={"group_by": "gpu_class"}, headers=a).json()["data"]
    assert [c["key"] for c in cls] == ["l4"]
    past = api.get("/v1/usage", params={"start": "2020-01-01", "end": "2020-02-01"}, headers=a)
    assert past.status_code == 200 and past.json()["data"] == []
    bad = api.get("/v1/usage", params={"start": "2030-01-01", "end": "2020-01-01"}, headers=a)
    assert bad.status_code == 422 and {e["field"] for e in bad.json()["errors"]} == {"start"}
    bad = api.get("/v1/usage", params={"group_by": "colour"}, headers=a)
    assert bad.status_code == 422 and {e["field"] for e in bad.json()["errors"]} == {"group_by"}
    bad = api.get("/v1/usage", params={"start": "yesterday"}, headers=a)
    assert bad.status_code == 422 and {e["field"] for e in bad.json()["errors"]} == {"start"}


def test_admin_usage_needs_the_admin_scope(
    api: TestClient, new_key: Callable[[str], Headers]
) -> None:
    a, b = new_key("acme"), new_key("globex")
    _finish(api, _ran(api, a), 2.0)
    _finish(api, _ran(api, b), 3.0)
    r = api.get("/v1/admin/usage", headers=a)
    assert r.status_code == 403 and r.json()["type"].endswith("/forbidden")
    with _db(api).session() as s:
        token, _ = create_key(s, "ops", ("jobs", "admin"))
    admin = {"Authorization": f"Bearer {token}"}
    u = api.get("/v1/admin/usage", headers=admin).json()
    assert u["tenant"] is None
    assert {g["key"]: g["billable_seconds"] for g in u["data"]} == {"acme": 2.0, "globex": 3.0}
    assert u["total"]["usd"] == "0.001110"
    one = api.get("/v1/admin/usage", params={"tenant": "globex"}, headers=admin).json()
    assert one["total"]["billable_seconds"] == 3.0
    missing = api.get("/v1/admin/usage", params={"tenant": "nobody"}, headers=admin)
    assert missing.status_code == 404


def test_platform_faults_are_not_charged_to_the_tenant(
    api: TestClient, new_key: Callable[[str], Headers]
) -> None:
    """A worker that vanished: the supervisor fails the job and books its time as platform."""
    h = new_key("acme")
    job = _ran(api, h)
    db = _db(api)
    cat = api.app.state.services.catalog  # type: ignore[attr-defined]
    long_ago = utcnow() - timedelta(seconds=90)
    with db.session() as s:
        row = s.get(Job, job.id)
        assert row is not None
        row.attempts = 2  # its retry is spent: the next loss fails it
        row.started_at, row.heartbeat_at = long_ago, long_ago + timedelta(seconds=40)
    actions = sweep(db, cat, heartbeat_timeout_s=30)
    assert [a.action for a in actions] == ["worker_lost"]
    got = api.get(f"/v1/jobs/{job.id}", headers=h).json()
    assert got["status"] == "failed" and got["error"]["platform_fault"] is True
    cost = got["cost"]
    assert cost["charged_to"] == "platform" and cost["usd"] == "0.000000"
    assert cost["billable_seconds"] == 40.0 and cost["platform_usd"] == "0.008880"
    u = api.get("/v1/usage", headers=h).json()["total"]
    assert u["usd"] == "0.000000" and u["jobs"] == 0 and u["platform_usd"] == "0.008880"


def test_engine_down_failure_is_platform_cost(
    api: TestClient, new_key: Callable[[str], Headers]
) -> None:
    """The real worker against a ComfyUI that refuses connections: retried, then failed."""
    h = new_key("acme")
    services = api.app.state.services  # type: ignore[attr-defined]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"  # closed once the block ends
    job_id = api.post("/v1/txt2img", json=TXT, headers=h).json()["id"]

    async def run_twice() -> list[str]:
        comfy = ComfyClient(dead, timeout=2.0)
        ctx = WorkerContext(
            db=services.db,
            storage=services.storage,
            catalog=services.catalog,
            graphs=services.graphs,
            comfy=comfy,
            worker_id="test-worker",
        )
        out = []
        for _ in range(2):
            with services.db.session() as s:
                assert claim_job(s, job_id, "test-worker") is not None
            out.append(await execute_job(ctx, job_id))
        await comfy.aclose()
        return out

    assert asyncio.run(run_twice()) == [QUEUED, FAILED]
    with services.db.session() as s:
        rows = list(s.scalars(select(LedgerEntry).where(LedgerEntry.job_id == job_id)))
    assert sorted((r.attempt, r.payer, r.outcome) for r in rows) == [
        (1, "platform", "retried"),
        (2, "platform", "failed"),
    ]
    got = api.get(f"/v1/jobs/{job_id}", headers=h).json()
    assert got["error"]["type"].endswith("/comfyui_unavailable")
    assert got["cost"]["charged_to"] == "platform" and got["cost"]["usd"] == "0.000000"
    assert api.get("/v1/usage", headers=h).json()["total"]["jobs"] == 0


def test_budget_refusal_happens_before_anything_is_stored(
    api: TestClient, new_key: Callable[[str], Headers]
) -> None:
    h = new_key("acme")
    db = _db(api)
    with db.session() as s:
        set_budget(s, "acme", Decimal("0.02"), Decimal("0.5"))
    _finish(api, _ran(api, h), 100.0)  # $0.0222: over a $0.02 budget
    storage = api.app.state.services.storage  # type: ignore[attr-defined]
    files_before = sorted(p for p in Path(storage.root).rglob("*") if p.is_file())
    with db.session() as s:
        jobs_before = s.scalar(select(func.count()).select_from(Job))
    img = (
        "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8Dw"
        "HwAFAAH/iZk9HQAAAABJRU5ErkJggg=="
    )
    for path, body in (("/v1/txt2img", TXT), ("/v1/upscale", {"image": img})):
        r = api.post(path, json=body, headers=h)
        assert r.status_code == 402, r.text
        p = r.json()
        assert r.headers["content-type"].startswith("application/problem+json")
        assert p["type"] == "https://stencil.dev/problems/budget_exceeded"
        assert p["budget_usd"] == "0.020000" and p["spend_usd"] == "0.022200"
        assert "0.020000" in p["detail"] and "0.022200" in p["detail"]
        assert int(r.headers["retry-after"]) > 0
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Job)) == jobs_before
    assert sorted(p for p in Path(storage.root).rglob("*") if p.is_file()) == files_before
    # Another tenant is not affected; raising the budget lets acme submit again.
    assert api.post("/v1/txt2img", json=TXT, headers=new_key("globex")).status_code == 202
    with db.session() as s:
        set_budget(s, "acme", Decimal("50"), Decimal("0.5"))
    assert api.post("/v1/txt2img", json=TXT, headers=h).status_code == 202
    budget = api.get("/v1/usage", headers=h).json()["budget"]
    assert budget["budget_usd"] == "50.000000" and budget["spend_usd"] == "0.022200"
    assert budget["over_budget"] is False


def test_threshold_event_is_recorded_once_a_month(
    api: TestClient, new_key: Callable[[str], Headers]
) -> None:
    h = new_key("acme")
    db = _db(api)
    with db.session() as s:
        set_budget(s, "acme", Decimal("0.01"), Decimal("0.8"))
    _finish(api, _ran(api, h, {**TXT, "seed": 1}), 20.0)  # $0.00444: under $0.008
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(TenantEvent)) == 0
    _finish(api, _ran(api, h, {**TXT, "seed": 2}), 20.0)  # $0.00888: over the threshold
    _finish(api, _ran(api, h, {**TXT, "seed": 3}), 1.0)  # still over: no second event
    with db.session() as s:
        events = list(s.scalars(select(TenantEvent)))
    assert len(events) == 1
    ev = events[0]
    assert ev.type == THRESHOLD_EVENT and ev.dedupe_key == utcnow().strftime("%Y-%m")
    assert ev.delivered_at is None
    assert ev.payload["spend_usd"] == "0.008880" and ev.payload["budget_usd"] == "0.010000"
    assert ev.payload["threshold"] == "0.8"


def test_budget_cli_sets_shows_and_clears(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from api.cli import app as cli

    settings = make_settings()
    _cli_env(monkeypatch, settings)
    runner = CliRunner()
    assert runner.invoke(cli, ["keys", "create", "--tenant", "acme"]).exit_code == 0
    r = runner.invoke(cli, ["tenants", "budget", "acme", "--usd", "50", "--threshold", "0.8"])
    assert r.exit_code == 0, r.output
    assert "budget $50.000000/month, threshold 0.8, spent $0.000000" in r.output
    r = runner.invoke(cli, ["tenants", "budget", "acme", "--usd", "5", "--threshold", "2"])
    assert r.exit_code == 1 and "threshold" in r.output
    r = runner.invoke(cli, ["tenants", "budget", "acme", "--clear"])
    assert r.exit_code == 0 and "no budget" in r.output
    assert runner.invoke(cli, ["tenants", "budget", "nobody", "--usd", "1"]).exit_code == 1


def _cli_env(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    for k in list(__import__("os").environ):
        if k.startswith("STENCIL_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("STENCIL_HOME", str(settings.home))
    monkeypatch.setenv("STENCIL_DATABASE_URL", settings.db_url)
    monkeypatch.setenv("STENCIL_CATALOG", str(settings.catalog))
    monkeypatch.chdir(settings.home.parent)  # no stray .env


def test_templates_show_no_data_then_measured_estimates(
    api: TestClient, new_key: Callable[[str], Headers]
) -> None:
    h = new_key("acme")
    by = {t["name"]: t for t in api.get("/v1/templates", headers=h).json()["data"]}
    assert by["txt2img"]["estimate"]["note"] == "no data yet"
    assert by["txt2img"]["estimate"]["usd_p50"] is None
    for i, secs in enumerate((1.0, 2.0, 3.0, 4.0)):
        _finish(api, _ran(api, h, {**TXT, "seed": i}), secs)
    est = api.get("/v1/templates/txt2img", headers=h).json()["estimate"]
    assert est["sample_size"] == 4
    assert est["usd_p50"] == "0.000444" and est["usd_p95"] == "0.000888"
    assert est["run_seconds_p50"] == 2.0 and est["run_seconds_p95"] == 4.0
    assert api.get("/v1/templates/upscale", headers=h).json()["estimate"]["sample_size"] == 0


def test_metrics_parse_and_move_with_jobs(
    api: TestClient, new_key: Callable[[str], Headers]
) -> None:
    h = new_key("acme")
    before = _metrics(api)
    job = _ran(api, h)
    mid = _metrics(api)
    assert _value(mid, "stencil_jobs", template="txt2img", status="running") == 1
    _finish(api, job, 10.0)
    after = _metrics(api)
    assert _value(after, "stencil_jobs", template="txt2img", status="succeeded") == (
        _value(before, "stencil_jobs", template="txt2img", status="succeeded") + 1
    )
    assert _value(after, "stencil_jobs", template="txt2img", status="running") == 0
    labels = {"template": "txt2img", "gpu_class": "l4", "payer": "tenant"}
    assert _value(after, "stencil_gpu_seconds_total", **labels) == 10.0
    assert _value(after, "stencil_cost_usd_total", **labels) == pytest.approx(0.00222)
    assert "stencil_webhook_deliveries" in {
        f.name for f in text_string_to_metric_families(api.get("/metrics").text)
    }


def test_metrics_token_is_enforced_when_set(make_settings: Callable[..., Settings]) -> None:
    from api.app import create_app

    app = create_app(make_settings(metrics_token="scrape-me"), start_engine=False)
    with TestClient(app) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
        ok = client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert ok.status_code == 200 and "stencil_jobs" in ok.text


def _metrics(api: TestClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    r = api.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for fam in text_string_to_metric_families(r.text):
        for sample in fam.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def _value(
    m: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return m.get((name, frozenset(labels.items())), 0.0)


def test_migrations_match_the_models(db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from engine.db.tables import Base

    db = Database(db_url)
    db.migrate()
    with db.engine.connect() as c:
        diff = compare_metadata(
            MigrationContext.configure(c, opts={"compare_type": True}), Base.metadata
        )
    db.dispose()
    assert diff == []


def test_openapi_describes_cost_fields(api: TestClient) -> None:
    doc = api.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    for name in ("Cost", "Metering", "Usage", "UsageGroup", "BudgetInfo", "Estimate"):
        for fname, prop in schemas[name]["properties"].items():
            assert prop.get("description"), f"{name}.{fname} has no description"
    ops = {op["operationId"] for p in doc["paths"].values() for op in p.values()}
    assert {"get_usage", "get_admin_usage"} <= ops
    assert "/metrics" not in doc["paths"]  # a Prometheus endpoint, not part of the SDK
    assert json.dumps(doc["paths"]["/v1/txt2img"]["post"]["responses"]["402"])


def test_usage_range_takes_iso_dates_only(
    api: TestClient, new_key: Callable[[str], dict[str, str]]
) -> None:
    h = new_key("acme")
    r = api.get("/v1/usage", params={"start": "0.5"}, headers=h)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "start"
    ok = api.get(
        "/v1/usage", params={"start": "2026-01-01", "end": "2026-02-01T00:00:00Z"}, headers=h
    )
    assert ok.status_code == 200, ok.text
