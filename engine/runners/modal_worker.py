"""What runs inside a Modal GPU container, kept free of `modal` so it can be tested locally.

`deploy/modal_app.py` wraps one `ModalWorker` per container:

* `launch()` in `@modal.enter(snap=True)`: start ComfyUI with the GPU deferred (the snapshot
  helper node in `nodes/stencil_snapshot` keeps it off CUDA), optionally run every template's
  example once, so imports and node initialisation are in the memory snapshot;
* `restore(...)` in `@modal.enter(snap=False)`: let ComfyUI use the GPU (or cold-start it when
  that fails) and open the job store and storage, which must not be in the snapshot;
* `run(job_id)` per input: claim the job (compare-and-set), run the shared worker function,
  interrupt ComfyUI when the input is cancelled, and raise when ComfyUI is gone so Modal's
  retries re-run the input on a fresh container, where the claim succeeds again.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import io
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.orm import Session

from engine.catalog.catalog import Catalog
from engine.catalog.compat import EngineIncompatible, check_catalog
from engine.catalog.render import TemplateGraphs, example_params
from engine.comfy import ComfyClient, ComfyError
from engine.comfy.install import comfyui_version
from engine.comfy.process import ComfyProcess
from engine.db.database import Database
from engine.intake.storage import Storage
from engine.jobs import lifecycle
from engine.jobs.states import CANCELLED, QUEUED
from engine.runners.batch import execute_batch, group_jobs
from engine.runners.worker import WorkerContext, execute_job
from engine.verify import VerifyReport, verify_engine

log = logging.getLogger("stencil.modal_worker")

# Read by nodes/stencil_snapshot/prestartup_script.py in the ComfyUI process.
DEFER_ENV = "STENCIL_SNAPSHOT_DEFER_DEVICE"
SNAPSHOT_STATUS = "/stencil/snapshot/status"
SNAPSHOT_RESTORE = "/stencil/snapshot/restore"

StopFetching = Callable[[], Awaitable[None] | None]


class EngineLost(RuntimeError):
    """ComfyUI is gone; the job was re-queued and Modal should retry the input elsewhere."""


def modal_stop_fetching_inputs() -> Awaitable[None]:
    """Tell Modal this container takes no more inputs (the real default)."""
    import modal.experimental

    result: Awaitable[None] = modal.experimental.stop_fetching_inputs.aio()
    return result


def modal_call_id() -> str | None:
    """The FunctionCall id of the current input, when running inside Modal."""
    try:
        import modal
    except ImportError:
        return None
    call_id: str | None = modal.current_function_call_id()
    return call_id


def _cancellations() -> tuple[type[BaseException], ...]:
    # Modal cancels async inputs by cancelling their task and sync ones with InputCancellation.
    try:
        from modal.exception import InputCancellation
    except ImportError:
        return (asyncio.CancelledError,)
    return (asyncio.CancelledError, InputCancellation)


def ensure_database_url(environ: MutableMapping[str, str]) -> None:
    """Let a Modal Secret carry `DATABASE_URL` (the common name) for STENCIL_DATABASE_URL."""
    if not environ.get("STENCIL_DATABASE_URL") and environ.get("DATABASE_URL"):
        environ["STENCIL_DATABASE_URL"] = environ["DATABASE_URL"]


def container_worker_id(gpu_class: str) -> str:
    """A worker id naming the GPU class and the Modal task (container) when known."""
    task = os.environ.get("MODAL_TASK_ID") or socket.gethostname()
    return f"modal:{gpu_class}:{task}:{os.getpid()}"


def _grey_png(side: int) -> bytes:
    """A mid-grey square PNG with a little structure, for warm-up runs of image templates."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (side, side), (128, 128, 128))
    ImageDraw.Draw(img).ellipse((side // 4, side // 4, 3 * side // 4, 3 * side // 4), "white")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class WorkerConfig:
    """How one container runs ComfyUI."""

    gpu_class: str
    # Launch ComfyUI from this tree, or use the ComfyUI already at `comfy_url`.
    comfyui_path: Path | None = None
    comfy_url: str | None = None
    port: int = 8188
    models_dir: Path | None = None  # None: ComfyUI's own models/ (where the image links them)
    cpu: bool = False  # pass --cpu (CPU-only classes, tests)
    defer_device: bool = True  # CPU memory snapshot: keep CUDA closed until restore
    warmup: bool = False  # run every template's example once before the snapshot
    warmup_image_side: int = 512  # image params are warmed with a grey square this wide
    heartbeat_s: float = 5.0
    cancel_wait_s: float = 30.0
    start_timeout_s: float = 300.0
    log_path: Path | None = None

    @property
    def models_path(self) -> Path | None:
        """Where the catalog's model files are expected."""
        if self.models_dir is not None:
            return self.models_dir
        return self.comfyui_path / "models" if self.comfyui_path is not None else None


@contextlib.contextmanager
def _env(name: str, value: str | None) -> Iterator[None]:
    """Set (or unset) one variable around a child's start; the child keeps its copy."""
    old = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


class ModalWorker:
    """One container's ComfyUI and the jobs it runs, one at a time."""

    def __init__(
        self,
        config: WorkerConfig,
        *,
        stop_fetching_inputs: StopFetching = modal_stop_fetching_inputs,
        current_call_id: Callable[[], str | None] = modal_call_id,
        worker_id: str | None = None,
    ) -> None:
        self.config = config
        self._stop_fetching_inputs = stop_fetching_inputs
        self._current_call_id = current_call_id
        self.worker_id = worker_id or container_worker_id(config.gpu_class)
        self.process: ComfyProcess | None = None
        self.ctx: WorkerContext | None = None
        self.engine_lost = False
        self._stopped_fetching = False
        self._launched = False
        self._deferred = False

    @property
    def base_url(self) -> str:
        """ComfyUI's URL in this container."""
        if self.process is not None:
            return self.process.base_url
        if self.config.comfy_url:
            return self.config.comfy_url.rstrip("/")
        raise RuntimeError("no ComfyUI: give comfyui_path or comfy_url")

    # ---- lifecycle ---------------------------------------------------------------------

    async def launch(self, catalog: Catalog | None = None) -> None:
        """Before the snapshot: start ComfyUI (GPU deferred) and optionally warm it up."""
        cfg = self.config
        if cfg.comfyui_path is None:
            return  # an existing ComfyUI (tests, a sidecar): nothing to launch
        self._deferred = cfg.defer_device and not cfg.cpu
        self.process = ComfyProcess(
            cfg.comfyui_path,
            port=cfg.port,
            cpu=cfg.cpu,
            models_dir=cfg.models_dir,
            log_path=cfg.log_path,
        )
        try:
            with _env(DEFER_ENV, "1" if self._deferred else None):
                await self.process.start()
            await self.process.wait_ready(cfg.start_timeout_s)
        except Exception:
            # Never fail the snapshot phase: restore() cold-starts ComfyUI instead, so a
            # ComfyUI that cannot start without a GPU still serves, only slower.
            log.exception("ComfyUI did not start before the snapshot; restore will cold-start")
            await self.process.stop()
            return
        self._launched = True
        if cfg.warmup and catalog is not None:
            try:
                await self._warmup(catalog)
            except Exception:  # a warm-up is an optimisation: never fail the snapshot on it
                log.exception("warm-up failed; the snapshot is taken without it")

    async def restore(self, *, db: Database, storage: Storage, catalog: Catalog) -> None:
        """After the snapshot: give ComfyUI the GPU and open the store (never snapshotted)."""
        # The container's first job pays for the restore (see docs/costs.md, cold start).
        boot_t0 = time.monotonic()
        if self.process is not None:
            if not self._launched:
                await self._cold_start()
            elif self._deferred and not await self._enable_device():
                log.error("the GPU could not be enabled in the snapshotted ComfyUI; cold-starting")
                await self._cold_start()
        # ComfyUI runs in this container: its inputs and outputs go through its folders.
        proc = self.process
        comfy = ComfyClient(
            self.base_url,
            output_folder=proc.output_folder if proc is not None else None,
            input_folder=proc.input_folder if proc is not None else None,
        )
        version: str | None = None
        try:
            stats = await comfy.system_stats()
            version = (stats.get("system") or {}).get("comfyui_version")
        except ComfyError:
            log.warning("ComfyUI did not answer /system_stats after restore")
        if not version and self.config.comfyui_path is not None:
            version = comfyui_version(self.config.comfyui_path)
        graphs = TemplateGraphs(catalog)
        try:
            object_info = await comfy.object_info()
        except ComfyError:
            log.warning("ComfyUI did not answer /object_info after restore; catalog not checked")
        else:
            # A container whose engine would refuse part of the catalog takes no job at all:
            # the deploy fails loudly instead of failing customers' jobs one by one.
            problems = check_catalog(catalog, graphs, object_info)
            if problems:
                await comfy.aclose()
                raise EngineIncompatible(self.base_url, problems)
        self.ctx = WorkerContext(
            db=db,
            storage=storage,
            catalog=catalog,
            graphs=graphs,
            comfy=comfy,
            worker_id=self.worker_id,
            on_engine_down=self._engine_down,
            heartbeat_s=self.config.heartbeat_s,
            comfy_version=version,
            container_boot_seconds=time.monotonic() - boot_t0,
        )
        # Listen for changes (a cancel made through the API reaches the running job at once,
        # not at its next heartbeat).
        await db.events.start()
        # What the container was built from lives as long as it does: out of the collector's
        # full passes, which would otherwise stop the worker's loop for tens of milliseconds
        # in the middle of a job (as `api.app` does for the API).
        gc.freeze()

    async def close(self) -> None:
        """Stop ComfyUI and close connections (container exit)."""
        gc.unfreeze()
        if self.ctx is not None:
            await self.ctx.db.events.stop()
            await self.ctx.comfy.aclose()
            self.ctx.db.dispose()
        if self.process is not None:
            await self.process.stop()

    async def _cold_start(self) -> None:
        assert self.process is not None
        self._deferred = False
        with _env(DEFER_ENV, None):
            await self.process.restart(ready_timeout=self.config.start_timeout_s)

    async def _enable_device(self) -> bool:
        # Forward this container's post-restore GPU visibility: ComfyUI kept the environment
        # of the snapshot phase.
        body = {"cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES") or None}
        try:
            async with httpx.AsyncClient(base_url=self.base_url, timeout=60.0) as http:
                r = await http.post(SNAPSHOT_RESTORE, json=body)
        except httpx.HTTPError as e:
            log.error("ComfyUI did not answer %s: %s", SNAPSHOT_RESTORE, e)
            return False
        if r.status_code != 200:
            log.error("%s answered %s: %s", SNAPSHOT_RESTORE, r.status_code, r.text[:500])
            return False
        log.info("GPU enabled after restore: %s", r.text[:200])
        return True

    async def _warmup(self, catalog: Catalog) -> None:
        """Run each template's example on this class once, so lazy imports are snapshotted."""
        graphs = TemplateGraphs(catalog)
        async with ComfyClient(self.base_url) as comfy:
            for t in catalog.templates:
                if t.gpu_class != self.config.gpu_class:
                    continue
                t0 = time.monotonic()
                try:
                    if t.image_params:
                        # A catalog example may be a 1x1 pixel; the warm-up wants a real shape.
                        await comfy.upload_image(
                            _grey_png(self.config.warmup_image_side), "example.png"
                        )
                    graph = graphs.render(t, example_params(t)).graph
                    await comfy.run(graph, timeout=float(t.limits.max_run_seconds))
                except Exception:
                    log.exception("warm-up of %s failed; continuing without it", t.name)
                    continue
                log.info("warmed up %s in %.1f s", t.name, time.monotonic() - t0)
        if self._deferred:
            # Models loaded while deferred sit on the CPU and ComfyUI caches them: drop both,
            # so the first job after restore loads onto the GPU.
            await self._free_models()

    async def _free_models(self, timeout: float = 60.0) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30.0) as http:
            await http.post("/free", json={"unload_models": True, "free_memory": True})
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                status = (await http.get(SNAPSHOT_STATUS)).json()
                if not status.get("pending_flags") and not status.get("loaded_models"):
                    return
                await asyncio.sleep(0.2)
        log.warning("ComfyUI did not free its models within %.0f s", timeout)

    # ---- jobs --------------------------------------------------------------------------

    async def run(self, job_id: str) -> str:
        """Run one job to a terminal state; EngineLost when it must be retried elsewhere."""
        ctx = self.ctx
        if ctx is None:
            raise RuntimeError("restore() has not run")
        claimed = await ctx.db.run(self._claim, job_id)
        if not claimed:
            # Already taken, finished or cancelled (a Modal retry of an input whose job moved
            # on, or a duplicate dispatch): nothing to do.
            status = await ctx.db.read(lifecycle.status_of, job_id)
            log.info("job %s not claimed (status %s)", job_id, status)
            return status or "missing"
        cancel = asyncio.Event()
        task = asyncio.create_task(execute_job(ctx, job_id, cancel))
        try:
            status = await asyncio.shield(task)
        except _cancellations():
            cancel.set()
            await self._after_cancel(task)
            raise
        if status == CANCELLED:
            await self._wait_idle()
        if status == QUEUED and self.engine_lost:
            raise EngineLost(f"ComfyUI is gone; job {job_id} was re-queued for another container")
        return status

    async def run_batch(self, job_ids: list[str], batching: str = "auto") -> list[str]:
        """Run the inputs Modal batched (`@modal.batched`): claim them, group them by batch
        key, run each group as one prompt; each input's final state, in input order."""
        ctx = self.ctx
        if ctx is None:
            raise RuntimeError("restore() has not run")
        claimed = [j for j in job_ids if await ctx.db.run(self._claim, j)]
        groups = await asyncio.to_thread(
            group_jobs, ctx.db, ctx.catalog, claimed, batching, self.config.gpu_class
        )
        states: dict[str, str] = {}
        for group in groups:
            states.update(await execute_batch(ctx, group))
        out = []
        for j in job_ids:
            status = states.get(j) or await ctx.db.read(lifecycle.status_of, j)
            out.append(status or "missing")
        if CANCELLED in states.values():
            await self._wait_idle()
        if QUEUED in states.values() and self.engine_lost:
            raise EngineLost(
                "ComfyUI is gone; the batch's jobs were re-queued for another container"
            )
        return out

    async def verify(self) -> VerifyReport:
        """The verification report for this container's engine."""
        ctx = self.ctx
        if ctx is None:
            raise RuntimeError("restore() has not run")
        return await verify_engine(
            ctx.catalog,
            ctx.graphs,
            ctx.comfy,
            self.config.models_path,
            require_custom_nodes=True,
            installed_version=ctx.comfy_version,
        )

    def _claim(self, s: Session, job_id: str) -> bool:
        job = lifecycle.claim_one(s, job_id, self.worker_id)
        if job is None:
            return False
        call_id = self._current_call_id()
        # The API saves the call id only while the job is queued; a warm container can
        # claim it first, so the worker records its own call id for DELETE to cancel.
        if call_id and job.call_id != call_id:
            lifecycle.set_running(s, job_id, call_id=call_id)
        return True

    async def _after_cancel(self, task: asyncio.Task[str]) -> None:
        """The input was cancelled: let the worker interrupt ComfyUI, then wait until idle."""
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=self.config.cancel_wait_s)
        except Exception:
            log.warning("the job did not stop within %.0f s of cancel", self.config.cancel_wait_s)
            task.cancel()
        await self._wait_idle()

    async def _wait_idle(self) -> None:
        assert self.ctx is not None
        try:
            await self.ctx.comfy.wait_idle(timeout=self.config.cancel_wait_s)
        except ComfyError:
            log.warning("ComfyUI did not become idle after a cancel", exc_info=True)

    async def _engine_down(self) -> bool:
        """ComfyUI failed its health check: take no more inputs here; False: do not use it."""
        self.engine_lost = True
        if not self._stopped_fetching:
            self._stopped_fetching = True
            log.error("ComfyUI is gone; this container stops taking inputs")
            result = self._stop_fetching_inputs()
            if inspect.isawaitable(result):
                await result
        return False


async def worker_verify_dict(worker: ModalWorker) -> dict[str, Any]:
    """The verify report as plain data (what the Modal method returns)."""
    return (await worker.verify()).as_dict()
