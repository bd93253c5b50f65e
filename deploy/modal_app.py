"""Stencil on Modal: `modal deploy deploy/modal_app.py`.

One App holds the API (`api`, an ASGI function serving `api.app.create_app` with
STENCIL_RUNNER=modal), one GPU class per catalog GPU class (`Worker_<name>`, generated from
catalog.yaml at import time, each running the same `engine.runners.worker.execute_job` as the local
runner through `engine.runners.modal_worker.ModalWorker`), and the supervisor cron (`supervise`).

Importing this file needs no Modal credentials: it only defines objects. It is imported again
inside every container (and every image build step), where the project source may be absent,
so the top level imports only the standard library and `modal`.
Deploy-time flags (read here, at `modal deploy`): STENCIL_MODAL_WARMUP=1 runs each template's
example before the snapshot; STENCIL_MODAL_REQUIRES_PROXY_AUTH=1 puts the API behind Modal
proxy auth (Modal-Key / Modal-Secret headers) for backend-to-backend deployments.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import modal

if TYPE_CHECKING:
    from engine.catalog.catalog import Catalog

APP_NAME = "stencil"  # engine.runners.modal.APP_NAME; a test keeps them equal
# Locally the repository; in a container the project sits in /root, as the images put it.
ROOT = Path(__file__).resolve().parents[1] if modal.is_local() else Path("/root")

# ---- pinned versions ---------------------------------------------------------------------
PYTHON_VERSION = "3.11.14"
UV_VERSION = "0.13.8"
COMFY_CLI_VERSION = "1.23.0"
COMFYUI_VERSION = "0.38.1"
# The same torch as the ComfyUI the tests run (engine.comfy.install.TORCH_PINS).
TORCH_PINS: tuple[str, ...] = ("torch==2.14.1", "torchvision==0.29.1")
COMFYUI_DIR = "/root/comfy/ComfyUI"  # where comfy-cli installs ComfyUI
MODELS_MOUNT = "/models"  # the models Volume, in build steps and at run time
BUILD_DIR = "/opt/stencil-build"
FREEZE_PATH = "/root/stencil-worker-freeze.txt"

# Fully resolved locks (uv pip compile, Python 3.11, x86_64 manylinux). API_LOCK is the
# pyproject dependencies; WORKER_LOCK adds torch, comfy-cli and ComfyUI's unpinned
# requirements. ComfyUI pins its frontend, workflow-template and docs packages itself.
API_LOCK: tuple[str, ...] = (
    "alembic==1.20.1",
    "annotated-doc==0.0.7",
    "annotated-types==0.8.0",
    "anyio==4.16.0",
    "attrs==26.1.0",
    "boto3==1.44.5",
    "botocore==1.44.5",
    "cachetools==8.0.2",
    "certifi==2026.10.18",
    "click==8.5.1",
    "deprecated==1.3.1",
    "fastapi==0.163.2",
    "h11==0.16.0",
    "httpcore==1.0.9",
    "httptools==0.9.0",
    "httpx==0.28.1",
    "idna==3.20",
    "jinja2==3.1.6",
    "jmespath==1.1.0",
    "jsonschema==4.26.0",
    "jsonschema-specifications==2025.9.1",
    "limits==5.8.0",
    "mako==1.4.3",
    "markdown-it-py==4.3.0",
    "markupsafe==3.0.4",
    "mdurl==0.1.2",
    "opentelemetry-api==1.45.2",
    "packaging==26.3",
    "pillow==13.0.0",
    "prometheus-client==0.26.0",
    "psycopg==3.3.9",
    "psycopg-binary==3.3.9",
    "psycopg-pool==3.3.3",
    "pydantic==2.14.3",
    "pydantic-core==2.50.4",
    "pydantic-settings==2.16.3",
    "pygments==2.21.0",
    "python-dateutil==2.9.0.post0",
    "python-dotenv==1.2.4",
    "python-multipart==0.0.34",
    "pyyaml==6.0.3",
    "redis==8.1.0",
    "referencing==0.37.0",
    "rich==15.0.0",
    "rpds-py==2026.9.1",
    "s3transfer==0.19.3",
    "shellingham==1.5.4",
    "six==1.17.0",
    "sqlalchemy==2.1.9",
    "sse-starlette==3.7.0",
    "ssrfguard==0.4.1",
    "standardwebhooks==1.1.0",
    "starlette==1.10.0",
    "typer==0.29.1",
    "typing-extensions==4.16.0",
    "typing-inspection==0.4.5",
    "urllib3==2.8.0",
    "uvicorn==0.54.0",
    "uvloop==0.23.0",
    "websockets==17.4",
    "wrapt==2.5.2",
)

WORKER_LOCK: tuple[str, ...] = (
    "aiohappyeyeballs==2.7.1",
    "aiohttp==3.14.5",
    "aiosignal==1.4.0",
    "alembic==1.20.1",
    "annotated-doc==0.0.7",
    "annotated-types==0.8.0",
    "anyio==4.16.0",
    "arrow==1.4.0",
    "attrs==26.1.0",
    "av==18.1.0",
    "backoff==2.2.1",
    "binaryornot==0.6.0",
    "blake3==1.0.11",
    "boto3==1.44.5",
    "botocore==1.44.5",
    "cachetools==8.0.2",
    "certifi==2026.10.18",
    "charset-normalizer==3.5.2",
    "click==8.5.1",
    "comfy-cli==1.23.0",
    "cookiecutter==2.7.1",
    "cuda-bindings==13.5.0",
    "cuda-pathfinder==1.9.0",
    "cuda-toolkit==13.0.3.0",
    "deprecated==1.3.1",
    "distro==1.9.0",
    "einops==0.8.2",
    "fastapi==0.163.2",
    "filelock==4.2.11",
    "frozenlist==1.8.0",
    "fsspec==2026.9.0",
    "gitdb==4.0.12",
    "gitpython==3.2.1",
    "h11==0.16.0",
    "hf-xet==1.8.0",
    "httpcore==1.0.9",
    "httpcore2==2.16.2",
    "httptools==0.9.0",
    "httpx==0.28.1",
    "httpx2==2.16.2",
    "huggingface-hub==2.4.0",
    "idna==3.20",
    "imageio-ffmpeg==0.8.1",
    "jinja2==3.1.6",
    "jmespath==1.1.0",
    "jsonschema==4.26.0",
    "jsonschema-specifications==2025.9.1",
    "kornia==0.9.0",
    "kornia-rs==0.2.0",
    "limits==5.8.0",
    "mako==1.4.3",
    "markdown-it-py==4.3.0",
    "markupsafe==3.0.4",
    "mdurl==0.1.2",
    "mixpanel==4.11.1",
    "mpmath==1.3.0",
    "multidict==7.2.1",
    "networkx==3.6.1",
    "numpy==2.4.6",
    "nvidia-cublas==13.1.1.3",
    "nvidia-cuda-cupti==13.0.85",
    "nvidia-cuda-nvrtc==13.0.88",
    "nvidia-cuda-runtime==13.0.96",
    "nvidia-cudnn-cu13==9.24.0.43",
    "nvidia-cufft==12.0.0.61",
    "nvidia-cufile==1.15.1.6",
    "nvidia-curand==10.4.0.35",
    "nvidia-cusolver==12.0.4.66",
    "nvidia-cusparse==12.6.3.3",
    "nvidia-cusparselt-cu13==0.8.1",
    "nvidia-nccl-cu13==2.30.7",
    "nvidia-nvjitlink==13.5.37",
    "nvidia-nvshmem-cu13==3.4.5",
    "nvidia-nvtx==13.0.85",
    "opentelemetry-api==1.45.2",
    "packaging==26.3",
    "pathspec==1.1.1",
    "pillow==13.0.0",
    "posthog==7.91.1",
    "prometheus-client==0.26.0",
    "prompt-toolkit==3.0.53",
    "propcache==0.5.4",
    "psutil==7.2.2",
    "psycopg==3.3.9",
    "psycopg-binary==3.3.9",
    "psycopg-pool==3.3.3",
    "pydantic==2.14.3",
    "pydantic-core==2.50.4",
    "pydantic-settings==2.16.3",
    "pygments==2.21.0",
    "pyopengl==3.1.10",
    "python-dateutil==2.9.0.post0",
    "python-dotenv==1.2.4",
    "python-multipart==0.0.34",
    "python-slugify==9.2.0",
    "pyyaml==6.0.3",
    "questionary==2.1.1",
    "redis==8.1.0",
    "referencing==0.37.0",
    "regex==2026.11.15",
    "requests==2.34.2",
    "rich==15.0.0",
    "rpds-py==2026.9.1",
    "ruff==0.17.6",
    "s3transfer==0.19.3",
    "safetensors==0.8.0",
    "scipy==1.17.1",
    "semver==3.0.4",
    "sentencepiece==0.2.3",
    "setuptools==84.2.1",
    "shellingham==1.5.4",
    "simpleeval==1.0.8",
    "six==1.17.0",
    "smmap==5.0.3",
    "spandrel==0.4.2",
    "sqlalchemy==2.1.9",
    "sse-starlette==3.7.0",
    "ssrfguard==0.4.1",
    "standardwebhooks==1.1.0",
    "starlette==1.10.0",
    "sympy==1.14.0",
    "text-unidecode==1.3",
    "tokenizers==0.23.3",
    "tomlkit==0.15.2",
    "torch==2.14.1",
    "torchsde==0.2.6",
    "torchvision==0.29.1",
    "tqdm==4.70.1",
    "trampoline==0.1.2",
    "transformers==5.23.0",
    "triton==3.8.0",
    "truststore==0.10.5",
    "typer==0.29.1",
    "typing-extensions==4.16.0",
    "typing-inspection==0.4.5",
    "tzdata==2026.6",
    "urllib3==2.8.0",
    "uv==0.13.9",
    "uvicorn==0.54.0",
    "uvloop==0.23.0",
    "wcwidth==0.9.4",
    "websocket-client==1.9.2",
    "websockets==17.4",
    "wrapt==2.5.2",
    "yarl==1.25.1",
)

COMFY_INSTALL = (
    f"comfy --skip-prompt --workspace {COMFYUI_DIR} install --version {COMFYUI_VERSION}"
    " --nvidia --skip-torch-or-directml --skip-manager"
)

# ---- deploy-time flags -------------------------------------------------------------------


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


WARMUP = _flag("STENCIL_MODAL_WARMUP")
REQUIRES_PROXY_AUTH = _flag("STENCIL_MODAL_REQUIRES_PROXY_AUTH")
# Micro-batching (docs/batching.md): which GPU classes get a batching class.
BATCHING = os.environ.get("STENCIL_BATCHING", "auto").strip().lower() or "auto"
API_MAX_CONTAINERS = 2
API_SCALEDOWN_S = 120

# ---- catalog-derived plan ----------------------------------------------------------------


@dataclass(frozen=True)
class GpuClassSpec:
    """How one catalog GPU class becomes a Modal class."""

    name: str
    cls_name: str
    gpus: list[str] | None  # None: a CPU-only class
    gpu_snapshot: bool
    max_containers: int
    scaledown_window: int
    timeout: int


def _load_catalog() -> Catalog | None:
    """The catalog, or None inside an image build step (no project source there)."""
    try:
        from engine.catalog.catalog import load_catalog
    except ImportError:
        if modal.is_local():
            raise
        return None
    path = ROOT / "catalog.yaml"
    if not path.is_file() and not modal.is_local():
        return None
    return load_catalog(path)  # locally a broken catalog stops the deploy, loudly


def gpu_class_specs(catalog: Catalog) -> list[GpuClassSpec]:
    """One spec per catalog GPU class, with its templates' longest run limit."""
    specs = []
    for name, gc in catalog.gpu_classes.items():
        runs = [t.limits.max_run_seconds for t in catalog.templates if t.gpu_class == name]
        cpu_only = gc.gpu.lower() == "cpu"
        specs.append(
            GpuClassSpec(
                name=name,
                cls_name=f"Worker_{name}",
                gpus=None if cpu_only else [gc.gpu, *gc.fallbacks],
                gpu_snapshot=gc.gpu_snapshot and not cpu_only,
                max_containers=gc.max_containers,
                scaledown_window=gc.scaledown_window_s,
                # Room after the run limit for input upload, output upload and interrupt.
                timeout=max(runs, default=300) + 120,
            )
        )
    return specs


def model_specs(catalog: Catalog | None) -> list[dict[str, str]]:
    """The catalog's model files as plain data for the image build step."""
    if catalog is None:
        return []
    return [
        {"name": m.name, "folder": m.folder, "url": m.url, "sha256": m.sha256}
        for m in catalog.all_models()
    ]


def link_commands(models: list[dict[str, str]]) -> list[str]:
    """Shell commands linking each model in the Volume into ComfyUI's model folders."""
    cmds = []
    for m in models:
        src = f"{MODELS_MOUNT}/{m['folder']}/{m['name']}"
        dst_dir = f"{COMFYUI_DIR}/models/{m['folder']}"
        cmds.append(
            f"mkdir -p {shlex.quote(dst_dir)} && "
            f"ln -sfn {shlex.quote(src)} {shlex.quote(dst_dir + '/' + m['name'])}"
        )
    return cmds


def batcher_cls_name(gpu_class: str) -> str:
    """The Modal class batching a GPU class's jobs (engine.runners.batch has the same)."""
    return f"Batcher_{gpu_class}"


def _batched(catalog: Catalog | None) -> dict[str, tuple[int, int]]:
    if catalog is None:
        return {}
    from engine.runners.batch import batched_classes

    return batched_classes(catalog, BATCHING)


CATALOG = _load_catalog()
GPU_CLASSES = gpu_class_specs(CATALOG) if CATALOG is not None else []
BATCHED = _batched(CATALOG)
MODELS = model_specs(CATALOG)

# ---- Modal objects -----------------------------------------------------------------------

app = modal.App(APP_NAME)
models_volume = modal.Volume.from_name("stencil-models", create_if_missing=True)
DB_SECRET = modal.Secret.from_name("stencil-db")
R2_SECRET = modal.Secret.from_name(
    "stencil-r2",
    required_keys=[
        "STENCIL_S3_BUCKET",
        "STENCIL_S3_ENDPOINT_URL",
        "STENCIL_S3_ACCESS_KEY_ID",
        "STENCIL_S3_SECRET_ACCESS_KEY",
    ],
)
SECRETS = [DB_SECRET, R2_SECRET]

COMMON_ENV = {
    "STENCIL_ENV": "production",
    "STENCIL_RUNNER": "modal",
    "STENCIL_STORAGE": "s3",
    "STENCIL_CATALOG": "/root/catalog.yaml",
    "STENCIL_HOME": "/tmp/stencil",
}
WORKER_ENV = {
    **COMMON_ENV,
    "STENCIL_COMFYUI_PATH": COMFYUI_DIR,
    "STENCIL_MODELS_DIR": f"{COMFYUI_DIR}/models",
}


def fetch_models(models: list[dict[str, str]]) -> None:
    """Image build step: download each catalog model into the Volume; a bad sha256 fails it."""
    sys.path.insert(0, BUILD_DIR)
    from stencil_models import fetch_model, model_status  # engine/catalog/models.py, copied alone

    for m in models:
        dest = Path(MODELS_MOUNT) / m["folder"] / m["name"]
        fetch_model(m["url"], dest, m["sha256"], progress=False)
        if model_status(dest, m["sha256"]) != "ok":
            raise RuntimeError(f"{dest} does not match the catalog's sha256")
    models_volume.commit()


def check_worker_env(pins: list[str]) -> None:
    """Image build step: the lock survived ComfyUI's install, deps agree, ComfyUI imports."""
    import subprocess
    from importlib import metadata

    wrong = []
    for pin in pins:
        name, _, want = pin.partition("==")
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            have = "missing"
        if have.split("+")[0] != want:
            wrong.append(f"{name}: want {want}, have {have}")
    if wrong:
        raise RuntimeError("worker image drifted from WORKER_LOCK:\n" + "\n".join(wrong))
    subprocess.run([sys.executable, "-m", "pip", "check"], check=True)
    # Loads every node, then exits: catches a ComfyUI that cannot import with these pins.
    subprocess.run(
        [sys.executable, "main.py", "--cpu", "--quick-test-for-ci"],
        cwd=COMFYUI_DIR,
        check=True,
        timeout=600,
    )
    freeze = subprocess.run(
        [sys.executable, "-m", "pip", "freeze"], check=True, capture_output=True, text=True
    )
    Path(FREEZE_PATH).write_text(freeze.stdout)


def _with_project(image: modal.Image) -> modal.Image:
    """The project source and catalog, mounted at container start (last: no build after)."""
    return (
        image.add_local_python_source("engine", "api")
        .add_local_file(ROOT / "catalog.yaml", "/root/catalog.yaml")
        .add_local_dir(ROOT / "templates", "/root/templates")
        .add_local_dir(ROOT / "migrations", "/root/migrations")
    )


api_image = _with_project(
    modal.Image.debian_slim(python_version=PYTHON_VERSION)
    .uv_pip_install(*API_LOCK, uv_version=UV_VERSION)
    .env(COMMON_ENV)
)

worker_image = _with_project(
    modal.Image.debian_slim(python_version=PYTHON_VERSION)
    .apt_install("git")  # comfy-cli clones ComfyUI
    # Models first: this layer changes only with the model list or the downloader.
    .uv_pip_install(
        *[p for p in WORKER_LOCK if p.split("==")[0] in ("httpx", "rich")], uv_version=UV_VERSION
    )
    .add_local_file(
        ROOT / "engine" / "catalog" / "models.py", f"{BUILD_DIR}/stencil_models.py", copy=True
    )
    .run_function(
        fetch_models,
        volumes={MODELS_MOUNT: models_volume},
        kwargs={"models": MODELS},
        timeout=3600,
    )
    .uv_pip_install(*WORKER_LOCK, uv_version=UV_VERSION)
    .run_commands(COMFY_INSTALL)
    # ComfyUI's requirements may move a locked package; put the lock back, then check.
    .uv_pip_install(*WORKER_LOCK, uv_version=UV_VERSION)
    .run_commands(*link_commands(MODELS))
    .run_function(check_worker_env, kwargs={"pins": list(WORKER_LOCK)}, timeout=900)
    .env(WORKER_ENV)
    .add_local_dir(
        ROOT / "nodes" / "stencil_snapshot",
        f"{COMFYUI_DIR}/custom_nodes/stencil_snapshot",
        ignore=["__pycache__", "**/*.pyc"],
    )
    .add_local_dir(
        ROOT / "nodes" / "stencil_batch",
        f"{COMFYUI_DIR}/custom_nodes/stencil_batch",
        ignore=["__pycache__", "**/*.pyc"],
    )
)


# ---- container helpers -------------------------------------------------------------------


def _log_to_stderr() -> None:
    """Send the engine's INFO logs to Modal's log stream (ComfyUI's own go to a file)."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def _open_store() -> tuple[Any, Any, Any, Catalog]:
    """Settings, job store, output storage and catalog from the container's environment."""
    from api.services import make_storage
    from api.settings import Settings
    from engine.catalog.catalog import load_catalog
    from engine.db.database import Database
    from engine.runners.modal_worker import ensure_database_url

    ensure_database_url(os.environ)
    settings = Settings()
    return (
        settings,
        Database(settings.db_url),
        make_storage(settings),
        load_catalog(settings.catalog),
    )


# ---- GPU classes -------------------------------------------------------------------------


class _GpuContainer:
    """A GPU container's lifecycle: ComfyUI launched before the memory snapshot."""

    gpu_class: ClassVar[str] = ""
    cpu_only: ClassVar[bool] = False
    gpu_snapshot: ClassVar[bool] = False
    # self.worker (a ModalWorker) is created in launch(): annotations here would read as
    # Modal class parameters.

    @modal.enter(snap=True)
    async def launch(self) -> None:
        """Snapshot phase: start ComfyUI with CUDA deferred (unless GPU snapshots are on)."""
        from engine.catalog.catalog import load_catalog
        from engine.runners.modal_worker import ModalWorker, WorkerConfig

        _log_to_stderr()
        config = WorkerConfig(
            gpu_class=self.gpu_class,
            comfyui_path=Path(COMFYUI_DIR),
            cpu=self.cpu_only,
            # With GPU snapshots the device is live before the snapshot and is captured.
            defer_device=not self.gpu_snapshot,
            warmup=_flag("STENCIL_MODAL_WARMUP"),
            log_path=Path("/tmp/comfyui.log"),
        )
        self.worker = ModalWorker(config)
        await self.worker.launch(load_catalog(ROOT / "catalog.yaml"))

    @modal.enter(snap=False)
    async def restore(self) -> None:
        """After restore: the GPU for ComfyUI, and the store and storage (never snapshotted)."""
        _, db, storage, catalog = _open_store()
        await self.worker.restore(db=db, storage=storage, catalog=catalog)

    @modal.exit()
    async def shutdown(self) -> None:
        """Stop ComfyUI."""
        await self.worker.close()


class GpuWorker(_GpuContainer):
    """A GPU container running one job per input."""

    @modal.method()
    async def run(self, job_id: str) -> str:
        """Run one job; raises (so Modal retries elsewhere) when ComfyUI is gone."""
        return await self.worker.run(job_id)

    @modal.method()
    async def verify(self) -> dict[str, Any]:
        """This container's verification report."""
        return (await self.worker.verify()).as_dict()


def batcher_class(spec: GpuClassSpec, max_batch_size: int, wait_ms: int) -> type:
    """The batching class of a GPU class: Modal's dynamic batching gathers job ids (one per
    input, up to `max_batch_size`, waiting at most `wait_ms`); the worker groups them by batch
    key and runs each group as one prompt. Modal allows such a class no other method."""

    async def run(self: Any, job_ids: list[str]) -> list[str]:
        """Run a batch of jobs; raises (so Modal retries elsewhere) when ComfyUI is gone."""
        return list(await self.worker.run_batch(job_ids, BATCHING))

    name = batcher_cls_name(spec.name)
    return type(
        name,
        (_GpuContainer,),
        {
            "__module__": __name__,
            "__qualname__": name,
            "__doc__": f"GPU class {spec.name!r} of the catalog, batching its jobs.",
            "gpu_class": spec.name,
            "cpu_only": spec.gpus is None,
            "gpu_snapshot": spec.gpu_snapshot,
            "run": modal.batched(max_batch_size=max_batch_size, wait_ms=wait_ms)(run),
        },
    )


def cls_options(spec: GpuClassSpec) -> dict[str, Any]:
    """The `app.cls` options of one GPU class (safe defaults: scale to zero, few containers)."""
    return {
        "image": worker_image,
        "gpu": spec.gpus,
        "secrets": SECRETS,
        "volumes": {MODELS_MOUNT: models_volume},
        "env": {"STENCIL_MODAL_WARMUP": "1" if WARMUP else "0"},
        "enable_memory_snapshot": True,
        "experimental_options": {"enable_gpu_snapshot": True} if spec.gpu_snapshot else None,
        "min_containers": 0,
        "max_containers": spec.max_containers,
        "scaledown_window": spec.scaledown_window,
        "timeout": spec.timeout,
        "startup_timeout": 1800 if WARMUP else 600,
        # An engine fault raises after re-queueing the job; the retry claims it elsewhere.
        "retries": modal.Retries(max_retries=2, initial_delay=1.0, backoff_coefficient=1.0),
    }


WORKER_CLASSES: dict[str, Any] = {}
for _spec in GPU_CLASSES:
    _user_cls = type(
        _spec.cls_name,
        (GpuWorker,),
        {
            "__module__": __name__,
            "__qualname__": _spec.cls_name,
            "__doc__": f"GPU class {_spec.name!r} of the catalog.",
            "gpu_class": _spec.name,
            "cpu_only": _spec.gpus is None,
            "gpu_snapshot": _spec.gpu_snapshot,
        },
    )
    # Modal finds a class in the container by its module attribute name.
    WORKER_CLASSES[_spec.name] = globals()[_spec.cls_name] = app.cls(**cls_options(_spec))(
        _user_cls
    )

# Batching classes, for GPU classes some template is batched on (STENCIL_BATCHING at deploy).
BATCHER_CLASSES: dict[str, Any] = {}
for _spec in GPU_CLASSES:
    if _spec.name in BATCHED:
        _size, _wait = BATCHED[_spec.name]
        BATCHER_CLASSES[_spec.name] = globals()[batcher_cls_name(_spec.name)] = app.cls(
            **cls_options(_spec)
        )(batcher_class(_spec, _size, _wait))


# ---- supervisor and API ------------------------------------------------------------------


@app.function(
    image=api_image,
    secrets=SECRETS,
    schedule=modal.Cron("* * * * *"),
    timeout=300,
    max_containers=1,
)
async def supervise() -> list[dict[str, Any]]:
    """Every minute: fail jobs past their limits, recover orphans, cancel their Modal calls."""
    from dataclasses import asdict

    from engine.runners.modal import ModalRunner

    _log_to_stderr()
    settings, db, _, catalog = _open_store()
    try:
        runner = ModalRunner(db, catalog, app_name=APP_NAME)
        actions = await runner.supervise(heartbeat_timeout_s=settings.heartbeat_timeout_s)
        return [asdict(a) for a in actions]
    finally:
        db.dispose()


@app.function(
    image=api_image,
    secrets=SECRETS,
    env={"STENCIL_MODAL_REQUIRES_PROXY_AUTH": "1" if REQUIRES_PROXY_AUTH else "0"},
    min_containers=0,
    max_containers=API_MAX_CONTAINERS,
    scaledown_window=API_SCALEDOWN_S,
    timeout=120,
)
@modal.concurrent(max_inputs=64)
@modal.asgi_app(requires_proxy_auth=REQUIRES_PROXY_AUTH)
def api() -> Any:
    """The same FastAPI app as `stencil serve`, dispatching jobs to the GPU classes."""
    from api.app import create_app
    from engine.runners.modal_worker import ensure_database_url

    ensure_database_url(os.environ)
    return create_app()


@app.local_entrypoint()
def verify(gpu_class: str = "") -> None:
    """`modal run deploy/modal_app.py::verify`: verify each deployed GPU class's engine."""
    failed = False
    for spec in GPU_CLASSES:
        if gpu_class and spec.name != gpu_class:
            continue
        worker = modal.Cls.from_name(APP_NAME, spec.cls_name)()
        report = worker.verify.remote()
        sys.stdout.write(f"== {spec.cls_name}\n{json.dumps(report, indent=2)}\n")
        failed = failed or not report["ok"]
    if failed:
        raise SystemExit(1)
