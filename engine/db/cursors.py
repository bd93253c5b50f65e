"""Opaque page cursors over newest-first lists (jobs, account events)."""

from __future__ import annotations

import base64
from datetime import datetime

from engine.db.bounds import bounded_utc, is_id
from engine.db.tables import (
    Job,
    TenantEvent,
)
from engine.errors import BadRequest


def encode_cursor(row: Job | TenantEvent) -> str:
    """An opaque cursor after this row (a job, an account event) in newest-first order."""
    raw = f"{row.created_at.isoformat()}|{row.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (created_at, id) an `encode_cursor` cursor names; 400 naming `cursor` if bad."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ts, row_id = raw.split("|", 1)
        # What a cursor decodes to goes into a query: held to the edge's rules, as a path id is.
        if not is_id(row_id):
            raise ValueError("not an id")
        return bounded_utc(datetime.fromisoformat(ts)), row_id
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("The cursor is not valid.", extra={"field": "cursor"}) from None
