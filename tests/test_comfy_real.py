"""End-to-end tests against a real ComfyUI subprocess on CPU with the synthetic checkpoint.

Fixtures (comfy_process, comfy_url, comfyui_path) come from tests/comfy_fixtures.py, which
tests/conftest.py loads through ``pytest_plugins``.
"""

from __future__ import annotations

import asyncio
import io
import os
import random
import signal
import time
import uuid
from pathlib import Path
from typing import cast

import pytest
from PIL import Image

from engine.comfy import (
    ComfyClient,
    ComfyInterrupted,
    ComfyProcess,
    ComfyStartError,
    ComfyTimeout,
    ComfyUnavailable,
    ComfyValidationError,
    OutputRef,
    ProgressEvent,
    combo_options,
    comfyui_version,
    is_comfyui_dir,
)
from engine.comfy.client import outputs_from_history
from engine.comfy.install import (
    COMFYUI_SOURCES,
    DEFAULT_COMFYUI,
    ComfyInstallError,
    install_comfyui,
    installed_source,
    read_marker,
)
from tests.comfy_fixtures import SYNTH_CHECKPOINT, txt2img_graph

pytestmark = pytest.mark.comfy

LONG_STEPS = 10_000  # KSampler's maximum; ~8 minutes on CPU, always cancelled long before


def _seed() -> int:
    # ComfyUI caches node outputs: an identical graph would finish instantly without sampling.
    return random.randrange(2**31)


def test_txt2img_returns_png_and_progress(comfy_process: ComfyProcess, comfy_url: str) -> None:
    async def go() -> None:
        events: list[ProgressEvent] = []
        async with ComfyClient(comfy_url) as client:
            result = await client.run(
                txt2img_graph(_seed(), steps=2), on_progress=events.append, timeout=90
            )
            assert len(result.outputs) == 1
            ref = result.outputs[0]
            assert (ref.node_id, ref.type) == ("7", "output")
            data = await client.view(ref)
        # The engine's own client reads the same file from the server's output folder.
        async with ComfyClient(comfy_url, output_folder=comfy_process.output_folder) as local:
            assert local._read_output(ref) == data
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        img = Image.open(io.BytesIO(data))
        assert img.size == (64, 64)
        # random weights must still produce noise, not a flat (NaN/black) image
        lo, hi = cast(tuple[int, int], img.convert("L").getextrema())
        assert hi - lo > 16
        types = [e.type for e in events]
        assert types[0] == "execution_start"
        steps = [e for e in events if e.type == "progress"]
        assert [e.value for e in steps] == [1, 2] and {e.max for e in steps} == {2}
        assert all(e.node == "5" for e in steps)
        assert any(e.type == "executed" and e.node == "7" for e in events)
        assert result.queued_at <= result.started <= result.finished
        assert 0 < result.execution_seconds < 60
        assert result.via_websocket

    asyncio.run(go())


def test_one_websocket_carries_every_prompt_of_a_client(comfy_url: str) -> None:
    """The client keeps one socket to its ComfyUI: prompts one after another, and two at once,
    each get their own messages over it (the server may answer them in any order)."""

    async def go() -> None:
        async with ComfyClient(comfy_url) as client:
            first = await client.run(txt2img_graph(_seed(), steps=1), timeout=90)
            second = await client.run(txt2img_graph(_seed(), steps=1), timeout=90)
            a_events: list[ProgressEvent] = []
            b_events: list[ProgressEvent] = []
            a, b = await asyncio.gather(
                *(
                    client.run(txt2img_graph(_seed(), steps=2), on_progress=sink, timeout=90)
                    for sink in (a_events.append, b_events.append)
                )
            )
            assert client.socket_connects == 1
        results = (first, second, a, b)
        assert all(r.via_websocket and len(r.outputs) == 1 for r in results)
        assert len({r.prompt_id for r in results}) == 4
        # Each concurrent run saw only its own prompt's progress.
        assert {e.prompt_id for e in a_events} == {a.prompt_id}
        assert {e.prompt_id for e in b_events} == {b.prompt_id}
        assert [e.value for e in a_events if e.type == "progress"] == [1, 2]
        assert [e.value for e in b_events if e.type == "progress"] == [1, 2]

    asyncio.run(go())


def test_protocol_of_the_server_under_test(comfy_url: str) -> None:
    """Current ComfyUI (it reports its version) speaks the new protocol; the 2024 copy does not.

    One test for both: each branch asserts what that protocol must and must not send, so a
    client path that only one version exercises is still checked against a real server.
    """

    async def go() -> None:
        events: list[ProgressEvent] = []
        async with ComfyClient(comfy_url) as client:
            version = (await client.system_stats()).get("system", {}).get("comfyui_version")
            chosen = str(uuid.uuid4())
            graph = txt2img_graph(_seed(), steps=2)
            pid = await client.submit(graph, "protocol-test", prompt_id=chosen)
            await client.wait_idle(timeout=90)
            entry = await client.history(pid)
            assert entry is not None and outputs_from_history(entry)
            await client.run(txt2img_graph(_seed(), steps=2), on_progress=events.append, timeout=90)
        types = {e.type for e in events}
        if version is None:  # spring 2024
            assert pid != chosen  # it mints its own ids
            assert not types & {"execution_success", "progress_state"}
            return
        assert pid == chosen  # a client-chosen id is honoured
        assert {"execution_success", "progress_state"} <= types
        shares = [e.fraction for e in events if e.type == "progress_state"]
        assert shares == sorted(shares) and shares[-1] == 1.0  # whole-prompt share only grows
        sampler = [e for e in events if e.type == "progress_state" and e.node == "5"]
        assert sampler and sampler[-1].nodes["5"].max == 2

    asyncio.run(go())


def test_cancel_event_interrupts_running_prompt(comfy_url: str) -> None:
    async def go() -> None:
        cancel = asyncio.Event()

        def on_progress(ev: ProgressEvent) -> None:
            if ev.type == "progress":
                cancel.set()  # sampling has started: cancel mid-run

        async with ComfyClient(comfy_url) as client:
            t0 = time.monotonic()
            with pytest.raises(ComfyInterrupted) as info:
                await client.run(
                    txt2img_graph(_seed(), steps=LONG_STEPS),
                    on_progress=on_progress,
                    cancel=cancel,
                    timeout=90,
                )
            assert info.value.prompt_id
            assert time.monotonic() - t0 < 30
            assert (await client.queue()).idle
            # ComfyUI is usable again straight away
            result = await client.run(txt2img_graph(_seed()), timeout=60)
            assert len(result.outputs) == 1

    asyncio.run(go())


def test_cancelled_task_stops_prompt_in_comfyui(comfy_url: str) -> None:
    async def go() -> None:
        sampling = asyncio.Event()

        def on_progress(ev: ProgressEvent) -> None:
            if ev.type == "progress":
                sampling.set()

        async with ComfyClient(comfy_url) as client:
            job = asyncio.create_task(
                client.run(
                    txt2img_graph(_seed(), steps=LONG_STEPS), on_progress=on_progress, timeout=90
                )
            )
            await asyncio.wait_for(sampling.wait(), 60)
            job.cancel()
            with pytest.raises(asyncio.CancelledError):
                await job
            assert (await client.queue()).idle

    asyncio.run(go())


def test_timeout_cancels_prompt_in_comfyui(comfy_url: str) -> None:
    async def go() -> None:
        async with ComfyClient(comfy_url) as client:
            with pytest.raises(ComfyTimeout) as info:
                await client.run(txt2img_graph(_seed(), steps=LONG_STEPS), timeout=3)
            assert info.value.prompt_id
            assert (await client.queue()).idle

    asyncio.run(go())


def test_unknown_node_type_is_a_validation_error(comfy_url: str) -> None:
    graph = txt2img_graph(_seed())
    graph["8"] = {"class_type": "StencilNoSuchNode", "inputs": {"image": ["6", 0]}}

    async def go() -> None:
        async with ComfyClient(comfy_url) as client:
            with pytest.raises(ComfyValidationError) as info:
                await client.submit(graph, "test-unknown-node")
        err = info.value
        assert set(err.node_errors) == {"8"}
        assert err.node_errors["8"]["class_type"] == "StencilNoSuchNode"
        assert err.node_errors["8"]["errors"][0]["type"] == "missing_node_type"
        assert "StencilNoSuchNode" in str(err)

    asyncio.run(go())


def test_bad_input_reports_node_and_input_name(comfy_url: str) -> None:
    async def go() -> None:
        async with ComfyClient(comfy_url) as client:
            with pytest.raises(ComfyValidationError) as info:
                await client.run(txt2img_graph(_seed(), ckpt_name="absent.safetensors"), timeout=30)
        errors = info.value.node_errors["1"]
        assert errors["class_type"] == "CheckpointLoaderSimple"
        assert errors["errors"][0]["extra_info"]["input_name"] == "ckpt_name"

    asyncio.run(go())


def test_malformed_link_is_refused_before_comfyui_sees_it(comfy_url: str) -> None:
    # A list input is a link to ComfyUI. The 2024 server checks only required inputs, and a
    # malformed link anywhere else kills its prompt worker; the client refuses it on every
    # server, names the node and input, and leaves the server working.
    async def go() -> None:
        async with ComfyClient(comfy_url) as client:
            for bad in ([1, 2, 3], ["absent", 0], ["1", -1], ["1", "0"]):
                graph = txt2img_graph(_seed())
                graph["2"]["inputs"]["text"] = bad
                with pytest.raises(ComfyValidationError) as info:
                    await client.submit(graph, "test-bad-link")
                (item,) = info.value.node_errors["2"]["errors"]
                assert item["type"] == "bad_linked_input"
                assert item["extra_info"]["input_name"] == "text"
                assert set(info.value.node_errors) == {"2"}
            assert (await client.queue()).idle
            result = await client.run(txt2img_graph(_seed()), timeout=120)
            assert len(result.outputs) == 1

    asyncio.run(go())


def test_object_info_lists_synthetic_checkpoint(comfy_url: str) -> None:
    async def go() -> None:
        async with ComfyClient(comfy_url) as client:
            info = await client.object_info()
            assert {"KSampler", "SaveImage", "CheckpointLoaderSimple"} <= await client.node_types()
            stats = await client.system_stats()
        assert SYNTH_CHECKPOINT in (
            combo_options(info, "CheckpointLoaderSimple", "ckpt_name") or []
        )
        assert "euler" in (combo_options(info, "KSampler", "sampler_name") or [])
        assert combo_options(info, "KSampler", "steps") is None
        assert stats["devices"][0]["type"] == "cpu"

    asyncio.run(go())


def test_upload_image_round_trip(comfy_url: str) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, format="PNG")

    async def go() -> None:
        async with ComfyClient(comfy_url) as client:
            name = await client.upload_image(buf.getvalue(), "stencil-upload.png")
            assert name == "stencil-upload.png"
            back = await client.view(OutputRef("", name, "", "input"))
        assert back == buf.getvalue()

    asyncio.run(go())


def test_an_input_written_to_a_local_servers_folder_is_one_it_serves(
    comfy_process: ComfyProcess, comfy_url: str
) -> None:
    """The engine's own client writes an input into its server's input folder (no
    `POST /upload/image`); the server then has it, as after an upload: `/view` serves it and
    LoadImage takes it in a prompt."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (30, 200, 30)).save(buf, format="PNG")
    name = f"stencil_{uuid.uuid4().hex}.png"

    async def go() -> tuple[bytes, list[str]]:
        posted: list[str] = []
        async with ComfyClient(comfy_url, input_folder=comfy_process.input_folder) as local:
            local._http.event_hooks["request"].append(
                lambda r: posted.append(r.url.path) if r.method == "POST" else None  # type: ignore[func-returns-value]
            )
            assert await local.upload_image(buf.getvalue(), name) == name
            assert posted == []
        async with ComfyClient(comfy_url) as client:
            back = await client.view(OutputRef("", name, "", "input"))
            graph = {
                "1": {"class_type": "LoadImage", "inputs": {"image": name}},
                "2": {
                    "class_type": "SaveImage",
                    "inputs": {"images": ["1", 0], "filename_prefix": "stencil_loaded"},
                },
            }
            result = await client.run(graph, timeout=60)
            refs = [r.filename for r in result.outputs]
        return back, refs

    back, refs = asyncio.run(go())
    assert back == buf.getvalue()
    assert len(refs) == 1


def _kill(proc: ComfyProcess) -> None:
    pid = proc.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while proc.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not proc.running


def test_kill_9_then_ensure_running_restarts(comfy_process: ComfyProcess) -> None:
    async def go() -> None:
        before, old_pid = comfy_process.restarts, comfy_process.pid
        async with ComfyClient(comfy_process.base_url) as client:
            sampling = asyncio.Event()

            def on_progress(ev: ProgressEvent) -> None:
                if ev.type == "progress":
                    sampling.set()

            job = asyncio.create_task(
                client.run(
                    txt2img_graph(_seed(), steps=LONG_STEPS), on_progress=on_progress, timeout=90
                )
            )
            await asyncio.wait_for(sampling.wait(), 60)
            _kill(comfy_process)
            with pytest.raises(ComfyUnavailable):
                await job  # the in-flight job learns that ComfyUI is gone
            assert not await comfy_process.is_alive()

            await comfy_process.ensure_running()
            assert comfy_process.restarts == before + 1
            assert comfy_process.pid not in (None, old_pid)
            assert await comfy_process.is_alive()
            result = await client.run(txt2img_graph(_seed()), timeout=90)
            assert len(result.outputs) == 1

    asyncio.run(go())


def test_supervise_restarts_dead_comfyui(comfy_process: ComfyProcess) -> None:
    async def go() -> None:
        before = comfy_process.restarts
        supervisor = asyncio.create_task(comfy_process.supervise(interval=0.2))
        try:
            _kill(comfy_process)
            deadline = time.monotonic() + 90
            while comfy_process.restarts == before or not await comfy_process.is_alive():
                assert time.monotonic() < deadline, comfy_process.log_tail()
                assert not supervisor.done()
                await asyncio.sleep(0.2)
        finally:
            supervisor.cancel()
            with pytest.raises(asyncio.CancelledError):
                await supervisor
        async with ComfyClient(comfy_process.base_url) as client:
            assert (await client.system_stats())["devices"]

    asyncio.run(go())


def test_start_failure_reports_log_tail(comfyui_path: Path, tmp_path: Path) -> None:
    proc = ComfyProcess(comfyui_path, log_path=tmp_path / "c.log", extra_args=["--no-such-flag"])

    async def go() -> None:
        await proc.start()
        with pytest.raises(ComfyStartError) as info:
            await proc.wait_ready(timeout=60)
        assert info.value.returncode not in (None, 0)
        assert "--no-such-flag" in info.value.log_tail

    try:
        asyncio.run(go())
    finally:
        proc.close()
    assert proc.pid is None


def test_install_is_idempotent_on_an_existing_tree(comfyui_path: Path) -> None:
    before = sorted(p.name for p in comfyui_path.iterdir())
    assert is_comfyui_dir(comfyui_path)
    source = installed_source(comfyui_path)
    version = source.name if source else DEFAULT_COMFYUI
    if source is None:
        pytest.skip("COMFYUI_PATH is a plain checkout, not a named install")
    assert install_comfyui(comfyui_path, version=version, install_requirements=False) == (
        comfyui_path
    )
    assert sorted(p.name for p in comfyui_path.iterdir()) == before
    marker = read_marker(comfyui_path)
    assert marker is not None
    assert marker["source"] == COMFYUI_SOURCES[version].requirement
    assert marker["sha256"] == COMFYUI_SOURCES[version].sha256
    assert comfyui_version(comfyui_path) == marker["version"]
    assert not (comfyui_path / "extra_model_paths.yaml").exists()
    assert (comfyui_path / "LICENSE").is_file()  # GPL-3.0 travels with the tree
    other = next(n for n in COMFYUI_SOURCES if n != version)
    with pytest.raises(ComfyInstallError, match="holds ComfyUI"):
        install_comfyui(comfyui_path, version=other, install_requirements=False)
