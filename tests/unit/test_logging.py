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

import pytest

from payment.adapters.logging import (
    ConsoleFormatter,
    JsonFormatter,
    LogFormat,
    configure_logging,
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


def test_console_adds_the_exception_after_the_line() -> None:
    line = ConsoleFormatter().format(record(level=logging.ERROR, exc_info=True))

    first, _, rest = line.partition("\n")
    assert first.split() == ["ERROR", "request"]
    assert "RuntimeError: boom" in rest


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
