"""A Server-Sent Events parser (the WHATWG event stream format), for sync and async lines."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field


@dataclass
class ServerSentEvent:
    """One dispatched event."""

    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None


@dataclass
class Decoder:
    data: list[str] = field(default_factory=list)
    event: str = ""
    id: str | None = None
    retry: int | None = None

    def feed(self, line: str) -> ServerSentEvent | None:
        """One line; returns an event when a blank line dispatches one."""
        line = line.rstrip("\r\n")
        if line == "":
            if not self.data and not self.event:
                return None
            out = ServerSentEvent(
                event=self.event or "message", data="\n".join(self.data), id=self.id
            )
            out.retry = self.retry
            self.data, self.event = [], ""
            return out
        if line.startswith(":"):
            return None  # a comment: keep-alive pings
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self.data.append(value)
        elif name == "event":
            self.event = value
        elif name == "id" and "\0" not in value:
            self.id = value
        elif name == "retry" and value.isdigit():
            self.retry = int(value)
        return None


def iter_events(lines: Iterable[str]) -> Iterator[ServerSentEvent]:
    """The events of a stream of lines."""
    decoder = Decoder()
    for line in lines:
        event = decoder.feed(line)
        if event is not None:
            yield event


async def aiter_events(lines: AsyncIterator[str]) -> AsyncIterator[ServerSentEvent]:
    """The events of an async stream of lines."""
    decoder = Decoder()
    async for line in lines:
        event = decoder.feed(line)
        if event is not None:
            yield event
