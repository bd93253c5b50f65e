"""Hostile spellings mixed into schemathesis' generated cases, so the fuzzer meets, on its own,
the inputs that valid-by-schema generation reaches too rarely to find within a CI budget.

A `flatmap_case` hook: each generated case is sent as generated or with one part replaced by
a hostile spelling (hypothesis draws which, and how):
- a NUL or other control character inside a path or query string (ids, filters, cursors);
- a cursor that decodes to such an id, or to a time at the end of the calendar;
- a date-time query value at year 1 or 9999 with an offset;
- a raw JSON body nesting hundreds of levels deep (whole body or one field), holding an integer
  literal thousands of digits long, NaN or Infinity, or a lone surrogate escape.
"""

from __future__ import annotations

import base64
from typing import Any

from hypothesis import strategies as st

CONTROL = st.sampled_from(["\x00", "\x01", "\x1f", "\x7f", "\n"])
EDGE_TIMES = st.sampled_from(
    [
        "0001-01-01T00:00:00+05:00",
        "0001-01-01T00:00:00-00:01",
        "9999-12-31T23:59:59-05:00",
        "9999-12-31T23:59:59.999999-23:59",
        "0001-01-01",
        "9999-12-31",
    ]
)


@st.composite
def _poisoned(draw: st.DrawFn, text: str) -> str:
    at = draw(st.integers(0, len(text)))
    return text[:at] + draw(CONTROL) + text[at:]


def _cursor(ts: str, row_id: str) -> str:
    return base64.urlsafe_b64encode(f"{ts}|{row_id}".encode()).decode().rstrip("=")


@st.composite
def _deep(draw: st.DrawFn) -> str:
    depth = draw(st.integers(33, 900))
    kinds = draw(st.lists(st.sampled_from("[{"), min_size=depth, max_size=depth))
    opens = "".join("[" if k == "[" else '{"k":' for k in kinds)
    return opens + "1" + "".join("]" if k == "[" else "}" for k in reversed(kinds))


HOSTILE_VALUES = st.one_of(
    _deep(),
    st.integers(4301, 6000).map(lambda n: "9" * n),  # past Python's own int() digit limit
    st.integers(101, 4300).map(lambda n: "-" + "7" * n),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", '"\\ud800"', '"x\\udfff"']),
)


@st.composite
def _raw_body(draw: st.DrawFn, body: Any) -> bytes:
    value = draw(HOSTILE_VALUES)
    if isinstance(body, dict) and body and draw(st.booleans()):
        field = draw(st.sampled_from(sorted(body)))
        import json

        others = {k: v for k, v in body.items() if k != field}
        head = json.dumps(others)[:-1] if others else "{"
        sep = ", " if others else ""
        return f'{head}{sep}"{field}": {value}}}'.encode()
    return value.encode()


def _is_json(case: Any) -> bool:
    media = (case.media_type or "").split(";")[0].strip()
    return media in ("application/json", "") or media.endswith("+json")


def hostile_case(context: Any, case: Any) -> Any:
    """The flatmap_case hook: the case as generated, or with one hostile part."""
    options = [st.just(case)]

    path = {k: v for k, v in (case.path_parameters or {}).items() if isinstance(v, str)}
    if path:

        @st.composite
        def poison_path(draw: st.DrawFn) -> Any:
            name = draw(st.sampled_from(sorted(path)))
            case.path_parameters = {**case.path_parameters, name: draw(_poisoned(path[name]))}
            return case

        options.append(poison_path())

    names = [p.name for p in case.operation.query]
    if names:

        @st.composite
        def poison_query(draw: st.DrawFn) -> Any:
            name = draw(st.sampled_from(sorted(names)))
            query = dict(case.query or {})
            if name in ("start", "end"):
                query[name] = draw(EDGE_TIMES)
            elif name == "cursor":
                query[name] = _cursor(
                    draw(EDGE_TIMES | st.just("2026-01-01T00:00:00+00:00")),
                    draw(_poisoned("job_0123456789abcdef")),
                )
            else:
                current = query.get(name)
                query[name] = draw(_poisoned(current if isinstance(current, str) else "x"))
            case.query = query
            return case

        options.append(poison_query())

    if case.body is not None and _is_json(case) and not isinstance(case.body, bytes):

        @st.composite
        def poison_body(draw: st.DrawFn) -> Any:
            case.body = draw(_raw_body(case.body))
            return case

        options.append(poison_body())
    return st.one_of(*options)
