"""Log lines: one JSON object per line for machines, or a readable line for a terminal.

A record's structured fields travel in ``extra={"fields": {...}}``; the formatters put them
in the line. Nothing here reads a secret: the callers log only what may be shown, and a
database error's message goes through ``error_summary`` first.

Whatever a client sent (a path, a header) may hold any character, so neither format writes a
character that ends a line or drives a terminal as it is: in the console format every control
character (C0, DEL, C1), the Unicode line and paragraph separators, the bidirectional controls
and lone surrogates are written as ``\\xNN`` or ``\\uNNNN``, a field's value is quoted when it
holds a space, a quote, an ``=`` or any of those, and the lines of an exception follow behind a
``  | `` gutter; in JSON, which escapes C0 itself, the others are written as ``\\uNNNN`` escapes,
which read back as the same text.

When the service traces (``tracing.py``), a line written inside a span carries its
``trace_id`` and ``span_id`` (the W3C hexadecimal forms) as two more fields, so that the access
line of a request leads to its trace; without tracing nothing is looked up.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, Literal

from opentelemetry import trace

LogFormat = Literal["json", "console"]
_OWN_LOGGERS = ("payment",)

_FORMATTING = r"\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff"
"""Unicode line and paragraph separators, the controls that reorder text on a screen, and lone
surrogates (which no UTF-8 stream can write)."""
_UNSAFE_IN_CONSOLE = re.compile(rf"[\x00-\x1f\x7f-\x9f{_FORMATTING}]")
_UNSAFE_IN_JSON = re.compile(rf"[\x7f-\x9f{_FORMATTING}]")
"""What json.dumps(ensure_ascii=False) leaves raw; it escapes C0 itself."""
_EXCEPTION_GUTTER = "  | "
_MAX_SUMMARY = 300


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def printable(text: str) -> str:
    """``text`` with its control, line-breaking and reordering characters escaped."""
    # Each of them is unprintable to str.isprintable: most text is done with in one C call.
    return text if text.isprintable() else _UNSAFE_IN_CONSOLE.sub(_escape, text)


def _console_value(value: object) -> str:
    """A field's value: quoted (``"`` and ``\\`` escaped) when bare it could pass for more
    than one value, and printable."""
    text = str(value)
    if text and text.isprintable() and " " not in text and '"' not in text and "=" not in text:
        return text
    return printable('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')


_SECRET_SETTING = re.compile(
    r"""((?:password|passwd|pwd|secret|token)\w*\s*=\s*)"""
    r"""('(?:\\.|[^'\\])*'?|"(?:\\.|[^"\\])*"?|[^\s&;,]*)""",
    re.IGNORECASE,
)
"""A setting whose name holds one of these words (``sslpassword=...`` too), and its value."""
_URL = re.compile(r"\b[a-z][a-z0-9+.\-]*://(?:[^@\n]*@)?\S*", re.IGNORECASE)
"""A URL, through its credentials if it has any, however they are spelled (spaces included)."""
_QUOTED = re.compile(r'"[^"]*"?')
_WRAPPED_CLASS = re.compile(r"^\([\w.]+\) ")
"""SQLAlchemy's ``(psycopg.OperationalError) `` before the message of the error it wraps."""
_MAX_READ = 1000
"""How much of a message is read at most: the masking stays cheap whatever its length."""


def _mask_url(match: re.Match[str]) -> str:
    url = match.group()
    shown = url.lower().startswith(("http://", "https://")) and "@" not in url
    return url if shown else "<connection string>"


def error_summary(error: BaseException) -> str:
    """``error`` for a log line: its class and the first line of its message (``OperationalError:
    role "x" does not exist``), with what could be a secret masked: a password or token
    setting, any URL but a plain web address, and every quoted fragment of a message about a
    connection string it could not parse (a fragment may be part of a password)."""
    lines = str(error)[:_MAX_READ].strip().splitlines()
    first = _WRAPPED_CLASS.sub("", lines[0].strip()) if lines else ""
    first = _URL.sub(_mask_url, first)
    first = _SECRET_SETTING.sub(r"\1***", first)
    lowered = first.lower()
    if "connection info string" in lowered or "dsn" in lowered or "conninfo" in lowered:
        first = _QUOTED.sub('"***"', first)
    if len(first) > _MAX_SUMMARY:
        first = first[:_MAX_SUMMARY] + "..."
    name = type(error).__name__
    return f"{name}: {first}" if first else name


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return dict(fields) if isinstance(fields, dict) else {}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in fields_of(record).items():
            line.setdefault(name, value)  # a field never overwrites the line's own members
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        written = json.dumps(line, default=str, ensure_ascii=False)
        return written if written.isprintable() else _UNSAFE_IN_JSON.sub(_json_escape, written)


class ConsoleFormatter(logging.Formatter):
    """``LEVEL   message  name=value ...`` on one line; an exception follows on lines of its
    own, each behind a gutter, so that no line of it passes for a log line."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(
            f"{printable(str(name))}={_console_value(value)}"
            for name, value in fields_of(record).items()
        )
        message = printable(record.getMessage())
        line = f"{record.levelname:<7} {message}" + (f"  {fields}" if fields else "")
        if record.exc_info:
            trace = self.formatException(record.exc_info)
            line += "".join(f"\n{_EXCEPTION_GUTTER}{printable(part)}" for part in trace.split("\n"))
        return line


class TraceIds(logging.Filter):
    """Adds the current span's ``trace_id`` and ``span_id`` to a record's fields, when it is
    written inside one."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            fields = fields_of(record)
            fields["trace_id"] = trace.format_trace_id(context.trace_id)
            fields["span_id"] = trace.format_span_id(context.span_id)
            record.fields = fields
        return True


def configure_logging(level: str, log_format: LogFormat, *, traced: bool = False) -> None:
    """Send the service's own loggers to standard error in ``log_format``, with the trace and
    span ids when ``traced``. Idempotent."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else ConsoleFormatter())
    if traced:
        handler.addFilter(TraceIds())
    for name in _OWN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(level)
        logger.propagate = False


def uvicorn_log_config(level: str, log_format: LogFormat) -> dict[str, Any]:
    """uvicorn's own lines (start, stop, errors) in the same format as the service's. Its
    access lines are off: the service logs each request itself, with more in it."""
    formatter = JsonFormatter if log_format == "json" else ConsoleFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"service": {"()": f"{formatter.__module__}.{formatter.__qualname__}"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "service",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }
