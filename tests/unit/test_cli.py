"""The command line as uvicorn users expect it: options over the environment, --version, a
--help that lists the environment, a start-up line that says what serves on what, and the curl
`dev` prints. uvicorn itself is replaced: nothing listens here."""

from __future__ import annotations

import json
import logging
import os
import shlex
from collections.abc import Iterator
from decimal import Decimal
from importlib.metadata import version
from typing import Any

import pytest
import uvicorn

from payment.adapters.settings import Settings
from payment.entrypoints import cli

SECRET_DEFAULT = "order_pass"


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No service setting inherited from this process's environment."""
    for name in list(os.environ):
        if name == "DATABASE_URL" or name.startswith(("ORDER_DB_", "PAYMENT_")):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture(autouse=True)
def own_loggers_restored() -> Iterator[None]:
    """`serve` points the service's loggers at this test's captured stderr: put back after."""
    logger = logging.getLogger("payment")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield
    logger.handlers, logger.propagate = handlers, propagate
    logger.setLevel(level)


@pytest.fixture
def served(environment: pytest.MonkeyPatch) -> dict[str, Any]:
    """What `serve` hands uvicorn; the background check of the database is left out."""
    seen: dict[str, Any] = {}
    environment.setattr(uvicorn, "run", lambda app, **options: seen.update(options))
    environment.setattr(cli, "check_database_in_background", lambda settings: None)
    return seen


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])

    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"payment-service {version('payment-service')}"


@pytest.mark.parametrize("argv", [["--help"], ["serve", "--help"], ["dev", "--help"]])
def test_help_lists_every_setting_with_its_default_but_a_secrets(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        cli.main(argv)

    out = capsys.readouterr().out
    listed = {
        line.split()[0]: line.split(maxsplit=1)[1]
        for line in out.split("environment variables (default):")[1].splitlines()
        if line.strip()
    }
    assert set(listed) >= {name.upper() for name in Settings.model_fields}
    assert listed["PAYMENT_PORT"] == "8004"
    assert listed["PAYMENT_DB_TRANSACTION_POOLING"] == "false"
    assert listed["DATABASE_URL"] == "unset"
    assert listed["PAYMENT_LOG_FORMAT"].startswith("json (one of json, console")
    assert listed["ORDER_DB_PASSWORD"] == "(secret: not shown)"
    assert SECRET_DEFAULT not in out


def test_serve_options_override_the_environment(
    served: dict[str, Any], environment: pytest.MonkeyPatch
) -> None:
    environment.setenv("PAYMENT_HOST", "10.0.0.1")
    environment.setenv("PAYMENT_PORT", "8100")
    environment.setenv("PAYMENT_WORKERS", "3")

    status = cli.main(["serve", "--host", "127.0.0.1", "--port", "9000", "--workers", "2"])

    assert status == 0
    assert (served["host"], served["port"], served["workers"]) == ("127.0.0.1", 9000, 2)


def test_serve_without_options_takes_the_environment(
    served: dict[str, Any], environment: pytest.MonkeyPatch
) -> None:
    environment.setenv("PAYMENT_PORT", "8100")

    assert cli.main(["serve"]) == 0

    assert (served["host"], served["port"], served["workers"]) == ("0.0.0.0", 8100, 1)  # noqa: S104


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["serve", "--port", "70000"], "--port: a port is from 1 to 65535"),
        (["serve", "--port", "http"], "--port: not a port number"),
        (["dev", "--port", "0"], "--port: a port is from 1 to 65535"),
    ],
)
def test_a_bad_option_is_refused_before_anything_starts(
    served: dict[str, Any], argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)

    assert exit_.value.code == 2
    assert said in capsys.readouterr().err
    assert served == {}


def test_workers_out_of_range_are_refused_naming_the_option(
    served: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    status = cli.main(["serve", "--workers", "0"])

    assert status == 2
    assert "invalid option: --workers: " in capsys.readouterr().err
    assert served == {}


def test_serve_starts_with_one_line_saying_what_serves_on_what_without_the_password(
    served: dict[str, Any], environment: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    environment.setenv("DATABASE_URL", "postgresql://shop:pa55-w0rd@db.internal:6432/shop_db")
    environment.setenv("PAYMENT_API_KEYS", "k" * 20 + "," + "m" * 20)
    environment.setenv("PAYMENT_DB_POOL_SIZE", "7")

    assert cli.main(["serve", "--port", "9000", "--workers", "2"]) == 0

    err = capsys.readouterr().err
    [line] = [json.loads(text) for text in err.splitlines() if "serving" in text]
    assert line["logger"] == "payment.startup"
    assert line["message"] == f"payment-service {version('payment-service')} serving"
    expected = {
        "version": version("payment-service"),
        "address": "http://0.0.0.0:9000",
        "workers": 2,
        "database_host": "db.internal",
        "database_port": 6432,
        "database_name": "shop_db",
        "api_keys": "on (2)",
        "pool_size": 7,
    }
    assert {key: line.get(key) for key in expected} == expected
    assert "pa55-w0rd" not in err
    assert "k" * 20 not in err


def test_the_curl_dev_prints_pays_the_first_pending_order_with_its_exact_total(
    environment: pytest.MonkeyPatch,
) -> None:
    settings = Settings()

    printed = cli.how_to_pay(
        settings, [(7, Decimal("25.00")), (9, Decimal("1.50"))], host="127.0.0.1", port=8000
    )

    [command] = [line.strip() for line in printed.splitlines() if "curl" in line]
    argv = shlex.split(command)
    assert argv[:5] == ["curl", "-s", "-X", "POST", "http://127.0.0.1:8000/pay"]
    assert _headers(argv) == ["Content-Type: application/json"]
    assert json.loads(argv[argv.index("-d") + 1]) == {"order_id": 7, "amount": "25.00"}


def test_with_api_keys_the_curl_dev_prints_carries_the_first_key(
    environment: pytest.MonkeyPatch,
) -> None:
    first, second = "a" * 16 + "-first", "b" * 16 + "-second"
    settings = Settings(payment_api_keys=f" {first} , {second}")

    printed = cli.how_to_pay(settings, [(1, Decimal("199.99"))], host="0.0.0.0", port=8001)  # noqa: S104

    [command] = [line.strip() for line in printed.splitlines() if "curl" in line]
    argv = shlex.split(command)
    assert argv[4] == "http://127.0.0.1:8001/pay"
    assert _headers(argv) == ["Content-Type: application/json", f"Authorization: Bearer {first}"]


def _headers(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == "-H"]


@pytest.mark.parametrize("workers", ["1", "4"])
def test_a_bad_opentelemetry_variable_stops_serve_before_any_worker_starts(
    served: dict[str, Any],
    environment: pytest.MonkeyPatch,
    workers: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    environment.setenv("OTEL_TRACES_EXPORTER", "zipkin")

    assert cli.main(["serve", "--workers", workers]) == 2

    assert "OTEL_TRACES_EXPORTER" in capsys.readouterr().err
    assert served == {}
