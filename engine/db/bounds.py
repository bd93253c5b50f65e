"""What both databases can hold, decided once: identifiers, filter text and times.

PostgreSQL refuses a NUL in any text value and SQLite stores it silently; neither can encode a
lone UTF-16 surrogate; a datetime near year 1 or 9999 overflows when its offset is applied.
The edge (path and query parameters, cursors) checks values against these rules, so the same
input gets the same 4xx on either database and nothing out of range reaches a query.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

# Every id Stencil makes is `prefix_` + 32 hex digits (`engine.db.database.new_id`), in a
# 40-character column; anything else cannot name a row.
ID_PATTERN = r"^[A-Za-z0-9_-]{1,40}$"
# Filter text: no control characters (NUL among them).
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]*$"
_ID = re.compile(ID_PATTERN)
_UNSTORABLE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")

# Times the API accepts (usage ranges, cursors): wide enough for any real query, and far enough
# from datetime's own ends that applying any UTC offset stays in range.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)


def is_id(value: str) -> bool:
    """True for a string that can be a Stencil id."""
    return _ID.match(value) is not None


def storable(value: str) -> bool:
    """True for text either database stores as given: no control characters, no surrogates."""
    return _UNSTORABLE.search(value) is None


def bounded_utc(value: datetime) -> datetime:
    """The time in UTC (naive means UTC), within [EARLIEST, LATEST); ValueError otherwise."""
    try:
        utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (OverflowError, ValueError):
        utc = None
    if utc is None or not EARLIEST <= utc < LATEST:
        raise ValueError(
            f"the time must be from {EARLIEST.date().isoformat()} to before "
            f"{LATEST.date().isoformat()} (UTC)"
        )
    return utc
