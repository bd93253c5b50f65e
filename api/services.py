"""The long-lived parts of a running service, built once from settings."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from api.settings import Settings
from engine.catalog.catalog import Catalog, load_catalog
from engine.catalog.compat import EngineIncompatible, check_catalog
from engine.catalog.params import build_request_model
from engine.catalog.render import TemplateGraphs
from engine.comfy import ComfyClient, ComfyError
from engine.comfy.process import ComfyProcess
from engine.db.database import Database
from engine.intake.fetch import UrlGuard, parse_allow, parse_ports
from engine.intake.storage import LocalStorage, S3Storage, Storage
from engine.metrics import registry_for
from engine.runners.base import Runner
from engine.runners.local import LocalRunner, worker_id
from engine.runners.worker import WorkerContext
from engine.tenants.keys import KeyCache
from engine.tenants.ratelimit import RateLimiter
from engine.webhooks.delivery import DispatchConfig, Dispatcher

log = logging.getLogger("stencil.services")


class StreamSlots:
    """Open Server-Sent Event streams per API key in this process, at most `per_key` each.

    Each open stream holds a connection and a watch on the change feed, so an unbounded number
    from one key would crowd every other tenant. Only the event loop touches the counts, so
    they need no lock.
    """

    def __init__(self, per_key: int) -> None:
        self.per_key = per_key
        self._open: Counter[str] = Counter()

    def take(self, key_id: str) -> bool:
        """Hold a slot for the key; False when it already holds them all."""
        if self._open[key_id] >= self.per_key:
            return False
        self._open[key_id] += 1
        return True

    def give(self, key_id: str) -> None:
        """Release a slot `take` granted."""
        self._open[key_id] -= 1
        if self._open[key_id] <= 0:
            del self._open[key_id]

    def open(self, key_id: str) -> int:
        """How many streams the key holds open now."""
        return self._open.get(key_id, 0)


@dataclass
class Services:
    """Database, storage, catalog, engine and runner of one API process."""

    settings: Settings
    catalog: Catalog
    graphs: TemplateGraphs
    db: Database
    storage: Storage
    request_models: dict[tuple[str, int], Any]
    guard: UrlGuard
    rate_limiter: RateLimiter
    runner: Runner | None = None
    dispatcher: Dispatcher | None = None
    comfy_process: ComfyProcess | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    metrics: CollectorRegistry = field(init=False)
    streams: StreamSlots = field(init=False)
    keys: KeyCache = field(init=False)

    def __post_init__(self) -> None:
        self.metrics = registry_for(self.db, self._comfy_restarts)
        self.streams = StreamSlots(self.settings.streams_per_key)
        self.keys = KeyCache(self.db, ttl_s=self.settings.key_cache_ttl_s)

    async def start_events(self) -> None:
        """Follow the change feed: other processes' changes, and the key cache's drops."""
        self.keys.follow()
        await self.db.events.start()

    def _comfy_restarts(self) -> int:
        return self.comfy_process.restarts if self.comfy_process is not None else 0

    @classmethod
    def build(cls, settings: Settings) -> Services:
        """Load the catalog (failing loudly) and open the store; the engine starts later."""
        catalog = load_catalog(settings.catalog)
        graphs = TemplateGraphs(catalog)
        models = {(t.name, t.major): build_request_model(t) for t in catalog.templates}
        db = Database(settings.db_url, redis_url=settings.redis_url)
        return cls(
            settings=settings,
            catalog=catalog,
            graphs=graphs,
            db=db,
            storage=make_storage(settings),
            request_models=models,
            guard=make_guard(settings),
            rate_limiter=RateLimiter.build(settings.redis_url),
        )

    async def start(self, runner: Runner | None = None) -> None:
        """Migrate the store and start the engine and runner (unless one is injected)."""
        await asyncio.to_thread(self.db.migrate)
        if runner is not None:
            self.runner = runner
        elif self.settings.runner == "modal":
            from engine.runners.modal import ModalRunner

            self.runner = ModalRunner(self.db, self.catalog, batching=self.settings.batching)
        else:
            self.runner = await self._local_runner()
        await self.runner.start()

    async def start_dispatcher(self) -> None:
        """Start delivering webhooks from the outbox (when this process is to)."""
        s = self.settings
        if not s.webhook_dispatch:
            return
        self.dispatcher = Dispatcher(
            self.db,
            self.guard,
            DispatchConfig(
                concurrency=s.webhook_concurrency,
                per_host=s.webhook_per_host_concurrency,
                timeout_s=s.webhook_timeout_s,
                poll_interval_s=s.webhook_poll_interval_s,
                backoff_base_s=s.webhook_backoff_base_s,
                backoff_max_s=s.webhook_backoff_max_s,
                retry_window_s=s.webhook_retry_window_s,
            ),
        )
        await self.dispatcher.start()

    async def _local_runner(self) -> LocalRunner:
        s = self.settings
        url = s.comfyui_url
        if not url:
            proc = local_comfy(s)
            await proc.start()
            await proc.wait_ready(timeout=120)
            self.comfy_process = proc
            # Restart a ComfyUI that dies or hangs even while no job is running.
            self.extra["comfy_supervisor"] = asyncio.create_task(proc.supervise())
            url = proc.base_url
        proc_ref = self.comfy_process
        # A ComfyUI of ours is on this machine: its inputs and outputs go through its folders.
        comfy = ComfyClient(
            url,
            output_folder=proc_ref.output_folder if proc_ref else None,
            input_folder=proc_ref.input_folder if proc_ref else None,
        )

        async def on_engine_down() -> bool:
            if proc_ref is None:
                return False
            await proc_ref.ensure_running()
            return True

        version: str | None = None
        try:
            stats = await comfy.system_stats()
            version = stats.get("system", {}).get("comfyui_version")
        except Exception:
            log.warning("ComfyUI at %s did not answer /system_stats", url)
        try:
            await self._check_engine(comfy, url)
        except EngineIncompatible:
            task = self.extra.pop("comfy_supervisor", None)
            if task is not None:
                task.cancel()
            if self.comfy_process is not None:
                await self.comfy_process.stop()
                self.comfy_process = None
            raise
        ctx = WorkerContext(
            db=self.db,
            storage=self.storage,
            catalog=self.catalog,
            graphs=self.graphs,
            comfy=comfy,
            worker_id=worker_id(),
            on_engine_down=on_engine_down,
            comfy_version=version or _installed_version(s),
            # Beat several times per timeout, so one slow beat never looks like a lost worker.
            heartbeat_s=min(5.0, s.heartbeat_timeout_s / 4),
        )
        return LocalRunner(
            ctx,
            concurrency=s.worker_concurrency,
            heartbeat_timeout_s=s.heartbeat_timeout_s,
            supervise_interval_s=s.supervise_interval_s,
            # The local engine serves no catalog GPU class: `auto` leaves its jobs alone.
            batching=s.batching,
        )

    async def _check_engine(self, comfy: ComfyClient, url: str) -> None:
        """Refuse to serve a catalog this engine would refuse (engine.compat), before any job."""
        try:
            object_info = await comfy.object_info()
        except ComfyError as e:
            # An engine that is down now is the supervisor's business; it is checked when up.
            log.warning("could not check the catalog against ComfyUI at %s: %s", url, e)
            return
        problems = check_catalog(self.catalog, self.graphs, object_info)
        if problems:
            await comfy.aclose()
            raise EngineIncompatible(url, problems)
        log.info("catalog checked against ComfyUI at %s: every template fits", url)

    async def stop(self) -> None:
        """Stop the dispatcher, the runner, the ComfyUI subprocess and the change feed."""
        await self.db.events.stop()
        if self.dispatcher is not None:
            await self.dispatcher.stop()
            self.dispatcher = None
        if self.runner is not None:
            await self.runner.stop()
        task = self.extra.pop("comfy_supervisor", None)
        if task is not None:
            task.cancel()
        if self.comfy_process is not None:
            await self.comfy_process.stop()
        await self.db.aclose()


def _installed_version(s: Settings) -> str | None:
    try:
        from engine.comfy.install import comfyui_version

        return comfyui_version(s.comfyui_dir)
    except Exception:
        return None


def local_comfy(s: Settings) -> ComfyProcess:
    """The local ComfyUI subprocess the settings describe (not started)."""
    return ComfyProcess(
        s.comfyui_dir,
        port=s.comfyui_port or None,
        cpu=s.comfyui_cpu,
        models_dir=s.models_path,
        log_path=(s.home / "comfyui.log").resolve(),
        custom_nodes=[batch_nodes_dir(s.home)] if s.batching != "off" else [],
    )


def batch_nodes_dir(home: Path) -> Path:
    """A custom-nodes folder holding only Stencil's batching nodes (nodes/stencil_batch)."""
    folder = (home / "custom_nodes").resolve()
    link = folder / "stencil_batch"
    target = Path(__file__).resolve().parents[1] / "nodes" / "stencil_batch"
    folder.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(target, target_is_directory=True)
    return folder


def make_guard(s: Settings, resolver: Any = None) -> UrlGuard:
    """The URL guard the settings describe (a resolver may be injected for tests)."""
    return UrlGuard(
        allow_http=s.url_allow_http,
        ports=parse_ports(s.url_ports),
        allow=parse_allow(s.url_allow),
        resolver=resolver,
        max_redirects=s.url_max_redirects,
        connect_timeout_s=s.url_connect_timeout_s,
        read_timeout_s=s.url_read_timeout_s,
        total_timeout_s=s.url_total_timeout_s,
    )


def make_storage(s: Settings) -> Storage:
    """The storage backend the settings name."""
    if s.storage == "s3":
        return S3Storage(
            s.s3_bucket,
            endpoint_url=s.s3_endpoint_url or None,
            region=s.s3_region,
            access_key_id=s.s3_access_key_id or None,
            secret_access_key=s.s3_secret_access_key or None,
        )
    return LocalStorage((s.home / "files").resolve(), s.signing_secret())
