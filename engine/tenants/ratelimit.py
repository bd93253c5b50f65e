"""Per-API-key rate limits with the `limits` library, shared by every API process.

The counters live in Redis when one is configured, else in the job store's own database (a
`limits` storage backed by one upsert per hit), so two API processes on one database share one
budget with nothing extra to run. Fixed windows: cheap, exact across processes, and they give
a reset time for `RateLimit-Reset` and `Retry-After`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.storage import Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter
from sqlalchemy import case, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from engine.db.database import Database
from engine.db.tables import RateLimitCounter


class SqlStorage(Storage):
    """A `limits` storage on the SQL job store: one row per window counter."""

    STORAGE_SCHEME = None  # built directly from a Database, never from a URL

    def __init__(self, db: Database) -> None:
        super().__init__()
        self.db = db

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return SQLAlchemyError

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Add to the window's counter, starting a new window when the old one expired."""
        now = time.time()
        insert = postgresql.insert if self.db.engine.dialect.name == "postgresql" else sqlite.insert
        new = insert(RateLimitCounter).values(key=key, count=amount, expires_at=now + expiry)
        expired = RateLimitCounter.expires_at <= now
        stmt = new.on_conflict_do_update(
            index_elements=[RateLimitCounter.key],
            set_={
                "count": case((expired, amount), else_=RateLimitCounter.count + amount),
                "expires_at": case((expired, now + expiry), else_=RateLimitCounter.expires_at),
            },
        ).returning(RateLimitCounter.count)
        with self.db.session() as s:
            return int(s.execute(stmt).scalar_one())

    def _row(self, key: str) -> RateLimitCounter | None:
        with self.db.engine.connect() as c:
            row = c.execute(
                select(RateLimitCounter.count, RateLimitCounter.expires_at).where(
                    RateLimitCounter.key == key
                )
            ).first()
        if row is None or row.expires_at <= time.time():
            return None
        return RateLimitCounter(key=key, count=row.count, expires_at=row.expires_at)

    def get(self, key: str) -> int:
        """The window's count (0 when expired)."""
        row = self._row(key)
        return row.count if row else 0

    def get_expiry(self, key: str) -> float:
        """When the window ends, unix seconds."""
        row = self._row(key)
        return row.expires_at if row else time.time()

    def check(self) -> bool:
        """Whether the database answers."""
        try:
            self.db.ping()
            return True
        except SQLAlchemyError:
            return False

    def reset(self) -> int | None:
        """Drop every counter."""
        with self.db.session() as s:
            return int(s.execute(delete(RateLimitCounter)).rowcount)  # type: ignore[attr-defined]

    def clear(self, key: str) -> None:
        """Drop one counter."""
        with self.db.session() as s:
            s.execute(delete(RateLimitCounter).where(RateLimitCounter.key == key))


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

    @classmethod
    def build(cls, db: Database, redis_url: str = "") -> RateLimiter:
        """Redis when a URL is given, else the SQL database."""
        if redis_url:
            storage = storage_from_string(redis_url, key_prefix="stencil-rl")
            assert isinstance(storage, Storage)  # a sync scheme gives a sync storage
            return cls(storage)
        return cls(SqlStorage(db))

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
