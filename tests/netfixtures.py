"""Real loopback servers for network tests: a recording HTTP listener and a fake resolver."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Handler = Callable[[BaseHTTPRequestHandler], None]


@dataclass
class Listener:
    """An HTTP server on a loopback address that records every TCP connection it accepts."""

    host: str
    port: int
    connections: list[tuple[str, int]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    routes: dict[str, Handler] = field(default_factory=dict)

    @property
    def base(self) -> str:
        """http://host:port"""
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{h}:{self.port}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    listener: Listener

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up early (a refused body, a timeout) is expected here

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        self.listener.connections.append((addr[0], addr[1]))
        return sock, addr


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _handle(self) -> None:
        lst = self.server.listener
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        lst.requests.append(
            {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
        )
        route = lst.routes.get(self.path.split("?")[0])
        if route is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        route(self)

    do_GET = _handle
    do_POST = _handle


@contextmanager
def listener(host: str = "127.0.0.1", port: int = 0) -> Iterator[Listener]:
    """A recording HTTP listener on a loopback address, stopped on exit."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class S(_Server):
        address_family = family

    server = S((host, port), _Handler)
    lst = Listener(host, server.server_address[1])
    server.listener = lst
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield lst
    finally:
        server.shutdown()
        server.server_close()


def respond(
    status: int = 200,
    body: bytes = b"",
    content_type: str = "image/png",
    headers: dict[str, str] | None = None,
    chunked: bool = False,
    delay_s: float = 0.0,
) -> Handler:
    """A route that answers with a fixed response."""

    def handle(h: BaseHTTPRequestHandler) -> None:
        if delay_s:
            time.sleep(delay_s)
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        if chunked:
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            for i in range(0, len(body), 65536):
                part = body[i : i + 65536]
                h.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            h.wfile.write(b"0\r\n\r\n")
        else:
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)

    return handle


def redirect(location: str, status: int = 302) -> Handler:
    """A route that redirects."""
    return respond(status, b"", "text/plain", {"Location": location})


def fake_resolver(table: dict[str, list[str]]) -> Callable[..., list[Any]]:
    """A getaddrinfo stand-in: names from `table`, literals as themselves, nothing else."""

    def resolve(host: str, port: int, *args: Any, **kw: Any) -> list[Any]:
        try:
            ipaddress.ip_address(host.split("%")[0])
            addrs = [host]
        except ValueError:
            if host.rstrip(".").lower() not in table:
                raise socket.gaierror(socket.EAI_NONAME, f"{host}: unknown to the test") from None
            addrs = table[host.rstrip(".").lower()]
        out = []
        for a in addrs:
            if ":" in a:
                out.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (a, port, 0, 0)))
            else:
                out.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)))
        return out

    return resolve
