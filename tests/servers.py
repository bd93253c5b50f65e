"""A real uvicorn server on 127.0.0.1 in a thread, for what TestClient cannot show: streams
held open side by side, and what a keep-alive connection sees after an error."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


@contextmanager
def served(app: Any) -> Iterator[str]:
    """Serve `app` (lifespan included) on a free loopback port; yields the base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def raw_exchange(base: str, requests: list[bytes], timeout: float = 10.0) -> list[bytes]:
    """Send HTTP/1.1 requests one after another on ONE connection; each full response.

    Responses are read by Content-Length, so a server that closes the connection after an
    answer shows up as an empty response for the next request.
    """
    host, port = base.removeprefix("http://").split(":")
    out: list[bytes] = []
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        buf = b""
        for req in requests:
            try:
                s.sendall(req)
            except OSError:
                out.append(b"")
                continue
            while b"\r\n\r\n" not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
            if b"\r\n\r\n" not in buf:
                out.append(b"")
                buf = b""
                continue
            head, _, rest = buf.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            while len(rest) < length:
                chunk = s.recv(65536)
                if not chunk:
                    break
                rest += chunk
            out.append(head + b"\r\n\r\n" + rest[:length])
            buf = rest[length:]
    return out
