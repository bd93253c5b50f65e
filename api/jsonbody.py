"""The one JSON parser for request bodies, with limits the app can live with.

Python's parser accepts what the rest of the app cannot handle: nesting a thousand levels deep
(a RecursionError in whatever walks it next), integer literals thousands of digits long (a
ValueError past 4300 digits, and slow arithmetic before that), `NaN` and `Infinity` (not JSON
at all) and lone UTF-16 surrogates (`"\\ud800"`, text no database and no UTF-8 encoder can
store). Each is refused here, as a 400 that says which limit, before any route sees the body.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from engine.errors import BadRequest

MAX_DEPTH = 32  # arrays and objects inside one another; Stencil's bodies use 1
MAX_NUMBER_CHARS = 100  # one number literal; a 64-bit integer takes 20, a double about 25

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_INNERMOST = re.compile(r"\[\]|\{\}")
# A \u escape of a UTF-16 surrogate, preceded by an even number of backslashes (so the `\u` is
# an escape, not an escaped backslash followed by the letter u).
_SURROGATE_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u[dD][89a-fA-F]")


class _Limit(ValueError):
    pass


def _int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise _Limit(f"a number literal is longer than {MAX_NUMBER_CHARS} characters")
    return int(text)


def _float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise _Limit(f"a number literal is longer than {MAX_NUMBER_CHARS} characters")
    value = float(text)
    if not math.isfinite(value):
        raise _Limit(f"the number {text[:40]} is out of range")
    return value


def _constant(name: str) -> Any:
    raise _Limit(f"{name} is not a JSON value")


def depth_of(text: str) -> int:
    """How deeply arrays and objects nest in valid JSON text, at most MAX_DEPTH + 1.

    Without a walk in Python: strings are blanked and everything but brackets dropped (both in
    C), then each pass removes the innermost bracket pairs, so the number of passes is the depth.
    """
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    depth = 0
    while brackets and depth <= MAX_DEPTH:
        # One substitution per pass, so `{[]}` loses one level here, not two.
        brackets = _INNERMOST.sub("", brackets)
        depth += 1
    return depth


def parse_json(raw: bytes) -> Any:
    """A request body as JSON within the limits; BadRequest (400, field `body`) otherwise."""

    def refuse(why: str) -> BadRequest:
        return BadRequest(f"The body is not acceptable JSON: {why}.", extra={"field": "body"})

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise refuse(f"it is not UTF-8 (byte {e.start})") from None
    try:
        value = json.loads(
            text or "null", parse_int=_int, parse_float=_float, parse_constant=_constant
        )
    except _Limit as e:
        raise refuse(str(e)) from None
    except RecursionError:
        raise refuse(f"it nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as e:  # JSONDecodeError, and int() past Python's own digit limit
        raise refuse(str(e)) from None
    if depth_of(text) > MAX_DEPTH:
        raise refuse(f"it nests deeper than {MAX_DEPTH} levels")
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise refuse("a string holds a lone UTF-16 surrogate (not a character)") from None
    return value
