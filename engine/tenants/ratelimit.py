"""Per-API-key rate limits with the `limits` library: counted in this process's memory by
default, in Redis when `STENCIL_REDIS_URL` is set (one budget shared by every API process).

Never a database write per request. Fixed windows: cheap, exact across processes on Redis, and
they give a reset time for `RateLimit-Reset` and `Retry-After`. With several API processes and
no Redis, each process counts its own share (documented in docs/deploy.md).
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage


@functools.lru_cache(maxsize=256)
def _parse(limit: str) -> RateLimitItem:
    """A limit string, parsed once (a regex match per request otherwise)."""
    item: RateLimitItem = parse(limit)
    return item


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
    """Counts hits per API key and kind (`write` for POST/DELETE, `read` otherwise).

    `limits`' asyncio storages: memory needs no thread and no timer thread, Redis is awaited
    on the event loop (redis-py's asyncio client), so a hit is never a thread hop.
    """

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    @classmethod
    def build(cls, redis_url: str = "") -> RateLimiter:
        """Redis when a URL is given, else this process's memory."""
        if redis_url:
            return cls(
                RedisStorage(
                    "async+" + redis_url, implementation="redispy", key_prefix="stencil-rl"
                )
            )
        return cls(MemoryStorage())

    async def check(self, key_id: str, kind: str, limit: str) -> Verdict:
        """Count one request against `limit` (e.g. `60/minute`).

        What `limits`' `FixedWindowRateLimiter.hit` then `get_window_stats` do, in two storage
        calls instead of three, with the window's key built once: the count after this hit
        tells both whether it is allowed and what remains (on Redis a round trip less)."""
        item = _parse(limit)
        key = item.key_for(kind, key_id)
        count = await self.storage.incr(key, item.get_expiry(), amount=1)
        reset_at = await self.storage.get_expiry(key)
        return Verdict(
            allowed=count <= item.amount,
            limit=item.amount,
            remaining=max(0, item.amount - count),
            reset_s=max(0, math.ceil(reset_at - time.time())),
            window_s=item.get_expiry(),
        )
