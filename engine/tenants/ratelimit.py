"""Per-API-key rate limits with the `limits` library: counted in this process's memory by
default, in Redis when `STENCIL_REDIS_URL` is set (one budget shared by every API process).

Never a database write per request. Fixed windows: cheap, exact across processes on Redis, and
they give a reset time for `RateLimit-Reset` and `Retry-After`. With several API processes and
no Redis, each process counts its own share (documented in docs/deploy.md).
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter


@dataclass(frozen=True)
class Verdict:
    """One hit's outcome, with what the RateLimit headers report."""

    allowed: bool
    limit: int
    remaining: int
    reset_s: int  # seconds until the window resets
    window_s: int

    def headers(self) -> dict[str, str]:
        """IETF draft-ietf-httpapi-ratelimit-headers-07 fields, plus Retry-After when refused."""
        h = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
            "RateLimit-Policy": f"{self.limit};w={self.window_s}",
        }
        if not self.allowed:
            h["Retry-After"] = str(max(1, self.reset_s))
        return h


class RateLimiter:
    """Counts hits per API key and kind (`write` for POST/DELETE, `read` otherwise)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.strategy = FixedWindowRateLimiter(storage)
        # Memory is counted on the event loop (microseconds); Redis is a network call.
        self.in_memory = isinstance(storage, MemoryStorage)

    @classmethod
    def build(cls, redis_url: str = "") -> RateLimiter:
        """Redis when a URL is given, else this process's memory."""
        if redis_url:
            storage = storage_from_string(redis_url, key_prefix="stencil-rl")
            assert isinstance(storage, Storage)  # a sync scheme gives a sync storage
            return cls(storage)
        return cls(MemoryStorage())

    async def check(self, key_id: str, kind: str, limit: str) -> Verdict:
        """`hit` from async code: inline for memory, on a worker thread for Redis."""
        if self.in_memory:
            return self.hit(key_id, kind, limit)
        return await asyncio.to_thread(self.hit, key_id, kind, limit)

    def hit(self, key_id: str, kind: str, limit: str) -> Verdict:
        """Count one request against `limit` (e.g. `60/minute`)."""
        item: RateLimitItem = parse(limit)
        allowed = self.strategy.hit(item, kind, key_id)
        reset_at, remaining = self.strategy.get_window_stats(item, kind, key_id)
        return Verdict(
            allowed=allowed,
            limit=item.amount,
            remaining=max(0, remaining),
            reset_s=max(0, math.ceil(reset_at - time.time())),
            window_s=item.get_expiry(),
        )
