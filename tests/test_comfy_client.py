"""ComfyClient against fakes: httpx.MockTransport for HTTP, a local websockets server for /ws."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.server import ServerConnection, serve

from engine.comfy import (
    ComfyClient,
    ComfyError,
    ComfyExecutionError,
    ComfyInterrupted,
    ComfyTimeout,
    ComfyUnavailable,
    ComfyValidationError,
    OutputRef,
    ProgressEvent,
    combo_options,
)

GRAPH: dict[str, Any] = {
    "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "x.safetensors"}},
    "5": {"class_type": "KSampler", "inputs": {"steps": 2}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["5", 0]}},
}
OBJECT_INFO_OLD = {
    "CheckpointLoaderSimple": {
        "input": {"required": {"ckpt_name": [["a.safetensors", "b.ckpt"]]}},
        "output": ["MODEL", "CLIP", "VAE"],
    },
    "KSampler": {
        "input": {
            "required": {
                "steps": ["INT", {"default": 20, "min": 1, "max": 10000}],
                "sampler_name": [["euler", "ddim"], {}],
            }
        }
    },
    "SaveImage": {"input": {"required": {"images": ["IMAGE"]}}},
}
OBJECT_INFO_NEW = {
    "CheckpointLoaderSimple": {
        "input": {
            "required": {"ckpt_name": ["COMBO", {"options": ["a.safetensors"], "tooltip": "x"}]}
        }
    },
    "LoadImage": {
        "input": {
            "required": {"image": ["COMBO", {"image_upload": True, "options": []}]},
            "optional": {"mode": ["COMBO", {"options": ["rgb", "rgba"]}]},
        }
    },
}
HISTORY_OK = {
    "prompt": [0, "p1", GRAPH, {}, ["9"]],
    "outputs": {
        "9": {
            "images": [
                {"filename": "out_00001_.png", "subfolder": "", "type": "output"},
                {"filename": "preview.png", "subfolder": "", "type": "temp"},
            ]
        },
        "12": {"text": ["not a file"]},
    },
    "status": {
        "status_str": "success",
        "completed": True,
        "messages": [
            ["execution_start", {"prompt_id": "p1"}],
            ["execution_cached", {"nodes": ["1"], "prompt_id": "p1"}],
        ],
    },
}

Handler = Callable[[httpx.Request], httpx.Response]


def client_for(handler: Handler, **kwargs: Any) -> ComfyClient:
    return ComfyClient("http://comfy.test", transport=httpx.MockTransport(handler), **kwargs)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- validation normalisation


def test_new_style_400_with_node_errors() -> None:
    body = {
        "error": {
            "type": "prompt_outputs_failed_validation",
            "message": "Prompt outputs failed validation",
            "details": "",
            "extra_info": {},
        },
        "node_errors": {
            "1": {
                "errors": [
                    {
                        "type": "value_not_in_list",
                        "message": "Value not in list",
                        "details": "ckpt_name: 'x.safetensors' not in []",
                        "extra_info": {"input_name": "ckpt_name", "received_value": "x"},
                    }
                ],
                "dependent_outputs": ["9"],
                "class_type": "CheckpointLoaderSimple",
            }
        },
    }

    async def go() -> None:
        async with client_for(lambda r: httpx.Response(400, json=body)) as client:
            with pytest.raises(ComfyValidationError) as info:
                await client.submit(GRAPH, "c")
        err = info.value
        assert err.error_type == "prompt_outputs_failed_validation"
        assert list(err.node_errors) == ["1"]
        node = err.node_errors["1"]
        assert node["class_type"] == "CheckpointLoaderSimple"
        item = node["errors"][0]
        assert item["type"] == "value_not_in_list"
        assert item["extra_info"]["input_name"] == "ckpt_name"
        assert "ckpt_name" in str(err)

    asyncio.run(go())


def test_new_style_400_missing_node_type_is_attached_to_node() -> None:
    graph = {**GRAPH, "7": {"class_type": "Nope", "inputs": {}}}
    body = {
        "error": {
            "type": "missing_node_type",
            "message": "Node 'Nope' not found. The custom node may not be installed.",
            "details": "Node ID '#7'",
            "extra_info": {"node_id": "7", "class_type": "Nope", "node_title": "Nope"},
        },
        "node_errors": {},
    }

    async def go() -> None:
        async with client_for(lambda r: httpx.Response(400, json=body)) as client:
            with pytest.raises(ComfyValidationError) as info:
                await client.submit(graph, "c")
        err = info.value
        assert err.node_errors["7"]["class_type"] == "Nope"
        item = err.node_errors["7"]["errors"][0]
        assert item["type"] == "missing_node_type"
        assert item["extra_info"]["input_name"] is None

    asyncio.run(go())


def test_old_style_500_for_unknown_node_type() -> None:
    graph = {**GRAPH, "7": {"class_type": "Nope", "inputs": {}}}
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        if request.url.path == "/prompt":
            # aiohttp's answer when validate_prompt raises KeyError
            return httpx.Response(
                500,
                text="500 Internal Server Error\n\nServer got itself in trouble",
                headers={"content-type": "text/plain; charset=utf-8"},
            )
        if request.url.path == "/object_info":
            return httpx.Response(200, json=OBJECT_INFO_OLD)
        return httpx.Response(404)

    async def go() -> None:
        async with client_for(handler) as client:
            with pytest.raises(ComfyValidationError) as info:
                await client.submit(graph, "c")
        err = info.value
        assert set(err.node_errors) == {"7"}
        assert err.node_errors["7"]["class_type"] == "Nope"
        assert err.node_errors["7"]["errors"][0]["type"] == "missing_node_type"
        assert "Nope" in str(err)
        assert seen == ["POST /prompt", "GET /object_info"]

    asyncio.run(go())


def test_500_unrelated_to_the_graph_is_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/object_info":
            return httpx.Response(200, json=OBJECT_INFO_OLD)
        return httpx.Response(500, text="boom")

    async def go() -> None:
        async with client_for(handler) as client:
            with pytest.raises(ComfyUnavailable):
                await client.submit(GRAPH, "c")
            with pytest.raises(ComfyUnavailable):
                await client.queue()

    asyncio.run(go())


def test_connection_refused_is_unavailable() -> None:
    async def go() -> None:
        async with ComfyClient(f"http://127.0.0.1:{closed_port()}", timeout=5) as client:
            with pytest.raises(ComfyUnavailable):
                await client.system_stats()
            with pytest.raises(ComfyUnavailable):
                await client.submit(GRAPH, "c")
            with pytest.raises(ComfyUnavailable):
                await client.run(GRAPH, timeout=10)

    asyncio.run(go())


def test_transport_error_from_mock_is_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async def go() -> None:
        async with client_for(handler) as client:
            with pytest.raises(ComfyUnavailable):
                await client.history("p1")

    asyncio.run(go())


# ---------------------------------------------------------------- small endpoints


def test_combo_options_both_formats() -> None:
    assert combo_options(OBJECT_INFO_OLD, "CheckpointLoaderSimple", "ckpt_name") == [
        "a.safetensors",
        "b.ckpt",
    ]
    assert combo_options(OBJECT_INFO_OLD, "KSampler", "sampler_name") == ["euler", "ddim"]
    assert combo_options(OBJECT_INFO_OLD, "KSampler", "steps") is None  # INT, not a combo
    assert combo_options(OBJECT_INFO_OLD, "KSampler", "missing") is None
    assert combo_options(OBJECT_INFO_OLD, "NoSuchNode", "x") is None
    assert combo_options(OBJECT_INFO_NEW, "CheckpointLoaderSimple", "ckpt_name") == [
        "a.safetensors"
    ]
    assert combo_options(OBJECT_INFO_NEW, "LoadImage", "image") == []
    assert combo_options(OBJECT_INFO_NEW, "LoadImage", "mode") == ["rgb", "rgba"]


def test_interrupt_delete_and_queue_bodies() -> None:
    requests: list[tuple[str, str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        requests.append((request.method, request.url.path, body))
        if request.url.path == "/queue" and request.method == "GET":
            return httpx.Response(
                200,
                json={
                    "queue_running": [[3, "run-1", {}, {}, ["9"]]],
                    "queue_pending": [[4, "pend-1", {}, {}, ["9"]], [5, "pend-2", {}, {}, []]],
                },
            )
        return httpx.Response(200)

    async def go() -> None:
        async with client_for(handler) as client:
            await client.interrupt("run-1")
            await client.interrupt()
            await client.delete_from_queue(["pend-1", "pend-2"])
            q = await client.queue()
        assert q.running == ["run-1"] and q.pending == ["pend-1", "pend-2"]
        assert "pend-2" in q and "other" not in q and not q.idle
        assert requests[:3] == [
            ("POST", "/interrupt", {"prompt_id": "run-1"}),
            ("POST", "/interrupt", {}),
            ("POST", "/queue", {"delete": ["pend-1", "pend-2"]}),
        ]

    asyncio.run(go())


def test_cancel_prompt_interrupts_running_and_deletes_pending() -> None:
    state = {"running": ["a"], "pending": ["b"]}
    calls: list[tuple[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "GET" and path == "/queue":
            return httpx.Response(
                200,
                json={
                    "queue_running": [[0, p, {}, {}, []] for p in state["running"]],
                    "queue_pending": [[1, p, {}, {}, []] for p in state["pending"]],
                },
            )
        body = json.loads(request.content)
        calls.append((path, body))
        if path == "/interrupt":
            state["running"] = [p for p in state["running"] if p != body.get("prompt_id")]
        if path == "/queue":
            state["pending"] = [p for p in state["pending"] if p not in body["delete"]]
        return httpx.Response(200)

    async def go() -> None:
        async with client_for(handler) as client:
            assert await client.cancel_prompt("a", timeout=5)
            assert await client.cancel_prompt("b", timeout=5)
            assert await client.cancel_prompt("never-seen", timeout=5)
            await client.wait_idle(timeout=1)
        assert calls == [("/interrupt", {"prompt_id": "a"}), ("/queue", {"delete": ["b"]})]

    asyncio.run(go())


def test_view_reads_a_local_servers_outputs_from_its_folder(tmp_path: Path) -> None:
    """With the server's output folder (a ComfyUI of ours, on this machine), `view` reads an
    output from disk and asks nothing over HTTP; a name that leads out of the folder, a file
    that is not there, and any other file type are asked for with `GET /view`."""
    folder = tmp_path / "output"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a b.png").write_bytes(b"\x89PNG-on-disk")
    (tmp_path / "secret.png").write_bytes(b"not an output")
    asked: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(dict(request.url.params))
        return httpx.Response(200, content=b"\x89PNG-over-http")

    async def go() -> list[bytes]:
        async with client_for(handler, output_folder=folder) as client:
            return [
                await client.view(OutputRef("9", "a b.png", "sub", "output")),
                await client.view(OutputRef("9", "secret.png", "..", "output")),
                await client.view(OutputRef("9", "gone.png", "", "output")),
                await client.view(OutputRef("9", "a b.png", "sub", "temp")),
            ]

    got = asyncio.run(go())
    assert got == [b"\x89PNG-on-disk"] + [b"\x89PNG-over-http"] * 3
    assert [a["filename"] for a in asked] == ["secret.png", "gone.png", "a b.png"]


def test_upload_writes_a_plain_name_into_a_local_servers_folder(tmp_path: Path) -> None:
    """With the server's input folder, `upload_image` writes a plain file name there, whole
    (no part file is left), and asks nothing over HTTP; a name with a folder in it, a hidden
    one, and an upload that must not overwrite go to `POST /upload/image`."""
    folder = tmp_path / "input"
    posted: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        posted.append(request.content)
        return httpx.Response(200, json={"name": "x.png", "subfolder": "", "type": "input"})

    async def go() -> list[str]:
        async with client_for(handler, input_folder=folder) as client:
            return [
                await client.upload_image(b"PNG-1", "stencil_ab.png"),
                await client.upload_image(b"PNG-2", "stencil_ab.png"),
                await client.upload_image(b"PNG-3", "../x.png"),
                await client.upload_image(b"PNG-4", ".hidden.png"),
                await client.upload_image(b"PNG-5", "keep.png", overwrite=False),
            ]

    names = asyncio.run(go())
    assert names == ["stencil_ab.png", "stencil_ab.png", "x.png", "x.png", "x.png"]
    assert (folder / "stencil_ab.png").read_bytes() == b"PNG-2"
    assert sorted(p.name for p in folder.iterdir()) == ["stencil_ab.png"]
    assert [next(d for d in (b"PNG-3", b"PNG-4", b"PNG-5") if d in c) for c in posted] == [
        b"PNG-3", b"PNG-4", b"PNG-5"
    ]  # fmt: skip


def test_a_failed_local_upload_leaves_no_part_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write into the local input folder that fails (a full disk, injected at the rename)
    raises, and leaves neither the part file nor a file under the name."""
    folder = tmp_path / "input"

    def full(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("a local upload asks nothing over HTTP")

    async def go() -> None:
        async with client_for(handler, input_folder=folder) as client:
            await client.upload_image(b"PNG-1", "stencil_ab.png")

    monkeypatch.setattr("engine.comfy.client.os.replace", full)
    with pytest.raises(OSError, match="No space"):
        asyncio.run(go())
    assert list(folder.iterdir()) == []


def test_view_and_upload() -> None:
    seen: dict[str, Any] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/view":
            seen.setdefault("view", []).append(dict(request.url.params))
            if request.url.params["filename"] == "gone.png":
                return httpx.Response(404)
            return httpx.Response(200, content=b"\x89PNG-bytes")
        if request.url.path == "/upload/image":
            seen["upload"] = request.content
            seen["ctype"] = request.headers["content-type"]
            return httpx.Response(
                200, json={"name": "cat (1).png", "subfolder": "", "type": "input"}
            )
        return httpx.Response(404)

    async def go() -> None:
        async with client_for(handler) as client:
            data = await client.view(OutputRef("9", "a b.png", "sub", "output"))
            name = await client.upload_image(b"PNGDATA", "cat.png", overwrite=False)
            with pytest.raises(ComfyError):
                await client.view(OutputRef("9", "gone.png", "", "output"))
        assert data == b"\x89PNG-bytes"
        assert seen["view"][0] == {"filename": "a b.png", "subfolder": "sub", "type": "output"}
        assert name == "cat (1).png"
        assert seen["ctype"].startswith("multipart/form-data")
        assert b'filename="cat.png"' in seen["upload"] and b"PNGDATA" in seen["upload"]
        assert b'name="overwrite"\r\n\r\nfalse' in seen["upload"]

    asyncio.run(go())


# ---------------------------------------------------------------- run() without a websocket


class PollingFake:
    """Answers /prompt, /queue and /history like ComfyUI would for one prompt."""

    def __init__(self, history: dict[str, Any] | None, *, polls_before_done: int = 2) -> None:
        self.history = history
        self.polls_before_done = polls_before_done
        self.history_calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/prompt":
            return httpx.Response(200, json={"prompt_id": "p1", "number": 0, "node_errors": {}})
        if path == "/history/p1":
            self.history_calls += 1
            done = self.history is not None and self.history_calls > self.polls_before_done
            return httpx.Response(200, json={"p1": self.history} if done else {})
        if path == "/queue":
            running = [[0, "p1", {}, {}, []]] if self.history is not None else []
            return httpx.Response(200, json={"queue_running": running, "queue_pending": []})
        return httpx.Response(404)


def test_run_polls_history_without_websocket() -> None:
    async def go() -> None:
        async with client_for(PollingFake(HISTORY_OK), websocket=False, poll_interval=0.01) as c:
            result = await c.run(GRAPH, timeout=10)
        assert result.prompt_id == "p1"
        assert result.outputs == [OutputRef("9", "out_00001_.png", "", "output")]
        assert result.cached_nodes == ["1"]
        assert not result.via_websocket
        assert result.queued_at <= result.started <= result.finished

    asyncio.run(go())


def test_run_reports_execution_error_from_history() -> None:
    history = {
        "outputs": {},
        "status": {
            "status_str": "error",
            "completed": False,
            "messages": [
                ["execution_start", {"prompt_id": "p1"}],
                [
                    "execution_error",
                    {
                        "prompt_id": "p1",
                        "node_id": "5",
                        "node_type": "KSampler",
                        "exception_type": "RuntimeError",
                        "exception_message": "out of memory",
                        "traceback": ["..."],
                    },
                ],
            ],
        },
    }

    async def go() -> None:
        async with client_for(PollingFake(history), websocket=False, poll_interval=0.01) as c:
            with pytest.raises(ComfyExecutionError) as info:
                await c.run(GRAPH, timeout=10)
        err = info.value
        assert (err.node_id, err.node_type, err.exception_type) == ("5", "KSampler", "RuntimeError")
        assert err.message == "out of memory"

    asyncio.run(go())


def test_run_detects_prompt_lost_by_a_restart() -> None:
    async def go() -> None:
        async with client_for(PollingFake(None), websocket=False, poll_interval=0.01) as c:
            with pytest.raises(ComfyUnavailable, match="vanished"):
                await c.run(GRAPH, timeout=10)

    asyncio.run(go())


# ---------------------------------------------------------------- run() with a websocket


WsScript = Callable[[ServerConnection], Awaitable[None]]


async def run_with_fake_ws(
    script: WsScript, history: dict[str, Any], **run_kwargs: Any
) -> tuple[Any, list[ProgressEvent], list[str]]:
    """Run client.run() against a real websocket server plus mocked HTTP endpoints."""
    submitted = asyncio.Event()
    http_log: list[str] = []
    history_calls = 0

    async def ws_handler(conn: ServerConnection) -> None:
        await conn.send(json.dumps({"type": "status", "data": {"status": {}, "sid": "x"}}))
        await submitted.wait()
        await script(conn)

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal history_calls
        http_log.append(f"{request.method} {request.url.path}")
        if request.url.path == "/prompt":
            submitted.set()
            return httpx.Response(200, json={"prompt_id": "p1", "number": 1, "node_errors": {}})
        if request.url.path == "/history/p1":
            history_calls += 1
            # current ComfyUI sends execution_success before the history entry exists
            return httpx.Response(200, json={} if history_calls == 1 else {"p1": history})
        if request.url.path == "/queue":
            return httpx.Response(200, json={"queue_running": [], "queue_pending": []})
        return httpx.Response(404)

    events: list[ProgressEvent] = []
    async with serve(ws_handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        client = ComfyClient(f"http://127.0.0.1:{port}", transport=httpx.MockTransport(handler))
        async with client:
            try:
                result: Any = await client.run(GRAPH, on_progress=events.append, **run_kwargs)
            except ComfyError as exc:
                result = exc
    return result, events, http_log


def msg(mtype: str, **data: Any) -> str:
    return json.dumps({"type": mtype, "data": data})


def test_run_follows_new_style_websocket_messages() -> None:
    async def script(conn: ServerConnection) -> None:
        await conn.send(msg("execution_start", prompt_id="p1", timestamp=1))
        await conn.send(msg("execution_cached", nodes=["1"], prompt_id="p1", timestamp=1))
        await conn.send(msg("progress", value=1, max=9, prompt_id="other", node="5"))
        await conn.send(b"\x00\x00\x00\x01binary-preview")
        await conn.send(msg("executing", node="5", display_node="5", prompt_id="p1"))
        await conn.send(msg("progress", value=1, max=2, prompt_id="p1", node="5"))
        await conn.send(msg("progress", value=2, max=2, prompt_id="p1", node="5"))
        await conn.send(
            msg("executed", node="9", display_node="9", output={"images": []}, prompt_id="p1")
        )
        await conn.send(msg("execution_success", prompt_id="p1", timestamp=2))
        await conn.wait_closed()  # no "executing node=None": success alone must end the run

    async def go() -> None:
        result, events, http_log = await run_with_fake_ws(script, HISTORY_OK, timeout=10)
        assert not isinstance(result, Exception), result
        assert result.via_websocket
        assert result.outputs == [OutputRef("9", "out_00001_.png", "", "output")]
        assert result.cached_nodes == ["1"]
        assert [e.type for e in events] == [
            "execution_start",
            "execution_cached",
            "executing",
            "progress",
            "progress",
            "executed",
            "execution_success",
        ]
        assert [(e.value, e.max) for e in events if e.type == "progress"] == [(1, 2), (2, 2)]
        assert events[3].fraction == 0.5
        assert "GET /queue" not in http_log  # no polling needed

    asyncio.run(go())


def test_run_raises_execution_and_interrupt_messages() -> None:
    async def error_script(conn: ServerConnection) -> None:
        await conn.send(msg("execution_start", prompt_id="p1"))
        await conn.send(
            msg(
                "execution_error",
                prompt_id="p1",
                node_id="5",
                node_type="KSampler",
                exception_type="torch.OutOfMemoryError",
                exception_message="CUDA out of memory",
                traceback=[],
                executed=[],
            )
        )
        await conn.wait_closed()

    async def interrupt_script(conn: ServerConnection) -> None:
        await conn.send(msg("execution_start", prompt_id="p1"))
        await conn.send(msg("execution_interrupted", prompt_id="p1", node_id="5", executed=[]))
        await conn.wait_closed()

    async def go() -> None:
        result, _, _ = await run_with_fake_ws(error_script, HISTORY_OK, timeout=10)
        assert isinstance(result, ComfyExecutionError)
        assert result.exception_type == "torch.OutOfMemoryError" and result.node_id == "5"
        result, _, _ = await run_with_fake_ws(interrupt_script, HISTORY_OK, timeout=10)
        assert isinstance(result, ComfyInterrupted) and result.node_id == "5"

    asyncio.run(go())


def test_run_falls_back_to_polling_when_socket_drops() -> None:
    async def script(conn: ServerConnection) -> None:
        await conn.send(msg("execution_start", prompt_id="p1"))
        await conn.close()

    async def go() -> None:
        result, events, http_log = await run_with_fake_ws(script, HISTORY_OK, timeout=10)
        assert not isinstance(result, Exception), result
        assert not result.via_websocket
        assert result.outputs[0].filename == "out_00001_.png"
        assert [e.type for e in events] == ["execution_start"]
        assert http_log.count("GET /history/p1") >= 2

    asyncio.run(go())


def test_progress_callback_may_be_async_and_may_fail() -> None:
    async def script(conn: ServerConnection) -> None:
        await conn.send(msg("execution_start", prompt_id="p1"))
        await conn.send(msg("progress", value=1, max=1, prompt_id="p1", node="5"))
        await conn.send(msg("executing", node=None, prompt_id="p1"))  # old-style finish

    seen: list[str] = []

    async def on_progress(ev: ProgressEvent) -> None:
        seen.append(ev.type)
        if ev.type == "progress":
            raise RuntimeError("sink broke")  # must be logged, not fail the job

    result = asyncio.run(_run_with_callback(script, on_progress))
    assert not isinstance(result, Exception), result
    assert seen == ["execution_start", "progress", "executing"]


async def _run_with_callback(
    script: WsScript, on_progress: Callable[[ProgressEvent], Awaitable[None]]
) -> Any:
    submitted = asyncio.Event()

    async def ws_handler(conn: ServerConnection) -> None:
        await submitted.wait()
        await script(conn)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/prompt":
            submitted.set()
            return httpx.Response(200, json={"prompt_id": "p1"})
        if request.url.path == "/history/p1":
            return httpx.Response(200, json={"p1": HISTORY_OK})
        return httpx.Response(404)

    async with serve(ws_handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with ComfyClient(
            f"http://127.0.0.1:{port}", transport=httpx.MockTransport(handler)
        ) as client:
            try:
                return await client.run(GRAPH, on_progress=on_progress, timeout=10)
            except ComfyError as exc:
                return exc


def test_cancel_before_submission_submits_nothing() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(500)

    async def go() -> None:
        cancel = asyncio.Event()
        cancel.set()
        async with client_for(handler, websocket=False) as client:
            with pytest.raises(ComfyInterrupted):
                await client.run(GRAPH, timeout=5, cancel=cancel)
        assert calls == []

    asyncio.run(go())


def test_progress_state_gives_each_node_and_the_whole_prompt() -> None:
    def state(**nodes: tuple[int, int, str]) -> str:
        return msg(
            "progress_state",
            prompt_id="p1",
            nodes={
                k: {"value": v, "max": m, "state": s, "node_id": k, "prompt_id": "p1"}
                for k, (v, m, s) in nodes.items()
            },
        )

    async def script(conn: ServerConnection) -> None:
        await conn.send(msg("execution_start", prompt_id="p1"))
        await conn.send(msg("execution_cached", nodes=["1"], prompt_id="p1"))
        await conn.send(state(**{"5": (0, 1, "running")}))
        await conn.send(msg("progress", value=1, max=2, prompt_id="p1", node="5"))
        await conn.send(state(**{"5": (1, 2, "running")}))
        await conn.send(state(**{"5": (2, 2, "finished"), "9": (0, 1, "running")}))
        await conn.send(state(**{"5": (2, 2, "finished"), "9": (1, 1, "finished")}))
        await conn.send(msg("execution_success", prompt_id="p1"))

    async def go() -> None:
        result, events, _ = await run_with_fake_ws(script, HISTORY_OK, timeout=10)
        assert not isinstance(result, Exception), result
        states = [e for e in events if e.type == "progress_state"]
        # Three nodes, one cached: the share counts the cached one as done.
        assert [round(e.fraction or 0, 4) for e in states] == [0.3333, 0.5, 0.6667, 1.0]
        assert states[1].node == "5" and (states[1].value, states[1].max) == (1, 2)
        assert states[1].nodes["5"].fraction == 0.5
        assert states[2].node == "9" and states[2].nodes["5"].state == "finished"
        assert states[3].node is None  # nothing running any more

    asyncio.run(go())


def test_submission_carries_a_client_chosen_prompt_id() -> None:
    bodies: list[dict[str, Any]] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/prompt":
            body = json.loads(request.content)
            bodies.append(body)
            # A current server honours the id; an old one mints its own.
            pid = body.get("prompt_id") if len(bodies) == 1 else "server-minted"
            return httpx.Response(200, json={"prompt_id": pid, "number": 1, "node_errors": {}})
        return httpx.Response(404)

    async def go() -> None:
        async with ComfyClient("http://comfy", transport=httpx.MockTransport(handler)) as c:
            first = await c.submit(
                GRAPH, "client", prompt_id="4c0e7c3e-2b49-4b1b-8d2a-7d4b1c1f0a11"
            )
            second = await c.submit(
                GRAPH, "client", prompt_id="0b9d2f0e-6e63-4a0d-9d55-5a3b7b0c9e22"
            )
        assert first == "4c0e7c3e-2b49-4b1b-8d2a-7d4b1c1f0a11"
        assert second == "server-minted"  # the id answered is the one to follow
        assert bodies[0]["prompt_id"] == first and bodies[0]["client_id"] == "client"

    asyncio.run(go())


def test_lost_submission_answer_still_stops_the_prompt() -> None:
    """The answer to POST /prompt never comes; the prompt it queued is found by its id."""
    queued: list[str] = []
    deleted: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/prompt" and request.method == "POST":
            queued.append(json.loads(request.content)["prompt_id"])
            await asyncio.sleep(30)  # ComfyUI queued it, but its answer is lost
        if request.url.path == "/queue" and request.method == "GET":
            pending = [[1, p, {}, {}, []] for p in queued if p not in deleted]
            return httpx.Response(200, json={"queue_running": [], "queue_pending": pending})
        if request.url.path == "/queue" and request.method == "POST":
            deleted.extend(json.loads(request.content)["delete"])
            return httpx.Response(200, json={})
        return httpx.Response(404)

    async def go() -> None:
        client = ComfyClient(
            "http://comfy", transport=httpx.MockTransport(handler), websocket=False
        )
        async with client:
            with pytest.raises(ComfyTimeout):
                await client.run(GRAPH, timeout=0.5)
        assert len(queued) == 1 and deleted == queued

    asyncio.run(go())
