"""Helpers shared by the tests that follow jobs through a live app."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from fastapi.testclient import TestClient

TERMINAL = ("succeeded", "failed", "cancelled")


def finished(job: dict[str, Any]) -> bool:
    """True once a job is in a terminal state."""
    return job["status"] in TERMINAL


def wait_for(
    client: TestClient,
    headers: dict[str, str],
    job_id: str,
    pred: Callable[[dict[str, Any]], bool] = finished,
    timeout: float = 120,
) -> dict[str, Any]:
    """Poll GET /v1/jobs/{id} until `pred` holds; fail with the last state on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
        if pred(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting; last state {job}")
        time.sleep(0.1)


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve an ASGI app over real HTTP on 127.0.0.1 (a free port) in a thread; its base URL.

    For clients that need a socket: the SDKs, and node.
    """
    import socket
    import threading

    import uvicorn

    # IPPROTO_TCP named, as uvicorn's own listener gets it from getaddrinfo: asyncio then sets
    # TCP_NODELAY on each accepted connection (without it Nagle's algorithm holds a response's
    # second write for the client's delayed ACK, about 40 ms a request).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AssertionError("the server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
