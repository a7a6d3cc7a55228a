"""The log line formats: one JSON object per line, or a readable line with name=value."""

from __future__ import annotations

import json
import logging
import logging.config
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import exc as sa_exc

from payment.adapters.logging import (
    ConsoleFormatter,
    JsonFormatter,
    LogFormat,
    configure_logging,
    error_summary,
    uvicorn_log_config,
)

CREATED = datetime(2026, 11, 26, 10, 15, 0, 123000, tzinfo=UTC)


def record(
    message: str = "request",
    *,
    fields: dict[str, Any] | None = None,
    level: int = logging.INFO,
    exc_info: bool = False,
) -> logging.LogRecord:
    error_info = None
    if exc_info:
        try:
            raise RuntimeError("boom\nsecond line")
        except RuntimeError:
            error_info = sys.exc_info()
    made = logging.getLogger("payment.access").makeRecord(
        "payment.access",
        level,
        __file__,
        1,
        message,
        (),
        error_info,
        extra=None if fields is None else {"fields": fields},
    )
    made.created = CREATED.timestamp()
    return made


FIELDS = {
    "request_id": "trace-1",
    "status": 200,
    "outcome": "paid",
    "order_id": 123,
    "claimed_amount": "199.99",
    "payment_id": None,
}


def test_json_is_one_line_holding_time_level_logger_message_and_fields() -> None:
    line = JsonFormatter().format(record(fields=FIELDS))

    assert "\n" not in line
    assert json.loads(line) == {
        "time": "2026-11-26T10:15:00.123+00:00",
        "level": "info",
        "logger": "payment.access",
        "message": "request",
        **FIELDS,
    }


def test_json_fields_never_overwrite_the_line_own_members() -> None:
    forged = {"message": "forged", "level": "critical", "logger": "x", "time": "never"}

    parsed = json.loads(JsonFormatter().format(record(fields={**forged, "outcome": "paid"})))

    assert parsed["message"] == "request"
    assert parsed["level"] == "info"
    assert parsed["logger"] == "payment.access"
    assert parsed["time"] == "2026-11-26T10:15:00.123+00:00"
    assert parsed["outcome"] == "paid"


def test_json_time_is_aware_utc() -> None:
    parsed = json.loads(JsonFormatter().format(record()))

    moment = datetime.fromisoformat(parsed["time"])
    assert moment == CREATED
    assert moment.utcoffset() == timedelta(0)


def test_json_stays_one_line_with_a_multiline_message_and_an_exception() -> None:
    line = JsonFormatter().format(
        record("first\nsecond", level=logging.ERROR, exc_info=True, fields={"note": "a\nb"})
    )

    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["message"] == "first\nsecond"
    assert parsed["level"] == "error"
    assert parsed["note"] == "a\nb"
    assert "RuntimeError: boom" in parsed["exception"]


def test_json_writes_values_it_cannot_encode_as_text() -> None:
    parsed = json.loads(JsonFormatter().format(record(fields={"amount": Decimal("199.99")})))

    assert parsed["amount"] == "199.99"


def test_json_without_fields_has_only_the_standard_members() -> None:
    parsed = json.loads(JsonFormatter().format(record()))

    assert set(parsed) == {"time", "level", "logger", "message"}


def test_json_ignores_fields_that_are_not_a_mapping() -> None:
    made = record()
    made.__dict__["fields"] = ["not", "a", "dict"]

    assert set(json.loads(JsonFormatter().format(made))) == {"time", "level", "logger", "message"}


def test_console_puts_the_fields_after_the_message_as_name_value() -> None:
    line = ConsoleFormatter().format(record(fields=FIELDS))

    assert line.startswith("INFO ")
    message, _, fields = line.partition("request")
    assert message.strip() == "INFO"
    assert fields.split() == [
        "request_id=trace-1",
        "status=200",
        "outcome=paid",
        "order_id=123",
        "claimed_amount=199.99",
        "payment_id=None",
    ]


def test_console_without_fields_is_level_and_message() -> None:
    assert ConsoleFormatter().format(record(level=logging.WARNING)).split() == [
        "WARNING",
        "request",
    ]


def test_console_adds_the_exception_after_the_line_behind_a_gutter() -> None:
    line = ConsoleFormatter().format(record(level=logging.ERROR, exc_info=True))

    first, *rest = line.split("\n")
    assert first.split() == ["ERROR", "request"]
    assert "  | RuntimeError: boom" in rest
    # The exception's second line is its own, never one that passes for a log line.
    assert "  | second line" in rest
    assert all(part.startswith("  | ") for part in rest)


UNSAFE = (
    [chr(code) for code in range(0x20)]
    + [chr(code) for code in range(0x7F, 0xA0)]
    + ["\u2028", "\u2029", "\u202e", "\u2066"]
)
"""C0, DEL, C1 (U+0085 and U+009B among them), the Unicode line and paragraph separators, and
bidirectional controls: none may reach a log line raw."""
FORGED = "/pay\nINFO    request  status=200\r\x1b[2K\x1b]0;owned\x07\x9b31m\x85\u2028\u2029done"
"""A path that, written raw, ends the line, forges another, and drives a terminal."""


def test_console_escapes_control_characters_in_the_message_and_the_fields() -> None:
    line = ConsoleFormatter().format(record(FORGED, fields={"path": FORGED, FORGED: 1}))

    assert not [c for c in UNSAFE if c in line], line
    assert len(line.splitlines()) == 1
    assert line.startswith("INFO    /pay\\x0aINFO    request  status=200\\x0d\\x1b[2K\\x1b]0;owned")
    assert "\\x07\\x9b31m\\x85\\u2028\\u2029done" in line


def test_console_quotes_a_field_value_that_would_pass_for_more_than_one() -> None:
    line = ConsoleFormatter().format(
        record(fields={"path": '/x status=500 "a"', "empty": "", "route": "/pay"})
    )

    assert line.endswith('path="/x status=500 \\"a\\"" empty="" route=/pay'), line


def test_json_escapes_what_json_dumps_leaves_raw() -> None:
    line = JsonFormatter().format(record(FORGED, fields={"path": FORGED, FORGED: 1}))

    assert not [c for c in UNSAFE if c in line], line
    assert "\\u2028" in line
    assert "\\u0085" in line
    assert "\\u009b" in line
    parsed = json.loads(line)
    assert parsed["message"] == parsed["path"] == FORGED
    assert parsed[FORGED] == 1


def test_a_lone_surrogate_is_written_escaped_in_either_format() -> None:
    made = record("a\ud800b", fields={"path": "/\udfff"})

    console = ConsoleFormatter().format(made)
    line = JsonFormatter().format(made)

    assert console == 'INFO    a\\ud800b  path="/\\udfff"'
    line.encode()  # no UnicodeEncodeError on a UTF-8 stream
    assert json.loads(line)["path"] == "/\udfff"


ANY_TEXT = st.text(st.characters(exclude_categories=()))
"""Any text at all, lone surrogates included."""


@given(ANY_TEXT, ANY_TEXT)
def test_any_text_is_one_line_in_either_format_and_reads_back_from_json(
    message: str, value: str
) -> None:
    made = record(message.replace("%", "%%"), fields={"value": value})

    console = ConsoleFormatter().format(made)
    line = JsonFormatter().format(made)

    for written in (console, line):
        assert len(written.splitlines()) <= 1
        assert not [c for c in UNSAFE if c in written]
        written.encode()
    parsed = json.loads(line)
    assert (parsed["message"], parsed["value"]) == (made.getMessage(), value)


@pytest.mark.parametrize(
    ("error", "summary"),
    [
        (
            psycopg.OperationalError('role "x" does not exist\nDETAIL: more'),
            'OperationalError: role "x" does not exist',
        ),
        (
            sa_exc.OperationalError("SELECT 1", {}, psycopg.OperationalError("timeout expired")),
            "OperationalError: timeout expired",
        ),
        (TimeoutError(), "TimeoutError"),
        (
            psycopg.OperationalError('password authentication failed for user "shop"'),
            'OperationalError: password authentication failed for user "shop"',
        ),
    ],
)
def test_an_error_is_summed_up_by_its_class_and_first_line(
    error: BaseException, summary: str
) -> None:
    assert error_summary(error) == summary


SECRET = "s3cr3t pw"


@pytest.mark.parametrize(
    "message",
    [
        "could not connect to postgresql://shop:s3cr3t pw@db:5432/orders",
        "could not connect to postgresql+psycopg://shop:s3cr3t%20pw@db/orders?sslmode=require",
        "bad option in host=db password='s3cr3t pw' dbname=orders",
        'bad option in host=db PASSWORD="s3cr3t pw" dbname=orders',
        "bad option in host=db password=s3cr3t%20pw dbname=orders",
        "url postgresql://db/orders?user=shop&password=s3cr3t%20pw&sslmode=require",
        'invalid dsn: missing "=" after "pw" in connection info string',
        "invalid connection option sslpassword=s3cr3t%20pw",
        "api_token = s3cr3t%20pw",
    ],
)
def test_an_error_summary_never_shows_a_password_or_a_connection_string(message: str) -> None:
    summary = error_summary(psycopg.OperationalError(message))

    assert "s3cr3t" not in summary
    assert "pw" not in summary.replace("password", "").replace("sslpassword", "")
    assert summary.startswith("OperationalError: ")


def test_an_error_summary_is_bounded() -> None:
    summary = error_summary(psycopg.OperationalError("x" * 10_000))

    assert len(summary) < 400


@pytest.fixture
def service_logger() -> Iterator[logging.Logger]:
    """The service's logger, put back as it was after the test."""
    logger = logging.getLogger("payment")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield logger
    logger.handlers, logger.level, logger.propagate = saved[0], saved[1], saved[2]


@pytest.mark.parametrize(
    ("log_format", "formatter"), [("json", JsonFormatter), ("console", ConsoleFormatter)]
)
def test_configure_logging_sends_the_service_logs_in_the_chosen_format(
    service_logger: logging.Logger, log_format: LogFormat, formatter: type[logging.Formatter]
) -> None:
    configure_logging("WARNING", log_format)

    [handler] = service_logger.handlers
    assert isinstance(handler.formatter, formatter)
    assert service_logger.level == logging.WARNING
    assert not service_logger.propagate
    assert not logging.getLogger("payment.access").isEnabledFor(logging.INFO)


def test_configure_logging_twice_keeps_one_handler(service_logger: logging.Logger) -> None:
    configure_logging("INFO", "json")
    configure_logging("DEBUG", "console")

    [handler] = service_logger.handlers
    assert isinstance(handler.formatter, ConsoleFormatter)
    assert service_logger.level == logging.DEBUG


def test_configured_json_lines_reach_standard_error(
    service_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", "json")

    logging.getLogger("payment.access").info("request", extra={"fields": FIELDS})

    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["request_id"] == "trace-1"


UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


@pytest.fixture
def uvicorn_loggers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """uvicorn's loggers put back as they were after the test; and the handlers of everyone
    else left open, which dictConfig would otherwise close (pytest's capture among them)."""
    monkeypatch.setattr(logging.config, "_clearExistingHandlers", lambda: None)
    loggers = [logging.getLogger(name) for name in UVICORN_LOGGERS]
    saved = [(list(lg.handlers), lg.level, lg.propagate, lg.disabled) for lg in loggers]
    try:
        yield
    finally:
        for logger, (handlers, level, propagate, disabled) in zip(loggers, saved, strict=True):
            for handler in logger.handlers:
                if handler not in handlers:
                    handler.close()
            logger.handlers, logger.level = handlers, level
            logger.propagate, logger.disabled = propagate, disabled


@pytest.mark.usefixtures("uvicorn_loggers")
def test_uvicorn_lines_are_json_lines_on_standard_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logging.config.dictConfig(uvicorn_log_config("INFO", "json"))

    logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)
    logging.getLogger("uvicorn.error").debug("too detailed")

    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    parsed = json.loads(lines[0])
    assert parsed["logger"] == "uvicorn.error"
    assert parsed["level"] == "info"
    assert parsed["message"] == "Started server process [42]"


@pytest.mark.usefixtures("uvicorn_loggers")
def test_uvicorn_lines_are_readable_lines_in_the_console_format(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logging.config.dictConfig(uvicorn_log_config("WARNING", "console"))

    logging.getLogger("uvicorn.error").warning("Waiting for connections to close")
    logging.getLogger("uvicorn.error").info("not shown under WARNING")

    assert capsys.readouterr().err.splitlines() == ["WARNING Waiting for connections to close"]


@pytest.mark.usefixtures("uvicorn_loggers")
def test_uvicorn_access_lines_are_off(capsys: pytest.CaptureFixture[str]) -> None:
    logging.config.dictConfig(uvicorn_log_config("DEBUG", "json"))

    logging.getLogger("uvicorn.access").info('127.0.0.1 - "POST /pay HTTP/1.1" 200')

    assert capsys.readouterr().err == ""


@pytest.mark.usefixtures("uvicorn_loggers")
def test_the_uvicorn_configuration_leaves_the_service_loggers_alone(
    service_logger: logging.Logger,
) -> None:
    configure_logging("INFO", "json")
    [handler] = service_logger.handlers

    logging.config.dictConfig(uvicorn_log_config("INFO", "console"))

    assert service_logger.handlers == [handler]
    assert not service_logger.disabled
    assert isinstance(handler.formatter, JsonFormatter)
