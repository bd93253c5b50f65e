"""Async client for ComfyUI's HTTP and websocket API.

It speaks to both the spring-2024 ComfyUI we install for tests and current releases, which differ
in a few observable ways:

* current servers send ``execution_success`` before the final ``executing {node: null}``;
  old ones only send the latter;
* ``/object_info`` lists combo inputs as ``["COMBO", {"options": [...]}]`` on current servers and
  as ``[[...options...], {...}]`` on old ones;
* an unknown node type makes current servers answer ``400 {"error": {"type":
  "missing_node_type"...}}`` while old ones crash into a plain-text ``500``;
* current servers honour ``{"prompt_id": ...}`` on ``/interrupt``; old ones ignore the body;
* current servers honour a client-chosen ``prompt_id`` in ``POST /prompt`` (so a prompt can be
  cancelled even when the answer to its submission is lost); old ones mint their own;
* current servers send ``progress_state`` (every node's progress) around each node, and
  ``executed`` even for cached output nodes; old ones only send ``progress`` for the node
  running;
* on current servers ``execution_success`` can arrive before ``/history`` holds the entry.

The client follows the current protocol first and falls back where a message is absent.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import mimetypes
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from engine.comfy.errors import (
    ComfyError,
    ComfyExecutionError,
    ComfyInterrupted,
    ComfyTimeout,
    ComfyUnavailable,
    ComfyValidationError,
    NodeError,
    NodeErrorItem,
)

logger = logging.getLogger(__name__)

# Message types forwarded to on_progress (everything else is either terminal or noise).
PROGRESS_TYPES = frozenset(
    {
        "execution_start",
        "execution_cached",
        "executing",
        "progress",
        "executed",
        "execution_success",
        "progress_state",
    }
)
# After execution_success, how long to wait for the closing message before reading history.
SUCCESS_TO_IDLE_S = 2.0
# History/ executed entries that name files ComfyUI wrote.
_FILE_KEYS = ("images", "gifs", "videos", "audio", "files")


# A file name with no folder in it, not hidden: what the engine's inputs are called.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,200}")


@dataclass(frozen=True)
class OutputRef:
    """A file a node wrote, addressable through ``/view``."""

    node_id: str
    filename: str
    subfolder: str
    type: str


@dataclass(frozen=True)
class NodeProgress:
    """One node's progress from a ``progress_state`` message."""

    value: float
    max: float
    state: str  # "running" or "finished" ("pending" nodes are not sent)

    @property
    def fraction(self) -> float:
        """Share of this node's work done."""
        if self.state == "finished":
            return 1.0
        return min(self.value / self.max, 1.0) if self.max > 0 else 0.0


@dataclass(frozen=True)
class ProgressEvent:
    """One websocket message about our prompt, flattened."""

    prompt_id: str
    type: str
    node: str | None = None
    value: int | None = None
    max: int | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    at: float = 0.0  # time.monotonic() when received
    # progress_state only: each node's progress, and the whole prompt's share done.
    nodes: Mapping[str, NodeProgress] = field(default_factory=dict)
    overall: float | None = None

    @property
    def fraction(self) -> float | None:
        """The prompt's share done: across nodes (``progress_state``), else value/max."""
        if self.overall is not None:
            return self.overall
        if self.value is None or not self.max:
            return None
        return self.value / self.max


ProgressCallback = Callable[[ProgressEvent], Awaitable[None] | None]


@dataclass(frozen=True)
class QueueState:
    """Prompt ids ComfyUI is running and has waiting."""

    running: list[str]
    pending: list[str]

    def __contains__(self, prompt_id: object) -> bool:
        return prompt_id in self.running or prompt_id in self.pending

    @property
    def idle(self) -> bool:
        """Nothing running, nothing pending."""
        return not self.running and not self.pending


@dataclass
class RunResult:
    """Outcome of a finished prompt; times are time.monotonic() stamps."""

    prompt_id: str
    outputs: list[OutputRef]
    execution_seconds: float
    cached_nodes: list[str]
    queued_at: float
    started: float
    finished: float
    node_outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)
    via_websocket: bool = True


@dataclass
class _RunState:
    prompt_id: str
    queued_at: float
    node_count: int = 0
    started: float | None = None
    finished: float | None = None
    cached_nodes: list[str] = field(default_factory=list)
    via_websocket: bool = True


def combo_options(
    object_info: Mapping[str, Any], node_type: str, input_name: str
) -> list[str] | None:
    """Options of a combo input from ``/object_info``, in either the old or the new format."""
    node = object_info.get(node_type)
    if not isinstance(node, Mapping):
        return None
    inputs = node.get("input")
    if not isinstance(inputs, Mapping):
        return None
    for section in ("required", "optional"):
        group = inputs.get(section)
        if not isinstance(group, Mapping) or input_name not in group:
            continue
        spec = group[input_name]
        if not isinstance(spec, list | tuple) or not spec:
            return None
        head = spec[0]
        if isinstance(head, list | tuple):  # old: [[opt, ...], {config}]
            return [str(o) for o in head]
        if head == "COMBO":  # new: ["COMBO", {"options": [...], ...}]
            conf = spec[1] if len(spec) > 1 else None
            opts = conf.get("options") if isinstance(conf, Mapping) else None
            return [str(o) for o in opts] if isinstance(opts, list | tuple) else []
        return None
    return None


def outputs_from_history(entry: Mapping[str, Any]) -> list[OutputRef]:
    """Files of type "output" listed in a ``/history`` entry, ordered by node id."""
    refs: list[OutputRef] = []
    outputs = entry.get("outputs")
    if not isinstance(outputs, Mapping):
        return refs
    for node_id in sorted(outputs, key=_node_sort_key):
        node_out = outputs[node_id]
        if not isinstance(node_out, Mapping):
            continue
        for key in _FILE_KEYS:
            items = node_out.get(key)
            if not isinstance(items, list):
                continue
            for item in items:
                if not isinstance(item, Mapping) or "filename" not in item:
                    continue
                if item.get("type", "output") != "output":
                    continue  # previews live in temp/ and are not results
                refs.append(
                    OutputRef(
                        node_id=str(node_id),
                        filename=str(item["filename"]),
                        subfolder=str(item.get("subfolder") or ""),
                        type=str(item.get("type") or "output"),
                    )
                )
    return refs


def _node_sort_key(node_id: str) -> tuple[int, int | str]:
    return (0, int(node_id)) if str(node_id).isdigit() else (1, str(node_id))


def _error_item(raw: Any) -> NodeErrorItem:
    """Coerce one of ComfyUI's error dicts into NodeErrorItem (extra_info.input_name always set)."""
    src = raw if isinstance(raw, Mapping) else {"message": str(raw)}
    extra = src.get("extra_info")
    extra_info: dict[str, Any] = dict(extra) if isinstance(extra, Mapping) else {}
    extra_info.setdefault("input_name", None)
    return {
        "type": str(src.get("type") or "unknown"),
        "message": str(src.get("message") or ""),
        "details": str(src.get("details") or ""),
        "extra_info": extra_info,
    }


def _class_type(graph: Mapping[str, Any], node_id: str) -> str:
    node = graph.get(node_id)
    if isinstance(node, Mapping):
        return str(node.get("class_type") or "")
    return ""


def normalise_validation(body: Mapping[str, Any], graph: Mapping[str, Any]) -> ComfyValidationError:
    """Turn a ``POST /prompt`` error body (old or new ComfyUI) into ComfyValidationError."""
    error = body.get("error")
    error_type: str | None = None
    message = "ComfyUI rejected the prompt"
    details = ""
    extra: dict[str, Any] = {}
    if isinstance(error, Mapping):
        error_type = str(error.get("type")) if error.get("type") else None
        message = str(error.get("message") or message)
        details = str(error.get("details") or "")
        extra = dict(error["extra_info"]) if isinstance(error.get("extra_info"), Mapping) else {}
    elif isinstance(error, str) and error:
        message = error

    node_errors: dict[str, NodeError] = {}
    raw_nodes = body.get("node_errors")
    if isinstance(raw_nodes, Mapping):
        for node_id, raw in raw_nodes.items():
            if not isinstance(raw, Mapping):
                continue
            errs = raw.get("errors")
            node_errors[str(node_id)] = {
                "class_type": str(raw.get("class_type") or _class_type(graph, str(node_id))),
                "errors": [_error_item(e) for e in errs] if isinstance(errs, list) else [],
            }

    # New ComfyUI reports graph-level problems (unknown class_type) only in "error"; attach
    # them to the node so callers get one shape for every validation failure.
    if not node_errors and error_type in ("missing_node_type", "invalid_prompt"):
        node_id = extra.get("node_id")
        if node_id is None:
            m = re.search(r"#([^'\"\s]+)", details)
            node_id = m.group(1) if m else None
        if node_id is not None and str(node_id) in graph:
            node_errors[str(node_id)] = {
                "class_type": str(extra.get("class_type") or _class_type(graph, str(node_id))),
                "errors": [
                    _error_item(
                        {
                            "type": error_type,
                            "message": message,
                            "details": details,
                            "extra_info": extra,
                        }
                    )
                ],
            }
    full = f"{message}: {details}" if details and details not in message else message
    return ComfyValidationError(full, node_errors, error_type=error_type)


def _graph_structure_errors(
    graph: Mapping[str, Any], known_types: set[str] | None
) -> dict[str, NodeError]:
    """Problems the old server crashes on (HTTP 500) instead of reporting: bad or unknown nodes."""
    errors: dict[str, NodeError] = {}
    for node_id, node in graph.items():
        if not isinstance(node, Mapping) or "class_type" not in node:
            errors[str(node_id)] = {
                "class_type": "",
                "errors": [
                    _error_item(
                        {
                            "type": "invalid_prompt",
                            "message": "Node is missing the class_type property",
                            "details": f"Node ID '#{node_id}'",
                        }
                    )
                ],
            }
            continue
        class_type = str(node["class_type"])
        if known_types is not None and class_type not in known_types:
            errors[str(node_id)] = {
                "class_type": class_type,
                "errors": [
                    _error_item(
                        {
                            "type": "missing_node_type",
                            "message": f"Node '{class_type}' not found. The custom node may not be "
                            "installed.",
                            "details": f"Node ID '#{node_id}'",
                            "extra_info": {"node_id": str(node_id), "class_type": class_type},
                        }
                    )
                ],
            }
    return errors


def _link_errors(graph: Mapping[str, Any]) -> dict[str, NodeError]:
    """Inputs shaped as links that are not `[existing node id, output index]`.

    The 2024 server validates only a node's required inputs; a malformed link in an optional
    one (a batch's stacked conditionings are optional sockets) reaches its executor, whose
    KeyError kills the prompt worker and leaves the queue stuck. Refused here, for every
    server, with the node and input named as ComfyUI's own validation would.
    """
    errors: dict[str, NodeError] = {}
    for node_id, node in graph.items():
        inputs = node.get("inputs") if isinstance(node, Mapping) else None
        if not isinstance(inputs, Mapping):
            continue
        for name, val in inputs.items():
            if not isinstance(val, list):
                continue
            ok = (
                len(val) == 2
                and isinstance(val[0], str | int)
                and not isinstance(val[0], bool)
                and str(val[0]) in graph
                and isinstance(val[1], int)
                and not isinstance(val[1], bool)
                and val[1] >= 0
            )
            if ok:
                continue
            item = _error_item(
                {
                    "type": "bad_linked_input",
                    "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]"
                    " naming a node of the prompt",
                    "details": str(name),
                    "extra_info": {"input_name": str(name), "received_value": val},
                }
            )
            entry = errors.setdefault(
                str(node_id), {"class_type": _class_type(graph, str(node_id)), "errors": []}
            )
            entry["errors"].append(item)
    return errors


class ComfyClient:
    """Async client for one ComfyUI server."""

    def __init__(
        self,
        base_url: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
        websocket: bool = True,
        poll_interval: float = 0.25,
        output_folder: Path | None = None,
        input_folder: Path | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        # Its input folder, likewise: `upload_image` writes there instead of POSTing.
        self.input_folder = input_folder.resolve() if input_folder is not None else None
        # The server's output folder when it runs on this machine (a `ComfyProcess` of ours):
        # `view` reads its outputs there instead of asking for them over HTTP.
        self.output_folder = output_folder.resolve() if output_folder is not None else None
        self._timeout = timeout
        self._use_websocket = websocket
        self._poll_interval = poll_interval
        self._http = httpx.AsyncClient(
            base_url=self.base_url + "/", transport=transport, timeout=timeout
        )
        self._socket = _SharedSocket(self) if websocket else None

    async def aclose(self) -> None:
        """Close the websocket and the HTTP connection pool."""
        if self._socket is not None:
            await self._socket.close()
        await self._http.aclose()

    @property
    def socket_open(self) -> bool:
        """Whether the shared websocket is connected now (ComfyUI is up)."""
        return self._socket is not None and self._socket.open

    @property
    def socket_connects(self) -> int:
        """How many times the shared websocket was opened (one per ComfyUI lifetime)."""
        return self._socket.connects if self._socket is not None else 0

    async def __aenter__(self) -> ComfyClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ HTTP plumbing

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request; transport failures become ComfyUnavailable."""
        try:
            return await self._http.request(method, path.lstrip("/"), **kwargs)
        except httpx.TransportError as exc:  # connect refused, reset, timeouts...
            raise ComfyUnavailable(f"{method} {self.base_url}{path} failed: {exc!r}") from exc

    async def _ok(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request that must succeed (2xx)."""
        resp = await self._request(method, path, **kwargs)
        if resp.status_code >= 500:
            raise ComfyUnavailable(
                f"{method} {path} answered HTTP {resp.status_code}: {resp.text[:300]}"
            )
        if resp.status_code >= 400:
            raise ComfyError(f"{method} {path} answered HTTP {resp.status_code}: {resp.text[:300]}")
        return resp

    @staticmethod
    def _json(resp: httpx.Response) -> Any:
        try:
            return resp.json()
        except ValueError as exc:
            raise ComfyUnavailable(
                f"{resp.request.method} {resp.request.url.path} answered non-JSON: "
                f"{resp.text[:200]!r}"
            ) from exc

    # ------------------------------------------------------------------ simple endpoints

    async def system_stats(self) -> dict[str, Any]:
        """``GET /system_stats``."""
        data = self._json(await self._ok("GET", "/system_stats"))
        return cast(dict[str, Any], data) if isinstance(data, dict) else {}

    async def object_info(self) -> dict[str, Any]:
        """``GET /object_info``: every node type and its inputs."""
        data = self._json(await self._ok("GET", "/object_info"))
        if not isinstance(data, dict):
            raise ComfyUnavailable("/object_info did not answer a JSON object")
        return cast(dict[str, Any], data)

    async def node_types(self) -> set[str]:
        """Names of every node type this ComfyUI knows."""
        return set(await self.object_info())

    async def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The ``/history/{prompt_id}`` entry, or None while ComfyUI has not finished it."""
        data = self._json(await self._ok("GET", f"/history/{prompt_id}"))
        if isinstance(data, dict):
            entry = data.get(prompt_id)
            if isinstance(entry, dict):
                return cast(dict[str, Any], entry)
        return None

    async def queue(self) -> QueueState:
        """``GET /queue`` reduced to prompt ids."""
        data = self._json(await self._ok("GET", "/queue"))

        def ids(items: Any) -> list[str]:
            # items are [number, prompt_id, prompt, extra_data, outputs_to_execute, ...]
            out: list[str] = []
            for item in items if isinstance(items, list) else []:
                if isinstance(item, list | tuple) and len(item) > 1:
                    out.append(str(item[1]))
            return out

        if not isinstance(data, dict):
            raise ComfyUnavailable("/queue did not answer a JSON object")
        return QueueState(
            running=ids(data.get("queue_running")), pending=ids(data.get("queue_pending"))
        )

    async def interrupt(self, prompt_id: str | None = None) -> None:
        """``POST /interrupt``: new ComfyUI stops only `prompt_id`, old ComfyUI stops anything."""
        await self._ok("POST", "/interrupt", json={"prompt_id": prompt_id} if prompt_id else {})

    async def delete_from_queue(self, prompt_ids: list[str]) -> None:
        """Remove pending prompts (``POST /queue {"delete": [...]}``)."""
        await self._ok("POST", "/queue", json={"delete": list(prompt_ids)})

    async def view(self, ref: OutputRef) -> bytes:
        """Bytes of an output file: read from the server's output folder when it is on this
        machine (`output_folder`), else ``GET /view``."""
        if self.output_folder is not None and ref.type == "output":
            data = await asyncio.to_thread(self._read_output, ref)
            if data is not None:
                return data
        params = {"filename": ref.filename, "subfolder": ref.subfolder, "type": ref.type}
        resp = await self._request("GET", "/view", params=params)
        if resp.status_code == 404:
            raise ComfyError(f"ComfyUI has no {ref.type} file {ref.subfolder}/{ref.filename}")
        if resp.status_code >= 400:
            raise ComfyUnavailable(f"GET /view answered HTTP {resp.status_code}")
        return resp.content

    def _write_input(self, data: bytes, name: str) -> None:
        assert self.input_folder is not None
        self.input_folder.mkdir(parents=True, exist_ok=True)
        part = self.input_folder / f".{name}.{uuid.uuid4().hex}.part"
        try:
            part.write_bytes(data)
            os.replace(part, self.input_folder / name)  # a reader sees the old file or the new
        except BaseException:
            part.unlink(missing_ok=True)  # a write that failed (a full disk) leaves nothing
            raise

    def _read_output(self, ref: OutputRef) -> bytes | None:
        """The file inside the output folder, or None (elsewhere, or not there: `/view` then
        answers, as for a server on another machine)."""
        assert self.output_folder is not None
        path = (self.output_folder / ref.subfolder / ref.filename).resolve()
        if not path.is_relative_to(self.output_folder):
            return None
        try:
            return path.read_bytes()
        except OSError:
            return None

    async def upload_image(self, data: bytes, name: str, *, overwrite: bool = True) -> str:
        """Upload into ComfyUI's input folder; returns the stored name (for LoadImage). With
        the server's input folder on this machine (`input_folder`), a plain file name is
        written there (whole, then renamed into place) instead of `POST /upload/image`."""
        if self.input_folder is not None and overwrite and _PLAIN_NAME.fullmatch(name):
            await asyncio.to_thread(self._write_input, data, name)
            return name
        mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
        form = {"type": "input", "overwrite": "true" if overwrite else "false"}
        resp = await self._ok(
            "POST", "/upload/image", files={"image": (name, data, mime)}, data=form
        )
        body = self._json(resp)
        if not isinstance(body, dict) or "name" not in body:
            raise ComfyUnavailable(f"/upload/image answered {body!r}")
        subfolder = str(body.get("subfolder") or "")
        stored = str(body["name"])
        return f"{subfolder}/{stored}" if subfolder else stored

    # ------------------------------------------------------------------ submission

    async def submit(
        self, graph: dict[str, Any], client_id: str, *, prompt_id: str | None = None
    ) -> str:
        """Queue an API-format graph; returns its prompt_id or raises ComfyValidationError.

        `prompt_id` (a UUID) is honoured by current ComfyUI; old servers mint their own, so
        callers must use the id returned.
        """
        bad_links = _link_errors(graph)
        if bad_links:
            raise ComfyValidationError(
                "Prompt outputs failed validation: bad linked input",
                bad_links,
                error_type="prompt_outputs_failed_validation",
            )
        body: dict[str, Any] = {"prompt": graph, "client_id": client_id}
        if prompt_id is not None:
            body["prompt_id"] = prompt_id
        resp = await self._request("POST", "/prompt", json=body)
        if resp.status_code == 200:
            body = self._json(resp)
            prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
            if not isinstance(prompt_id, str):
                raise ComfyUnavailable(f"POST /prompt answered without prompt_id: {body!r}")
            if isinstance(body, dict) and body.get("node_errors"):
                # Old ComfyUI queues the valid outputs and reports the broken ones here.
                logger.warning(
                    "prompt %s queued with node errors: %s", prompt_id, body["node_errors"]
                )
            return prompt_id
        raise await self._submit_error(graph, resp)

    async def _submit_error(self, graph: dict[str, Any], resp: httpx.Response) -> ComfyError:
        """Build the exception for a refused submission, whatever shape the server used."""
        status = resp.status_code
        try:
            body = resp.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and ("node_errors" in body or "error" in body):
            err = normalise_validation(body, graph)
            if err.node_errors or status < 500:
                return err
        if status == 400 or status >= 500:
            # Old ComfyUI answers a plain-text 500 for graphs it cannot even index (unknown
            # class_type, node without class_type); find the culprit ourselves.
            try:
                known: set[str] | None = await self.node_types()
            except ComfyError:
                known = None
            problems = _graph_structure_errors(graph, known)
            if problems:
                names = sorted({e["class_type"] for e in problems.values() if e["class_type"]})
                msg = (
                    f"unknown node type(s): {', '.join(names)}"
                    if names
                    else "graph has nodes without class_type"
                )
                return ComfyValidationError(msg, problems, error_type="missing_node_type")
        if status == 400:
            return ComfyValidationError(f"ComfyUI rejected the prompt: {resp.text[:300]}")
        if status >= 500:
            return ComfyUnavailable(f"POST /prompt answered HTTP {status}: {resp.text[:300]}")
        return ComfyError(f"POST /prompt answered HTTP {status}: {resp.text[:300]}")

    # ------------------------------------------------------------------ cancellation

    async def cancel_prompt(self, prompt_id: str, *, timeout: float = 30.0) -> bool:
        """Stop a running or pending prompt; True once it is neither running nor pending."""
        deadline = time.monotonic() + timeout
        last_interrupt = float("-inf")
        while True:
            q = await self.queue()
            now = time.monotonic()
            if prompt_id in q.running:
                # Repeat the interrupt now and then: ComfyUI clears the flag when a prompt starts,
                # so one sent in the instant between dequeue and start is lost.
                if now - last_interrupt >= 1.0:
                    await self.interrupt(prompt_id)
                    last_interrupt = now
            elif prompt_id in q.pending:
                await self.delete_from_queue([prompt_id])
            else:
                return True
            if now >= deadline:
                logger.warning("prompt %s still in ComfyUI's queue after %.0fs", prompt_id, timeout)
                return False
            await asyncio.sleep(0.1)

    async def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until nothing is running or pending; ComfyTimeout otherwise."""
        deadline = time.monotonic() + timeout
        while not (await self.queue()).idle:
            if time.monotonic() >= deadline:
                raise ComfyTimeout(None, timeout, what="queue drain")
            await asyncio.sleep(self._poll_interval)

    # ------------------------------------------------------------------ running

    def _ws_url(self, client_id: str) -> str:
        url = httpx.URL(self.base_url)
        scheme = "wss" if url.scheme == "https" else "ws"
        path = url.path.rstrip("/") + "/ws"
        return str(url.copy_with(scheme=scheme, path=path, params={"clientId": client_id}))

    async def _open_ws(self, client_id: str) -> ClientConnection | None:
        """Connect the websocket; None (we will poll instead) if that is impossible."""
        try:
            return await connect(
                self._ws_url(client_id),
                open_timeout=min(self._timeout, 10.0),
                # Sampling holds the GIL in bursts; be lenient before declaring the peer dead.
                ping_interval=20,
                ping_timeout=60,
                compression=None,
                max_size=64 * 1024 * 1024,  # preview frames can be large
                max_queue=None,
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            logger.warning("ComfyUI websocket unavailable (%r); will poll /history", exc)
            return None

    async def run(
        self,
        graph: dict[str, Any],
        *,
        client_id: str | None = None,
        on_progress: ProgressCallback | None = None,
        timeout: float,
        cancel: asyncio.Event | None = None,
    ) -> RunResult:
        """Submit `graph`, follow it to the end and return its outputs."""
        if cancel is not None and cancel.is_set():
            raise ComfyInterrupted(None, reason="cancelled before submission")
        deadline = time.monotonic() + timeout
        # Chosen here so that a submission whose answer is lost can still be stopped, and so
        # that the prompt's messages are routed to us from the first one.
        chosen = str(uuid.uuid4())
        # One websocket per client, opened once and kept: subscribe before submitting, so no
        # message between submission and subscription is lost.
        ws = await self._socket.subscribe(chosen) if self._socket is not None else None
        if ws is not None:
            client_id = self._socket.client_id if self._socket is not None else client_id
        client_id = client_id or uuid.uuid4().hex
        follow: asyncio.Task[RunResult] | None = None
        cancel_wait: asyncio.Task[bool] | None = None
        state: _RunState | None = None
        try:
            queued_at = time.monotonic()
            try:
                prompt_id = await asyncio.wait_for(
                    self.submit(graph, client_id, prompt_id=chosen),
                    timeout=max(deadline - queued_at, 0.001),
                )
            except TimeoutError:
                await asyncio.shield(self._stop_quietly(chosen))
                raise ComfyTimeout(None, timeout, what="submission") from None
            except asyncio.CancelledError:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(self._stop_quietly(chosen))
                raise
            if ws is not None and prompt_id != chosen and self._socket is not None:
                # A server that assigns its own ids: follow the id it gave.
                self._socket.rekey(chosen, prompt_id)
                chosen = prompt_id
            state = _RunState(
                prompt_id=prompt_id,
                queued_at=queued_at,
                node_count=len(graph),
                via_websocket=ws is not None,
            )
            follow = asyncio.create_task(self._follow(ws, state, on_progress, deadline))
            waiters: set[asyncio.Future[Any]] = {follow}
            if cancel is not None:
                cancel_wait = asyncio.create_task(cancel.wait())
                waiters.add(cancel_wait)
            done, _ = await asyncio.wait(
                waiters,
                timeout=max(deadline - time.monotonic(), 0),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if follow in done:
                return follow.result()
            follow.cancel()
            with contextlib.suppress(asyncio.CancelledError, ComfyError):
                await follow
            stopped = await self._stop_quietly(prompt_id)
            if cancel_wait is not None and cancel_wait in done:
                raise ComfyInterrupted(
                    prompt_id, reason="cancelled" if stopped else "cancel requested (not confirmed)"
                )
            raise ComfyTimeout(prompt_id, timeout)
        except asyncio.CancelledError:
            # Our caller gave up (shutdown, task.cancel()): do not leave the prompt burning
            # compute in ComfyUI.  Shielded so the clean-up survives the cancellation.
            if state is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(self._stop_quietly(state.prompt_id))
            raise
        finally:
            for task in (follow, cancel_wait):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, ComfyError):
                        await task
            if ws is not None and self._socket is not None:
                self._socket.unsubscribe(chosen)

    async def _stop_quietly(self, prompt_id: str) -> bool:
        """cancel_prompt that reports rather than raises (ComfyUI may be gone already)."""
        try:
            return await self.cancel_prompt(prompt_id)
        except ComfyError as exc:
            logger.warning("could not cancel prompt %s: %s", prompt_id, exc)
            return False

    async def _follow(
        self,
        ws: _Subscription | None,
        state: _RunState,
        on_progress: ProgressCallback | None,
        deadline: float,
    ) -> RunResult:
        """Follow the prompt (websocket, else polling) and collect its result from history."""
        finished = False
        if ws is not None:
            try:
                finished = await self._follow_ws(ws, state, on_progress)
            except ConnectionClosed as exc:
                logger.warning("ComfyUI websocket dropped (%s); polling /history", exc)
            if not finished:
                state.via_websocket = False
        if not finished:
            entry = await self._follow_poll(state)
        else:
            entry = await self._history_after_finish(state.prompt_id, deadline)
        state.finished = state.finished or time.monotonic()
        return self._result(state, entry)

    async def _emit(self, on_progress: ProgressCallback | None, event: ProgressEvent) -> None:
        if on_progress is None:
            return
        try:
            res = on_progress(event)
            if inspect.isawaitable(res):
                await res
        except Exception:  # a broken progress sink must not fail the job
            logger.exception("on_progress callback failed for %s", event.type)

    async def _follow_ws(
        self, ws: _Subscription, state: _RunState, on_progress: ProgressCallback | None
    ) -> bool:
        """Read messages until our prompt finishes; False if the socket closed first."""
        pid = state.prompt_id
        async for raw in ws:
            if isinstance(raw, bytes):
                continue  # binary frames are latent previews
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(msg, dict):
                continue
            mtype = msg.get("type")
            data = msg.get("data")
            if not isinstance(mtype, str) or not isinstance(data, dict):
                continue
            msg_pid = data.get("prompt_id")
            if msg_pid is not None and msg_pid != pid:
                continue  # someone else's prompt
            if msg_pid is None and not (mtype == "progress" and state.started is not None):
                continue  # status broadcasts, reconnect notices, unrelated progress
            now = time.monotonic()
            if mtype == "execution_start":
                state.started = now
            elif mtype == "execution_cached":
                nodes = data.get("nodes")
                state.cached_nodes = [str(n) for n in nodes] if isinstance(nodes, list) else []
            elif mtype == "execution_error":
                raise ComfyExecutionError(
                    _opt_str(data.get("node_id")),
                    _opt_str(data.get("node_type")),
                    str(data.get("exception_type") or "Exception"),
                    str(data.get("exception_message") or ""),
                    prompt_id=pid,
                    traceback=[str(t) for t in data.get("traceback") or []],
                )
            elif mtype == "execution_interrupted":
                raise ComfyInterrupted(pid, node_id=_opt_str(data.get("node_id")))
            if mtype == "progress_state":
                await self._emit(on_progress, _progress_state_event(pid, data, now, state))
            elif mtype in PROGRESS_TYPES:
                await self._emit(on_progress, _event(pid, mtype, data, now))
            if mtype == "execution_success":
                state.finished = now
                # Current ComfyUI writes /history just before the closing `executing
                # {node: null}`: waiting for that message saves polling an empty history.
                with contextlib.suppress(TimeoutError, ConnectionClosed):
                    await asyncio.wait_for(self._until_idle(ws, pid), SUCCESS_TO_IDLE_S)
                return True
            if mtype == "executing" and data.get("node") is None:
                state.finished = now
                return True
        return False

    @staticmethod
    async def _until_idle(ws: _Subscription, prompt_id: str) -> None:
        """Read until ``executing {node: null}`` for `prompt_id` (the prompt's last message)."""
        async for raw in ws:
            if isinstance(raw, bytes):
                continue
            with contextlib.suppress(ValueError):
                msg = json.loads(raw)
                data = msg.get("data") if isinstance(msg, dict) else None
                if (
                    isinstance(data, dict)
                    and msg.get("type") == "executing"
                    and data.get("node") is None
                    and data.get("prompt_id") == prompt_id
                ):
                    return

    async def _follow_poll(self, state: _RunState) -> dict[str, Any]:
        """Poll history/queue until the prompt is in history; ComfyUnavailable if it vanished."""
        pid = state.prompt_id
        while True:
            entry = await self.history(pid)
            if entry is not None:
                return entry
            q = await self.queue()
            if pid in q.running and state.started is None:
                state.started = time.monotonic()
            if pid not in q:
                # Re-read history: the prompt may have finished between the two requests.
                entry = await self.history(pid)
                if entry is not None:
                    return entry
                raise ComfyUnavailable(f"prompt {pid} vanished from ComfyUI (restarted?)")
            await asyncio.sleep(self._poll_interval)

    async def _history_after_finish(self, prompt_id: str, deadline: float) -> dict[str, Any]:
        """History right after completion; current ComfyUI signals success before writing it."""
        give_up = min(deadline, time.monotonic() + 30.0)
        while True:
            entry = await self.history(prompt_id)
            if entry is not None:
                return entry
            if time.monotonic() >= give_up:
                raise ComfyUnavailable(f"prompt {prompt_id} finished but has no history entry")
            await asyncio.sleep(0.05)

    def _result(self, state: _RunState, entry: dict[str, Any]) -> RunResult:
        """Check the history status and build the RunResult."""
        status = entry.get("status")
        status = status if isinstance(status, dict) else {}
        messages = status.get("messages")
        msgs = messages if isinstance(messages, list) else []
        for item in msgs:
            if not (
                isinstance(item, list | tuple) and len(item) == 2 and isinstance(item[1], dict)
            ):
                continue
            kind, data = item
            if kind == "execution_cached" and not state.cached_nodes:
                state.cached_nodes = [str(n) for n in data.get("nodes") or []]
            elif kind == "execution_error":
                raise ComfyExecutionError(
                    _opt_str(data.get("node_id")),
                    _opt_str(data.get("node_type")),
                    str(data.get("exception_type") or "Exception"),
                    str(data.get("exception_message") or ""),
                    prompt_id=state.prompt_id,
                    traceback=[str(t) for t in data.get("traceback") or []],
                )
            elif kind == "execution_interrupted":
                raise ComfyInterrupted(state.prompt_id, node_id=_opt_str(data.get("node_id")))
        if status.get("status_str") == "error":
            raise ComfyExecutionError(
                None, None, "Unknown", "ComfyUI reported an error", prompt_id=state.prompt_id
            )
        finished = state.finished or time.monotonic()
        started = state.started if state.started is not None else state.queued_at
        outputs = entry.get("outputs")
        return RunResult(
            prompt_id=state.prompt_id,
            outputs=outputs_from_history(entry),
            execution_seconds=max(finished - started, 0.0),
            cached_nodes=list(state.cached_nodes),
            queued_at=state.queued_at,
            started=started,
            finished=finished,
            node_outputs=dict(outputs) if isinstance(outputs, dict) else {},
            status=status,
            via_websocket=state.via_websocket,
        )


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _opt_int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _event(prompt_id: str, mtype: str, data: Mapping[str, Any], at: float) -> ProgressEvent:
    node = data.get("node")
    return ProgressEvent(
        prompt_id=prompt_id,
        type=mtype,
        node=_opt_str(node),
        value=_opt_int(data.get("value")) if mtype == "progress" else None,
        max=_opt_int(data.get("max")) if mtype == "progress" else None,
        data=dict(data),
        at=at,
    )


def _progress_state_event(
    prompt_id: str, data: Mapping[str, Any], at: float, state: _RunState
) -> ProgressEvent:
    """Flatten ``progress_state``: every node's progress and the prompt's share done.

    The share counts each node of the graph alike (cached nodes as done), so a graph with two
    samplers moves forward through both instead of running 0 to 1 twice.
    """
    raw = data.get("nodes")
    nodes: dict[str, NodeProgress] = {}
    for node_id, item in raw.items() if isinstance(raw, Mapping) else ():
        if not isinstance(item, Mapping):
            continue
        try:
            value, maximum = float(item.get("value") or 0), float(item.get("max") or 0)
        except (TypeError, ValueError):
            continue
        nodes[str(node_id)] = NodeProgress(value, maximum, str(item.get("state") or "running"))
    running = [(k, n) for k, n in nodes.items() if n.state == "running"]
    node, prog = running[-1] if running else (None, None)
    total = max(state.node_count, len(set(nodes) | set(state.cached_nodes)), 1)
    done = sum(n.fraction for k, n in nodes.items() if k not in state.cached_nodes)
    done += len(state.cached_nodes)
    return ProgressEvent(
        prompt_id=prompt_id,
        type="progress_state",
        node=node,
        value=int(prog.value) if prog else None,
        max=int(prog.max) if prog else None,
        data=dict(data),
        at=at,
        nodes=nodes,
        overall=min(done / total, 1.0),
    )


_CLOSED = object()  # the socket closed: a subscription ends with ConnectionClosed


class _Subscription:
    """The messages of one prompt, from the shared socket, as an async iterator of raw frames."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()

    def __aiter__(self) -> _Subscription:
        return self

    async def __anext__(self) -> str:
        item = await self.queue.get()
        if item is _CLOSED:
            self.queue.put_nowait(_CLOSED)  # every later read sees the close too
            raise ConnectionClosed(None, None)
        return str(item)


class _SharedSocket:
    """One websocket from this client to its ComfyUI, kept open across prompts.

    A reader task routes each text frame to the subscription of the prompt it names. Frames
    that name no prompt (progress on the 2024 server) go to the prompt ComfyUI is executing,
    which it announced with `execution_start` (its queue runs one prompt at a time). When
    the socket drops, every open subscription ends (its run falls back to polling /history)
    and the next run reconnects.
    """

    def __init__(self, client: ComfyClient) -> None:
        self._client = client
        self.client_id = uuid.uuid4().hex
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._subs: dict[str, _Subscription] = {}
        self._executing: str | None = None
        self._unrouted: dict[str, list[str]] = {}
        self._lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.connects = 0

    async def subscribe(self, prompt_id: str) -> _Subscription | None:
        """A subscription to `prompt_id`'s messages; None if no socket can be had (poll)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop (tests run several): start afresh
            self._loop, self._lock, self._ws, self._reader = loop, asyncio.Lock(), None, None
        async with self._lock:
            if self._ws is None or self._reader is None or self._reader.done():
                self._ws = await self._client._open_ws(self.client_id)
                if self._ws is None:
                    return None
                self.connects += 1
                self._reader = asyncio.create_task(self._read(self._ws), name="comfy-ws")
        sub = _Subscription()
        self._subs[prompt_id] = sub
        return sub

    @property
    def open(self) -> bool:
        """Connected, with its reader running, on this event loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        return (
            self._loop is loop
            and self._ws is not None
            and self._reader is not None
            and not self._reader.done()
        )

    def rekey(self, old: str, new: str) -> None:
        """Route `new`'s messages to `old`'s subscription, with any that came before."""
        sub = self._subs.pop(old, None)
        if sub is None:
            return
        self._subs[new] = sub
        for raw in self._unrouted.pop(new, []):
            sub.queue.put_nowait(raw)

    def unsubscribe(self, prompt_id: str) -> None:
        """Stop routing `prompt_id`'s messages."""
        self._subs.pop(prompt_id, None)
        self._unrouted.pop(prompt_id, None)
        if self._executing == prompt_id:
            self._executing = None

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                if isinstance(raw, bytes):
                    continue  # latent previews
                self._route(raw)
        except ConnectionClosed as exc:
            logger.warning("ComfyUI websocket closed (%s); the next prompt reconnects", exc)
        finally:
            if self._ws is ws:
                self._ws = None
            for sub in self._subs.values():
                sub.queue.put_nowait(_CLOSED)

    def _route(self, raw: str) -> None:
        try:
            msg = json.loads(raw)
        except ValueError:
            return
        data = msg.get("data") if isinstance(msg, dict) else None
        if not isinstance(data, dict):
            return
        pid = data.get("prompt_id")
        if msg.get("type") == "execution_start" and isinstance(pid, str):
            self._executing = pid
        target = pid if isinstance(pid, str) else self._executing
        sub = self._subs.get(target) if target is not None else None
        if sub is not None:
            sub.queue.put_nowait(raw)
        elif target is not None and self._subs:
            # Perhaps a prompt whose id the server chose and whose answer is on its way
            # (`rekey`); kept briefly, bounded.
            kept = self._unrouted.setdefault(target, [])
            if len(kept) < 512:
                kept.append(raw)
            while len(self._unrouted) > 16:
                self._unrouted.pop(next(iter(self._unrouted)))

    async def close(self) -> None:
        """Close the socket and end its reader."""
        if self._loop is not asyncio.get_running_loop():
            self._ws = self._reader = None  # it belonged to a loop that is gone
            return
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
            self._reader = None
