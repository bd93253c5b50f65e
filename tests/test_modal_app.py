"""The Modal app imports offline (no credentials) and has the structure the catalog asks for.

Modal keeps most of a definition inside the loader closures of its objects; these tests read
them there (modal==1.6.4), as `modal deploy` would send them.
"""

from __future__ import annotations

import importlib
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import modal
import pytest
from modal._partial_function import _find_partial_methods_for_user_cls, _PartialFunctionFlags
from modal._utils.async_utils import synchronizer
from modal_proto import api_pb2

from engine.catalog.catalog import load_catalog
from engine.comfy.install import TORCH_PINS
from engine.runners.modal import APP_NAME, worker_cls_name

ROOT = Path(__file__).resolve().parents[1]
BUILDER_VERSION = "2026.10"
PIN = re.compile(r"^[a-z0-9][a-z0-9._-]*==[0-9][0-9A-Za-z.+]*$")


def closure(fn: Any) -> dict[str, Any]:
    """The free variables a Modal loader closed over (where it keeps the definition)."""
    return dict(
        zip(fn.__code__.co_freevars, (c.cell_contents for c in fn.__closure__), strict=True)
    )


def layers(image: Any) -> Iterator[dict[str, Any]]:
    """Every layer of an image, newest first."""
    stack = [synchronizer._translate_in(image)]
    while stack:
        cur = stack.pop()
        cl = closure(cur._load)
        yield cl
        if "base_image" in cl:
            stack.append(cl["base_image"])
        stack.extend((cl.get("base_images") or {}).values())


def commands(image: Any) -> list[str]:
    """Every Dockerfile command of an image, oldest layer first."""
    out: list[str] = []
    for cl in layers(image):
        fn = cl.get("dockerfile_function")
        if fn is not None:
            out[:0] = fn(BUILDER_VERSION).commands
    return out


def mounts(image: Any) -> dict[str, str]:
    """Local sources an image adds at container start: remote path -> local path or module."""
    out: dict[str, str] = {}
    for cl in layers(image):
        mount = cl.get("mount")
        for e in getattr(mount, "_entries", ()):
            local = getattr(e, "local_dir", None) or getattr(e, "local_file", None)
            key = str(getattr(e, "remote_path", "") or f"module:{getattr(e, 'module_name', '')}")
            out[key] = str(local) if local is not None else e.module_name
    return out


def build_functions(image: Any) -> list[str]:
    """Names of the functions an image runs as build steps."""
    return [
        cl["build_function"]._raw_f.__name__ for cl in layers(image) if cl.get("build_function")
    ]


@pytest.fixture(scope="module")
def modal_app() -> Any:
    """deploy/modal_app.py, imported as `modal deploy` would (no credentials needed)."""
    return importlib.import_module("deploy.modal_app")


def service_function(cls: Any) -> Any:
    """The function behind a Modal class."""
    return synchronizer._translate_in(cls)._class_service_function


def test_one_class_per_gpu_class_with_gpus_and_fallbacks_in_order(modal_app: Any) -> None:
    catalog = load_catalog(ROOT / "catalog.yaml")
    assert set(modal_app.WORKER_CLASSES) == set(catalog.gpu_classes)
    for name, gc in catalog.gpu_classes.items():
        cls = getattr(modal_app, worker_cls_name(name))
        assert isinstance(cls, modal.Cls)
        assert cls is modal_app.WORKER_CLASSES[name]
        fn = service_function(cls)
        assert fn._spec.gpus == [gc.gpu, *gc.fallbacks]
        assert fn._function_info.gpus == [(g, 1) for g in [gc.gpu, *gc.fallbacks]]
        assert fn._function_info.method_names == ["run", "verify"]
        cl = closure(fn._load)
        assert cl["enable_memory_snapshot"] is True
        # gpu_snapshot is false in the catalog: Modal's alpha GPU snapshot stays off.
        assert not gc.gpu_snapshot and cl["experimental_options"] == {}
        auto = cl["autoscaler_settings"]
        assert (auto.min_containers, auto.max_containers) == (0, gc.max_containers)
        assert auto.scaledown_window == gc.scaledown_window_s
        assert cl["retry_policy"].retries == 2
        runs = [t.limits.max_run_seconds for t in catalog.templates if t.gpu_class == name]
        assert cl["timeout"] == max(runs, default=300) + 120


def test_gpu_snapshot_option_only_when_the_catalog_asks(modal_app: Any) -> None:
    spec = modal_app.GpuClassSpec(
        name="h100",
        cls_name="Worker_h100",
        gpus=["H100", "A100-80GB"],
        gpu_snapshot=True,
        max_containers=1,
        scaledown_window=30,
        timeout=400,
    )
    opts = modal_app.cls_options(spec)
    assert opts["experimental_options"] == {"enable_gpu_snapshot": True}
    assert opts["enable_memory_snapshot"] is True and opts["min_containers"] == 0
    user_cls = type("Worker_h100", (modal_app.GpuWorker,), {"__qualname__": "Worker_h100"})
    cls = modal.App("snapshot-test").cls(**opts)(user_cls)
    cl = closure(service_function(cls)._load)
    assert cl["experimental_options"] == {"enable_gpu_snapshot": "True"}
    assert service_function(cls)._spec.gpus == ["H100", "A100-80GB"]
    off = modal_app.cls_options(spec.__class__(**{**spec.__dict__, "gpu_snapshot": False}))
    assert off["experimental_options"] is None


def test_enter_hooks_split_at_the_snapshot(modal_app: Any) -> None:
    user_cls = modal_app.GpuWorker
    pre = _find_partial_methods_for_user_cls(user_cls, _PartialFunctionFlags.ENTER_PRE_SNAPSHOT)
    post = _find_partial_methods_for_user_cls(user_cls, _PartialFunctionFlags.ENTER_POST_SNAPSHOT)
    exits = _find_partial_methods_for_user_cls(user_cls, _PartialFunctionFlags.EXIT)
    assert set(pre) == {"launch"} and set(post) == {"restore"} and set(exits) == {"shutdown"}


def test_secrets_volume_and_env(modal_app: Any) -> None:
    for cls in modal_app.WORKER_CLASSES.values():
        info = service_function(cls)._function_info
        assert "modal.Secret.from_name('stencil-db')" in info.secrets
        assert "modal.Secret.from_name('stencil-r2')" in info.secrets
        assert info.volumes["/models"].name == "stencil-models"
    for fn in (modal_app.api, modal_app.supervise):
        info = synchronizer._translate_in(fn)._function_info
        assert info.secrets[:2] == [
            "modal.Secret.from_name('stencil-db')",
            "modal.Secret.from_name('stencil-r2')",
        ]
    r2 = closure(synchronizer._translate_in(modal_app.R2_SECRET)._load)
    assert set(r2["required_keys"]) >= {"STENCIL_S3_BUCKET", "STENCIL_S3_SECRET_ACCESS_KEY"}


def test_supervisor_runs_every_minute(modal_app: Any) -> None:
    fn = synchronizer._translate_in(modal_app.supervise)
    assert fn._function_info.schedule == "Cron('* * * * *', UTC)"
    assert closure(fn._load)["autoscaler_settings"].max_containers == 1


def test_api_is_the_fastapi_app_with_small_defaults(
    modal_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fn = synchronizer._translate_in(modal_app.api)
    assert fn._webhook_config.type == api_pb2.WEBHOOK_TYPE_ASGI_APP
    assert fn._webhook_config.requires_proxy_auth is False
    auto = closure(fn._load)["autoscaler_settings"]
    assert (auto.min_containers, auto.max_containers) == (0, 2)
    env = modal_app.COMMON_ENV
    assert env["STENCIL_RUNNER"] == "modal" and env["STENCIL_STORAGE"] == "s3"
    assert env["STENCIL_ENV"] == "production"
    # The proxy-auth flag is read at deploy time.
    monkeypatch.setenv("STENCIL_MODAL_REQUIRES_PROXY_AUTH", "1")
    reloaded = importlib.reload(modal_app)
    try:
        assert synchronizer._translate_in(reloaded.api)._webhook_config.requires_proxy_auth
    finally:
        monkeypatch.delenv("STENCIL_MODAL_REQUIRES_PROXY_AUTH")
        importlib.reload(modal_app)


def test_every_package_is_pinned(modal_app: Any) -> None:
    for lock in (modal_app.API_LOCK, modal_app.WORKER_LOCK):
        assert all(PIN.match(p) for p in lock), [p for p in lock if not PIN.match(p)]
        names = [p.split("==")[0] for p in lock]
        assert len(names) == len(set(names))
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        pin = re.sub(r"\[.*\]", "", dep).lower()
        assert pin in modal_app.API_LOCK, pin
        assert pin in modal_app.WORKER_LOCK, pin
    # Production runs the torch the tests run.
    assert modal_app.TORCH_PINS == TORCH_PINS
    assert set(TORCH_PINS) <= set(modal_app.WORKER_LOCK)
    assert f"comfy-cli=={modal_app.COMFY_CLI_VERSION}" in modal_app.WORKER_LOCK
    assert re.fullmatch(r"3\.11\.\d+", modal_app.PYTHON_VERSION)
    assert re.fullmatch(r"\d+\.\d+\.\d+", modal_app.COMFYUI_VERSION)


def test_images_install_exactly_the_pins(modal_app: Any) -> None:
    api_cmds = commands(modal_app.api_image)
    assert api_cmds[0].startswith(f"FROM python:{modal_app.PYTHON_VERSION}-slim")
    uv = [c for c in api_cmds if "uv pip install" in c]
    assert len(uv) == 1 and all(p in uv[0].split() for p in modal_app.API_LOCK)
    assert f"ghcr.io/astral-sh/uv:{modal_app.UV_VERSION} " in " ".join(api_cmds) + " "

    w = commands(modal_app.worker_image)
    assert w[0].startswith(f"FROM python:{modal_app.PYTHON_VERSION}-slim")
    assert not any("uv:latest" in c for c in w)
    install = [c for c in w if "comfy --skip-prompt" in c]
    assert install == [f"RUN {modal_app.COMFY_INSTALL}"]
    assert f"--version {modal_app.COMFYUI_VERSION}" in install[0]
    assert "--skip-torch-or-directml" in install[0]
    full = [c for c in w if "uv pip install" in c and "torch==" in c]
    assert len(full) == 2  # the lock, and the lock again after ComfyUI's requirements
    assert all(p in full[1].split() for p in modal_app.WORKER_LOCK)
    # Models: fetched (sha256-checked) into the Volume before the lock, linked after ComfyUI.
    assert build_functions(modal_app.worker_image) == ["check_worker_env", "fetch_models"]
    catalog = load_catalog(ROOT / "catalog.yaml")
    for m in catalog.all_models():
        link = f"ln -sfn /models/{m.folder}/{m.name} {modal_app.COMFYUI_DIR}/models/{m.folder}/"
        assert any(link in c for c in w), link
    assert modal_app.MODELS == [
        {"name": m.name, "folder": m.folder, "url": m.url, "sha256": m.sha256}
        for m in catalog.all_models()
    ]


def test_images_carry_the_project_source_and_nodes(modal_app: Any) -> None:
    for image in (modal_app.api_image, modal_app.worker_image):
        m = mounts(image)
        assert m["module:engine"] == "engine" and m["module:api"] == "api"
        assert m["/root/catalog.yaml"] == str(ROOT / "catalog.yaml")
        assert m["/root/templates"] == str(ROOT / "templates")
        assert m["/root/migrations"] == str(ROOT / "migrations")
    nodes = mounts(modal_app.worker_image)
    remote = f"{modal_app.COMFYUI_DIR}/custom_nodes/stencil_snapshot"
    assert nodes[remote] == str(ROOT / "nodes" / "stencil_snapshot")
    assert synchronizer._translate_in(modal_app.worker_image)._added_python_source_set >= {
        "engine",
        "api",
    }


def test_names_match_the_runner(modal_app: Any) -> None:
    assert modal_app.APP_NAME == APP_NAME
    for spec in modal_app.GPU_CLASSES:
        assert spec.cls_name == worker_cls_name(spec.name)


def test_link_commands_quote_paths(modal_app: Any) -> None:
    cmds = modal_app.link_commands([{"name": "a b.safetensors", "folder": "loras"}])
    assert cmds == [
        f"mkdir -p {modal_app.COMFYUI_DIR}/models/loras && ln -sfn "
        f"'/models/loras/a b.safetensors' '{modal_app.COMFYUI_DIR}/models/loras/a b.safetensors'"
    ]


def test_batching_classes_use_modals_dynamic_batching(modal_app: Any) -> None:
    from engine.runners.batch import batched_classes, batcher_cls_name

    catalog = load_catalog(ROOT / "catalog.yaml")
    # txt2img, the one batchable template, runs on l4 and is batched there (`auto`).
    assert batched_classes(catalog, "auto") == {"l4": (8, 100)}
    assert batched_classes(catalog, "off") == {}
    assert set(modal_app.BATCHER_CLASSES) == {"l4"}
    cls = getattr(modal_app, batcher_cls_name("l4"))
    assert cls is modal_app.BATCHER_CLASSES["l4"]
    assert modal_app.batcher_cls_name("l4") == batcher_cls_name("l4")
    fn = service_function(cls)
    assert fn._function_info.method_names == ["run"]  # Modal allows it no other method
    cl = closure(fn._load)
    assert (cl["batch_max_size"], cl["batch_wait_ms"]) == (8, 100)
    worker = service_function(modal_app.WORKER_CLASSES["l4"])
    assert fn._spec.gpus == worker._spec.gpus
    assert closure(worker._load).get("batch_max_size") is None
    batcher = modal_app.batcher_class(modal_app.GPU_CLASSES[0], 4, 50)
    for flag, names in (
        (_PartialFunctionFlags.ENTER_PRE_SNAPSHOT, {"launch"}),
        (_PartialFunctionFlags.ENTER_POST_SNAPSHOT, {"restore"}),
        (_PartialFunctionFlags.EXIT, {"shutdown"}),
        (_PartialFunctionFlags.BATCHED, {"run"}),
    ):
        assert set(_find_partial_methods_for_user_cls(batcher, flag)) == names
    nodes = mounts(modal_app.worker_image)
    remote = f"{modal_app.COMFYUI_DIR}/custom_nodes/stencil_batch"
    assert nodes[remote] == str(ROOT / "nodes" / "stencil_batch")
