"""Log redaction: no API key, webhook secret or URL signature reaches a log line.

Installed once per process as the log record factory, so it applies to every record whichever
logger made it (uvicorn's access log, httpx, the engine) and whichever handler writes it, and
before any formatter runs. A record's arguments are redacted one by one, so formatters that
read them by position (uvicorn's access formatter) still work.

What is redacted:
- the value of every query parameter in a logged URL except those on SAFE_QUERY, which carry
  nothing secret: a signed file URL's `signature`, an S3 presigned URL's `X-Amz-*` fields, an
  API key sent as `?api_key=` (refused, but still logged by the access log) or under any
  other name;
- anything shaped like an API key (`sk_...`), a webhook secret (`whsec_...`) or a bearer
  credential (`Bearer ...`), wherever it appears.
"""

from __future__ import annotations

import logging
import re
from typing import Any

REDACTED = "[redacted]"
# Query parameters whose values are safe to log: the API's own filters and paging.
SAFE_QUERY = frozenset(
    {"limit", "cursor", "status", "template", "type", "start", "end", "group_by", "tenant"}
    | {"expires"}
)
_QUERY_PAIR = re.compile(r"(?P<sep>[?&;])(?P<name>[^=&;#\s\"'<>]*)=(?P<value>[^&;#\s\"'<>]*)")
_SECRETS = re.compile(
    r"(?<![A-Za-z0-9])(?P<kind>sk_|whsec_|sk%5[fF]|whsec%5[fF])[A-Za-z0-9_\-+/=%.~]+"
    r"|(?P<bearer>[Bb]earer(?:\s+|%20|\+))[^\s\"',;]+"
)


def _pair(m: re.Match[str]) -> str:
    name = m["name"]
    if name.lower() in SAFE_QUERY or not m["value"]:
        return m.group(0)
    return f"{m['sep']}{name}={REDACTED}"


def _secret(m: re.Match[str]) -> str:
    if m["bearer"]:
        return m["bearer"] + REDACTED
    return m["kind"] + REDACTED


def redact(text: str) -> str:
    """The text with secrets and non-allowlisted query values replaced."""
    if "=" in text:
        text = _QUERY_PAIR.sub(_pair, text)
    return _SECRETS.sub(_secret, text)


def _redact_arg(arg: Any) -> Any:
    if isinstance(arg, str):
        return redact(arg)
    if arg is None or isinstance(arg, bool | int | float):
        return arg
    text = str(arg)
    clean = redact(text)
    return arg if clean == text else clean


def redact_record(record: logging.LogRecord) -> None:
    """Redact a record in place: its message, its arguments and its traceback text."""
    if isinstance(record.msg, str):
        record.msg = redact(record.msg)
    if isinstance(record.args, tuple):
        record.args = tuple(_redact_arg(a) for a in record.args)
    elif isinstance(record.args, dict):
        record.args = {k: _redact_arg(v) for k, v in record.args.items()}
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))


_installed = False


def install_redaction() -> None:
    """Make every log record in this process redacted from creation (idempotent)."""
    global _installed
    if _installed:
        return
    make = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        redact_record(record)
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
