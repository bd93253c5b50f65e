"""Path and query parameters, declared once with the rules of `engine.bounds`.

Every route takes its identifiers, filters, cursors and times from these aliases, so a value
either database cannot hold (a NUL, an id longer than its column, a time past year 9999 once
its offset is applied) is a 422 naming the parameter, on SQLite and PostgreSQL alike, before
any query runs.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from fastapi import Path, Query
from pydantic import AfterValidator, BeforeValidator

from engine.catalog.catalog import NAME_RE
from engine.db.bounds import EARLIEST, ID_PATTERN, LATEST, TEXT_PATTERN, bounded_utc, storable


def _storable(v: str | None) -> str | None:
    if v is not None and not storable(v):
        raise ValueError("control characters and lone surrogates are not accepted")
    return v


JobIdPath = Annotated[
    str, Path(pattern=ID_PATTERN, description="The job id (`job_...`), from the submit answer.")
]
EventIdPath = Annotated[
    str, Path(pattern=ID_PATTERN, description="The event id (`evt_...`), from `GET /v1/events`.")
]
TemplateNamePath = Annotated[str, Path(pattern=NAME_RE, description="The template name.")]

# Opaque: what it decodes to is checked by `engine.db.cursors.decode_cursor` (a bad one is a 400).
CursorQuery = Annotated[
    str | None, Query(max_length=200, description="The previous page's `next_cursor`.")
]
TemplateFilter = Annotated[
    str | None, Query(pattern=NAME_RE, description="Only jobs of this template.")
]
TenantFilter = Annotated[
    str | None,
    AfterValidator(_storable),
    Query(
        min_length=1,
        max_length=100,
        pattern=TEXT_PATTERN,
        description="Only this tenant (by name).",
    ),
]


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")


def _iso_only(v: object) -> object:
    # pydantic would read a bare number as a unix time; the API documents ISO 8601 only.
    if isinstance(v, str) and re.fullmatch(r"[\d.eE+-]+", v.strip()) and not _ISO_DATE.match(v):
        raise ValueError("expected an ISO 8601 date or date-time")
    return v


def _bounded(v: datetime | None) -> datetime | None:
    return bounded_utc(v) if v is not None else None


_RANGE = f"from {EARLIEST.date().isoformat()} to before {LATEST.date().isoformat()}"
StartQuery = Annotated[
    datetime | None,
    BeforeValidator(_iso_only),
    AfterValidator(_bounded),
    Query(
        description="Start (inclusive), an ISO date or date-time; UTC when no offset is given, "
        f"{_RANGE}. Default: the first day of this month."
    ),
]
EndQuery = Annotated[
    datetime | None,
    BeforeValidator(_iso_only),
    AfterValidator(_bounded),
    Query(description=f"End (exclusive), an ISO date or date-time, {_RANGE}. Default: now."),
]
