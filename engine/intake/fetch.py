"""The one outbound HTTP door: URL inputs and webhook deliveries, SSRF-guarded.

Built on `ssrfguard`, which resolves a host once, validates every answer against an IANA-derived
table (loopback, private, link-local, metadata, CGNAT, multicast, reserved, unspecified, and the
IPv6 wrappers of all of them) and connects to the validated address itself, so a second DNS
answer cannot swap it; TLS still verifies the certificate against the real host name. This
module adds what a product needs on top: Stencil's own host-name rules, a per-port test
allowlist, manual redirect following (each hop re-checked, bodies of redirects never read),
timeouts, a streamed byte cap, and the content-type and Pillow checks of an image.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from ssrfguard import BlockedAddressError, Policy, SSRFGuardError, resolve
from ssrfguard.httpx import AsyncClient

from engine.errors import InvalidMedia
from engine.intake.media import CONTENT_TYPES, CheckedImage, check_image

Resolver = Callable[..., Iterable[tuple[int, int, int, str, tuple[Any, ...]]]]

# Names that never point at the public internet (RFC 6761, RFC 8375, common cloud conventions);
# refusing them before resolution also keeps an internal resolver from learning they were tried.
_SPECIAL_SUFFIXES = (
    "localhost",
    "local",
    "localdomain",
    "internal",
    "intranet",
    "lan",
    "home.arpa",
    "in-addr.arpa",
    "ip6.arpa",
)
# A last label that is a number (decimal, octal or hex) means an encoded IPv4 address, since no
# top-level domain is numeric: `0x7f.1`, `2130706433`, `017700000001`.
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$", re.I)
USER_AGENT = "Stencil/1 (+https://stencil.dev)"


class UrlRefused(Exception):
    """A URL the guard will not reach; the message says why."""


@dataclass(frozen=True)
class AllowEntry:
    """One network admitted on one port (test and internal-service allowlist)."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    port: int

    @classmethod
    def parse(cls, text: str) -> AllowEntry:
        """`127.0.0.1:8123`, `[::1]:8123` or `10.0.0.0/8:443`."""
        host, sep, port = text.strip().rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"{text!r}: expected ADDRESS:PORT")
        return cls(ipaddress.ip_network(host.strip("[]"), strict=True), int(port))


def parse_allow(text: str) -> tuple[AllowEntry, ...]:
    """A comma-separated allowlist."""
    return tuple(AllowEntry.parse(x) for x in text.split(",") if x.strip())


def parse_ports(text: str) -> frozenset[int]:
    """A comma-separated port list."""
    ports = frozenset(int(x) for x in text.split(",") if x.strip())
    if not ports or any(not 0 < p < 65536 for p in ports):
        raise ValueError(f"{text!r}: expected ports between 1 and 65535")
    return ports


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def canonical_host(url: str, host: str) -> str:
    """The URL's host as the ASCII name both the resolver and the HTTP client will use.

    The resolver (`getaddrinfo`, and ssrfguard's checks, through Python's IDNA 2003 codec with
    its NFKC mapping) and the HTTP client (httpx, through the strict IDNA 2008 `idna` package)
    read non-ASCII hosts differently: full-width or other non-ASCII digits (`１２７.０.０.１`,
    `example１.com`) resolve, then fail to connect; `straße.de` resolves as `strasse.de` but
    connects as `xn--strae-oqa.de`. A host is accepted only when both read it as the same
    ASCII name, which is what every later check and the connection use; anything else is
    refused here, at submit and at every delivery, instead of failing later.
    """
    if not host:
        raise UrlRefused("the URL has no host")
    try:
        client = httpx.URL(url).raw_host.decode("ascii").lower()
    except (httpx.InvalidURL, ValueError) as e:
        raise UrlRefused(f"host {host!r} is not a valid host name ({e})") from None
    try:
        resolver = host.lower() if host.isascii() else host.encode("idna").decode("ascii").lower()
    except ValueError:
        raise UrlRefused(f"host {host!r} is not a valid host name") from None
    if client != resolver:
        raise UrlRefused(
            f"host {host!r} has no single ASCII form (the resolver reads {resolver!r}, the "
            f"HTTP client {client!r}); write it in ASCII, IDN labels as punycode (xn--)"
        )
    return client


def _host_rules(host: str) -> None:
    """Stencil's rules on a host name, on top of ssrfguard's (which refuses literals and
    encodings it can decode)."""
    h = host.lower().rstrip(".")
    if not h:
        raise UrlRefused("the URL has no host")
    try:
        ipaddress.ip_address(h.strip("[]"))
        return  # a literal address: the address table decides
    except ValueError:
        pass
    labels = h.split(".")
    if _NUMERIC_LABEL.match(labels[-1]):
        raise UrlRefused(f"host {host!r} is an encoded IP address; write addresses plainly")
    if len(labels) < 2:
        raise UrlRefused(f"host {host!r} is a single-label name; use a fully qualified name")
    for suffix in _SPECIAL_SUFFIXES:
        if h == suffix or h.endswith("." + suffix):
            raise UrlRefused(f"host {host!r} is a local-only name (.{suffix})")


class UrlGuard:
    """Decides which URLs Stencil may reach, and reaches them safely."""

    def __init__(
        self,
        *,
        allow_http: bool = False,
        ports: frozenset[int] = frozenset({443}),
        allow: Iterable[AllowEntry] = (),
        resolver: Resolver | None = None,
        max_redirects: int = 3,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 10.0,
        total_timeout_s: float = 30.0,
    ) -> None:
        self.allow = tuple(allow)
        self.ports = frozenset(ports)
        self.allow_http = allow_http
        self.max_redirects = max_redirects
        self.timeout = httpx.Timeout(
            connect=connect_timeout_s, read=read_timeout_s, write=read_timeout_s, pool=5.0
        )
        self.total_timeout_s = total_timeout_s
        self._base_resolver: Resolver = resolver or socket.getaddrinfo
        self.policy = Policy(
            allowed_schemes=frozenset({"https", "http"} if allow_http else {"https"}),
            allowed_networks=tuple(e.network for e in self.allow),
            allowed_ports=self.ports | {e.port for e in self.allow},
            allow_userinfo=False,
            on_partial_block="reject",
            # Counted by us (manual following); ssrfguard's own cap never sees a chain.
            max_redirects=max_redirects,
        )

    # ---- deciding --------------------------------------------------------------------------

    def _resolver(self, host: str, port: int, *args: Any, **kw: Any) -> list[Any]:
        """The real (or injected) resolver, narrowed by the per-port allowlist."""
        answers = list(self._base_resolver(host, port, *args, **kw))
        for answer in answers:
            ip = ipaddress.ip_address(str(answer[4][0]).split("%")[0])
            entries = [e for e in self.allow if ip.version == e.network.version and ip in e.network]
            if entries and all(e.port != port for e in entries):
                ports = ", ".join(str(e.port) for e in entries)
                raise BlockedAddressError(
                    str(ip), f"{ip} is allowlisted on port {ports} only, not {port}"
                )
        return answers

    def check_syntax(self, url: str) -> None:
        """Everything decidable without I/O: scheme, credentials, port, host shape, literals."""
        if len(url) > 2048:
            raise UrlRefused("the URL is longer than 2048 characters")
        if _CONTROL.search(url):
            raise UrlRefused("the URL contains a control character")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as e:
            raise UrlRefused(f"the URL does not parse: {e}") from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or (scheme == "http" and not self.allow_http):
            allowed = "http or https" if self.allow_http else "https"
            raise UrlRefused(f"scheme {scheme or 'none'!r} is not accepted; use {allowed}")
        if "@" in parts.netloc:
            raise UrlRefused("credentials in the URL are not accepted")
        host = canonical_host(url, parts.hostname or "")
        _host_rules(host)
        port = port or (443 if scheme == "https" else 80)
        if port not in self.ports:
            host = host.strip("[]")
            try:
                ip = ipaddress.ip_address(host)
            except ValueError:
                ip = None
            # A non-standard port is only reachable on the exact allowlisted address.
            if ip is None or not any(ip in e.network and port == e.port for e in self.allow):
                ports = ", ".join(str(p) for p in sorted(self.ports))
                raise UrlRefused(f"port {port} is not accepted; use {ports}")
        try:
            self.policy.check_url(url)
        except SSRFGuardError as e:
            raise UrlRefused(_reason(e)) from None

    async def check(self, url: str) -> None:
        """`check_syntax`, then resolve the host and validate every address (never connects)."""
        self.check_syntax(url)
        target = self.policy.check_url(url)
        try:
            await asyncio.wait_for(
                asyncio.to_thread(resolve, target, policy=self.policy, resolver=self._resolver),
                timeout=self.timeout.connect,
            )
        except SSRFGuardError as e:
            raise UrlRefused(_reason(e)) from None
        except (OSError, TimeoutError):
            raise UrlRefused(f"host {target.host!r} does not resolve") from None

    def client(self, **kw: Any) -> AsyncClient:
        """An httpx client that connects only to validated addresses; redirects not followed."""

        async def hop(request: httpx.Request) -> None:
            # Every request, each redirect hop included, passes Stencil's rules too.
            self.check_syntax(str(request.url))

        return AsyncClient(
            policy=self.policy,
            resolver=self._resolver,
            follow_redirects=False,
            timeout=self.timeout,
            trust_env=False,
            event_hooks={"request": [hop]},
            headers={"User-Agent": USER_AGENT},
            **kw,
        )

    # ---- fetching --------------------------------------------------------------------------

    async def fetch_image(
        self, field: str, url: str, *, formats: list[str], max_bytes: int, max_pixels: int
    ) -> CheckedImage:
        """Fetch an image URL: guarded, bounded, type-checked and decoded; 422 on any refusal."""
        try:
            self.check_syntax(url)
        except UrlRefused as e:
            raise InvalidMedia(field, f"URL refused: {e}") from None
        accept = {CONTENT_TYPES[f] for f in formats if f in CONTENT_TYPES}
        try:
            async with asyncio.timeout(self.total_timeout_s):
                data = await self._get(url, accept, max_bytes)
        except UrlRefused as e:
            raise InvalidMedia(field, f"URL refused: {e}") from None
        except SSRFGuardError as e:
            raise InvalidMedia(field, f"URL refused: {_reason(e)}") from None
        except TimeoutError:
            raise InvalidMedia(
                field, f"fetching the URL took longer than {self.total_timeout_s:g} s"
            ) from None
        except httpx.TimeoutException:
            raise InvalidMedia(field, "fetching the URL timed out") from None
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, ValueError) as e:
            # InvalidURL and ValueError: a redirect's Location the client cannot use.
            raise InvalidMedia(field, f"fetching the URL failed: {type(e).__name__}") from None
        return check_image(field, data, formats=formats, max_bytes=max_bytes, max_pixels=max_pixels)

    async def _get(self, url: str, accept: set[str], max_bytes: int) -> bytes:
        async with self.client() as http:
            request = http.build_request(
                "GET",
                url,
                headers={"Accept": ", ".join(sorted(accept)), "Accept-Encoding": "identity"},
            )
            for _ in range(self.max_redirects + 1):
                response = await http.send(request, stream=True)
                try:
                    if response.is_redirect:
                        nxt = response.next_request
                        if nxt is None:
                            raise UrlRefused("a redirect without a usable Location")
                        request = nxt
                        continue  # the redirect's body is never read
                    return await _read_image(response, accept, max_bytes)
                finally:
                    await response.aclose()
            raise UrlRefused(f"more than {self.max_redirects} redirects")
        raise AssertionError("unreachable")  # pragma: no cover


async def _read_image(response: httpx.Response, accept: set[str], max_bytes: int) -> bytes:
    if response.status_code != 200:
        raise UrlRefused(f"the server answered {response.status_code}")
    ctype = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in accept:
        expected = ", ".join(sorted(accept))
        raise UrlRefused(f"content type {ctype or 'none'!r} is not accepted; expected {expected}")
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise UrlRefused(f"the image is {declared} bytes; the limit is {max_bytes}")
    buf = bytearray()
    async for chunk in response.aiter_raw():
        buf += chunk
        if len(buf) > max_bytes:
            raise UrlRefused(f"the image is over the limit of {max_bytes} bytes")
    return bytes(buf)


def _reason(e: SSRFGuardError) -> str:
    reason = getattr(e, "reason", None)
    if isinstance(e, BlockedAddressError):
        return f"{e.address} is not a public address ({reason})"
    return str(reason or e)
