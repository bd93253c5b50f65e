"""Prometheus metrics: figures that must agree across processes come from the database at
scrape time; per-process timings are histograms kept in memory.

Jobs by status, GPU seconds, USD and cold starts are read from the job store and the usage
ledger on each scrape, so every API replica and every remote worker (Modal) is counted once.
Queue-wait and run-time histograms are observed by the worker in this process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select

from engine.db.database import Database
from engine.db.tables import Job, LedgerEntry

# Not the global default registry: tests build many apps in one process, and each app's
# database collector must be registered alone (see StencilCollector).
PROCESS_REGISTRY = CollectorRegistry(auto_describe=True)

_TIME_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800)

QUEUE_WAIT = Histogram(
    "stencil_queue_wait_seconds",
    "Seconds a job attempt waited from acceptance (or re-queue) to a worker taking it.",
    ["template"],
    buckets=_TIME_BUCKETS,
    registry=PROCESS_REGISTRY,
)
RUN_TIME = Histogram(
    "stencil_run_seconds",
    "Seconds a worker held a job attempt, from taking it to its end (worker_seconds).",
    ["template"],
    buckets=_TIME_BUCKETS,
    registry=PROCESS_REGISTRY,
)
# Counted by the webhook dispatcher (engine.webhooks), once per delivery attempt, with outcome
# delivered | retried (failed, another attempt is scheduled) | failed (given up).
WEBHOOK_DELIVERIES = Counter(
    "stencil_webhook_deliveries",
    "Webhook delivery attempts by event type and outcome (delivered, retried, failed).",
    ["event", "outcome"],
    registry=PROCESS_REGISTRY,
)


def observe_attempt(template: str, metering: Mapping[str, Any]) -> None:
    """Record an attempt's queue wait and run time (in this process's histograms)."""
    QUEUE_WAIT.labels(template=template).observe(float(metering.get("queue_seconds") or 0.0))
    RUN_TIME.labels(template=template).observe(float(metering.get("worker_seconds") or 0.0))


class StencilCollector(Collector):
    """Reads job and ledger totals from the database on every scrape."""

    def __init__(self, db: Database, restarts: Callable[[], int] | None = None) -> None:
        self.db = db
        self.restarts = restarts

    def collect(self) -> Iterator[Metric]:
        """Yield the database-derived families, then this process's own metrics."""
        jobs = GaugeMetricFamily(
            "stencil_jobs",
            "Jobs in the store by template and status.",
            labels=["template", "status"],
        )
        gpu = CounterMetricFamily(
            "stencil_gpu_seconds",
            "Billable GPU container seconds by template, GPU class and payer (tenant/platform).",
            labels=["template", "gpu_class", "payer"],
        )
        usd = CounterMetricFamily(
            "stencil_cost_usd",
            "Cost in USD by template, GPU class and payer (tenant/platform).",
            labels=["template", "gpu_class", "payer"],
        )
        cold = CounterMetricFamily(
            "stencil_cold_starts",
            "Job attempts that paid a cold start, by template.",
            labels=["template"],
        )
        with self.db.session() as s:
            for template, status, n in s.execute(
                select(Job.template, Job.status, func.count()).group_by(Job.template, Job.status)
            ):
                jobs.add_metric([template, status], int(n))
            cold_n = func.sum(case((LedgerEntry.cold_start_ms > 0, 1), else_=0))
            cold_by: dict[str, int] = {}
            for template, gpu_class, payer, ms, micros, c in s.execute(
                select(
                    LedgerEntry.template,
                    LedgerEntry.gpu_class,
                    LedgerEntry.payer,
                    func.sum(LedgerEntry.billable_ms),
                    func.sum(LedgerEntry.usd_micros),
                    cold_n,
                ).group_by(LedgerEntry.template, LedgerEntry.gpu_class, LedgerEntry.payer)
            ):
                gpu.add_metric([template, gpu_class, payer], int(ms or 0) / 1000)
                usd.add_metric([template, gpu_class, payer], int(micros or 0) / 1_000_000)
                cold_by[template] = cold_by.get(template, 0) + int(c or 0)
            for template, c in cold_by.items():
                cold.add_metric([template], c)
        yield from (jobs, gpu, usd, cold)
        restarts = CounterMetricFamily(
            "stencil_comfyui_restarts", "Times this process restarted its local ComfyUI."
        )
        restarts.add_metric([], self.restarts() if self.restarts else 0)
        yield restarts
        yield from PROCESS_REGISTRY.collect()


def registry_for(db: Database, restarts: Callable[[], int] | None = None) -> CollectorRegistry:
    """A registry holding one app's collector (database totals plus process metrics)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(StencilCollector(db, restarts))
    return reg
