from __future__ import annotations

import pytest

from payment.adapters.settings import ConfigurationError, Settings, load_settings

SETTING_VARIABLES = (
    "ORDER_DB_HOST",
    "ORDER_DB_PORT",
    "ORDER_DB_NAME",
    "ORDER_DB_USER",
    "ORDER_DB_PASSWORD",
    "DATABASE_URL",
    "PAYMENT_HOST",
    "PAYMENT_PORT",
    "PAYMENT_WORKERS",
    "PAYMENT_LOG_LEVEL",
    "PAYMENT_LOG_FORMAT",
    "PAYMENT_DB_POOL_SIZE",
    "PAYMENT_DB_POOL_TIMEOUT_SECONDS",
    "PAYMENT_DB_CONNECT_TIMEOUT_SECONDS",
    "PAYMENT_DB_STATEMENT_TIMEOUT_MS",
    "PAYMENT_DB_LOCK_TIMEOUT_MS",
    "PAYMENT_DB_TRANSACTION_POOLING",
    "PAYMENT_IDEMPOTENCY_RETENTION_HOURS",
    "PAYMENT_REQUEST_DEADLINE_MS",
    "PAYMENT_READY_TIMEOUT_MS",
    "PAYMENT_MAX_REQUESTS_IN_FLIGHT",
    "PAYMENT_MAX_CONNECTIONS",
    "PAYMENT_MAX_HEADER_BYTES",
    "PAYMENT_HEADER_TIMEOUT_SECONDS",
    "PAYMENT_BODY_TIMEOUT_SECONDS",
    "PAYMENT_IDLE_TIMEOUT_SECONDS",
    "PAYMENT_API_KEYS",
    "PAYMENT_SHUTDOWN_TIMEOUT_SECONDS",
    "PAYMENT_EVENT_SOURCE",
    "PAYMENT_WEBHOOK_URLS",
    "PAYMENT_WEBHOOK_SECRET",
    "PAYMENT_WEBHOOK_TIMEOUT_SECONDS",
    "PAYMENT_RABBITMQ_URL",
    "PAYMENT_RABBITMQ_EXCHANGE",
    "PAYMENT_RELAY_BATCH_SIZE",
    "PAYMENT_RELAY_POLL_INTERVAL_MS",
    "PAYMENT_RELAY_LEASE_SECONDS",
    "PAYMENT_RELAY_MAX_ATTEMPTS",
    "PAYMENT_RELAY_BACKOFF_BASE_MS",
    "PAYMENT_RELAY_BACKOFF_MAX_SECONDS",
    "PAYMENT_OUTBOX_RETENTION_HOURS",
    "PAYMENT_RELAY_PORT",
)


@pytest.fixture(autouse=True)
def empty_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in SETTING_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
        monkeypatch.delenv(variable.lower(), raising=False)


def configuration_error(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> str:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as refused:
        load_settings()
    return str(refused.value)


def test_defaults_to_the_order_database_of_the_spec() -> None:
    settings = load_settings()

    assert settings.order_db_host == "order-db"
    assert settings.order_db_port == 5432
    assert settings.order_db_name == "order_db"
    assert settings.order_db_user == "order_user"
    assert settings.order_db_password.get_secret_value() == "order_pass"
    assert settings.database_url is None


def test_the_default_url_is_the_order_database_with_the_psycopg_driver() -> None:
    url = load_settings().sqlalchemy_url()

    assert url.drivername == "postgresql+psycopg"
    assert (url.host, url.port, url.database) == ("order-db", 5432, "order_db")
    assert (url.username, url.password) == ("order_user", "order_pass")


def test_builds_the_url_from_the_order_db_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDER_DB_HOST", "db.internal")
    monkeypatch.setenv("ORDER_DB_PORT", "6543")
    monkeypatch.setenv("ORDER_DB_NAME", "orders")
    monkeypatch.setenv("ORDER_DB_USER", "payer")
    monkeypatch.setenv("ORDER_DB_PASSWORD", "p@ss:w/rd")

    url = load_settings().sqlalchemy_url()

    assert (url.host, url.port, url.database) == ("db.internal", 6543, "orders")
    assert (url.username, url.password) == ("payer", "p@ss:w/rd")


def test_database_url_overrides_the_order_db_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDER_DB_HOST", "ignored-host")
    monkeypatch.setenv("ORDER_DB_PASSWORD", "ignored-password")
    monkeypatch.setenv("DATABASE_URL", "postgresql://payer:pw@primary:5433/payments")

    url = load_settings().sqlalchemy_url()

    assert url.drivername == "postgresql+psycopg"
    assert (url.host, url.port, url.database) == ("primary", 5433, "payments")
    assert (url.username, url.password) == ("payer", "pw")


@pytest.mark.parametrize(
    "scheme", ["postgresql", "postgresql+psycopg2", "postgresql+asyncpg", "postgresql+psycopg"]
)
def test_database_url_always_gets_the_psycopg_driver(
    monkeypatch: pytest.MonkeyPatch, scheme: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"{scheme}://u:pw@h/d")

    assert load_settings().sqlalchemy_url().drivername == "postgresql+psycopg"


def test_the_settings_never_show_the_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDER_DB_PASSWORD", "s3cr3tpw-order")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:s3cr3tpw-url@h/d")

    settings = load_settings()

    assert "s3cr3tpw" not in repr(settings)
    assert "s3cr3tpw" not in str(settings)
    assert "s3cr3tpw" not in str(settings.sqlalchemy_url())


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PAYMENT_DB_POOL_SIZE", "lots"),
        ("PAYMENT_DB_POOL_SIZE", "0"),
        ("PAYMENT_DB_POOL_SIZE", "1000"),
        ("PAYMENT_DB_POOL_TIMEOUT_SECONDS", "-1"),
        ("PAYMENT_DB_POOL_TIMEOUT_SECONDS", "nan"),
        ("PAYMENT_DB_CONNECT_TIMEOUT_SECONDS", "0"),
        ("PAYMENT_DB_STATEMENT_TIMEOUT_MS", "soon"),
        ("PAYMENT_DB_LOCK_TIMEOUT_MS", "-5"),
        ("PAYMENT_PORT", "70000"),
        ("PAYMENT_WORKERS", "0"),
        ("PAYMENT_LOG_LEVEL", "CHATTY"),
        ("PAYMENT_LOG_FORMAT", "yaml"),
        ("PAYMENT_LOG_FORMAT", "text"),
        ("PAYMENT_LOG_FORMAT", ""),
        ("PAYMENT_IDEMPOTENCY_RETENTION_HOURS", "23"),
        ("PAYMENT_IDEMPOTENCY_RETENTION_HOURS", "0"),
        ("PAYMENT_IDEMPOTENCY_RETENTION_HOURS", "-24"),
        ("PAYMENT_IDEMPOTENCY_RETENTION_HOURS", "8785"),
        ("PAYMENT_IDEMPOTENCY_RETENTION_HOURS", "a day"),
        ("ORDER_DB_PORT", "postgres"),
        ("ORDER_DB_PORT", "0"),
        ("DATABASE_URL", "not a url"),
        ("DATABASE_URL", "mysql://u:pw@h/d"),
        ("PAYMENT_DB_TRANSACTION_POOLING", "pgbouncer"),
    ],
)
def test_a_bad_value_is_refused_naming_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    message = configuration_error(monkeypatch, variable, value)

    assert variable in message
    assert message.startswith("invalid configuration: ")


def test_every_bad_variable_is_named_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDER_DB_PORT", "x")
    message = configuration_error(monkeypatch, "PAYMENT_DB_POOL_SIZE", "y")

    assert "ORDER_DB_PORT" in message
    assert "PAYMENT_DB_POOL_SIZE" in message


def test_the_log_level_is_read_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYMENT_LOG_LEVEL", "debug")

    assert load_settings().payment_log_level == "DEBUG"


@pytest.mark.parametrize(
    ("variable", "value", "secret"),
    [
        pytest.param("DATABASE_URL", "mysql://u:s3cr3tpw@h/d", "s3cr3tpw", id="mysql-url"),
        pytest.param("DATABASE_URL", "s3cr3tpw", "s3cr3tpw", id="not-a-url"),
        pytest.param("DATABASE_URL", "sqlite:///s3cr3tpw.db", "s3cr3tpw", id="sqlite-url"),
        pytest.param(
            "DATABASE_URL",
            "postgresql://payer:p@ss:w0rd-s3cr3t@db/payments",
            "w0rd-s3cr3t",
            id="password-with-unescaped-at-and-colon",
        ),
        pytest.param(
            "DATABASE_URL",
            "postgresql://payer:pw@db:s3cr3tpw/payments",
            "s3cr3tpw",
            id="port-that-is-not-a-number",
        ),
        pytest.param("PAYMENT_DB_POOL_SIZE", "s3cr3tpw", "s3cr3tpw", id="pool-size"),
        pytest.param("ORDER_DB_PORT", "s3cr3tpw", "s3cr3tpw", id="order-db-port"),
    ],
)
def test_a_configuration_error_never_contains_the_value(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, secret: str
) -> None:
    message = configuration_error(monkeypatch, variable, value)

    assert variable in message
    assert secret not in message


def test_defaults_for_logging_and_idempotency() -> None:
    settings = load_settings()

    assert settings.payment_log_format == "json"
    assert settings.payment_idempotency_retention_hours == 24


@pytest.mark.parametrize(
    ("value", "log_format"),
    [
        ("json", "json"),
        ("JSON", "json"),
        ("Json", "json"),
        ("console", "console"),
        ("CONSOLE", "console"),
    ],
)
def test_the_log_format_is_read_in_any_case(
    monkeypatch: pytest.MonkeyPatch, value: str, log_format: str
) -> None:
    monkeypatch.setenv("PAYMENT_LOG_FORMAT", value)

    assert load_settings().payment_log_format == log_format


@pytest.mark.parametrize("hours", [24, 48, 8784])
def test_a_key_retention_of_24_hours_to_a_leap_year_is_accepted(
    monkeypatch: pytest.MonkeyPatch, hours: int
) -> None:
    monkeypatch.setenv("PAYMENT_IDEMPOTENCY_RETENTION_HOURS", str(hours))

    assert load_settings().payment_idempotency_retention_hours == hours


def test_a_key_retention_under_24_hours_is_refused_saying_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = configuration_error(monkeypatch, "PAYMENT_IDEMPOTENCY_RETENTION_HOURS", "23")

    assert "PAYMENT_IDEMPOTENCY_RETENTION_HOURS" in message
    assert "24" in message


def test_api_keys_are_split_on_commas_and_stripped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYMENT_API_KEYS", " key-aaaaaaaaaaaaaaaa , key-bbbbbbbbbbbbbbbb ,")

    assert load_settings().api_keys() == ["key-aaaaaaaaaaaaaaaa", "key-bbbbbbbbbbbbbbbb"]


def test_one_api_key_of_exactly_16_characters_is_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PAYMENT_API_KEYS", "0123456789abcdef")

    assert load_settings().api_keys() == ["0123456789abcdef"]


def test_without_api_keys_authentication_is_off() -> None:
    assert load_settings().api_keys() is None


@pytest.mark.parametrize("value", ["", " ", ",", " , ", ",,,"])
def test_api_keys_set_but_empty_are_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    message = configuration_error(monkeypatch, "PAYMENT_API_KEYS", value)

    assert "PAYMENT_API_KEYS" in message
    assert "no key" in message


@pytest.mark.parametrize(
    "value",
    ["s3cr3t-15-chars", "key-aaaaaaaaaaaaaaaa,s3cr3t-15-chars", " s3cr3t-15-chars ,"],
    ids=["alone", "after-a-good-key", "padded"],
)
def test_an_api_key_under_16_characters_is_refused_without_showing_the_keys(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    assert len("s3cr3t-15-chars") == 15

    message = configuration_error(monkeypatch, "PAYMENT_API_KEYS", value)

    assert "PAYMENT_API_KEYS" in message
    assert "16" in message
    assert "s3cr3t" not in message
    assert "key-aaaa" not in message


def test_the_settings_never_show_the_api_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYMENT_API_KEYS", "s3cr3t-key-0123456789")

    settings = load_settings()

    assert "s3cr3t" not in repr(settings)
    assert "s3cr3t" not in str(settings)


def test_the_shutdown_timeout_defaults_to_20_seconds() -> None:
    assert load_settings().payment_shutdown_timeout_seconds == 20


@pytest.mark.parametrize("seconds", [1, 45, 3600])
def test_a_shutdown_timeout_of_1_second_to_an_hour_is_read(
    monkeypatch: pytest.MonkeyPatch, seconds: int
) -> None:
    monkeypatch.setenv("PAYMENT_SHUTDOWN_TIMEOUT_SECONDS", str(seconds))

    assert load_settings().payment_shutdown_timeout_seconds == seconds


@pytest.mark.parametrize("value", ["0", "-1", "3601", "soon", "1.5"])
def test_a_bad_shutdown_timeout_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    message = configuration_error(monkeypatch, "PAYMENT_SHUTDOWN_TIMEOUT_SECONDS", value)

    assert "PAYMENT_SHUTDOWN_TIMEOUT_SECONDS" in message


def test_the_list_above_is_every_setting() -> None:
    assert set(SETTING_VARIABLES) == {name.upper() for name in Settings.model_fields}


@pytest.mark.parametrize(
    ("value", "expected"), [("true", True), ("1", True), ("false", False), ("0", False)]
)
def test_transaction_pooling_is_off_unless_set(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: bool
) -> None:
    assert load_settings().payment_db_transaction_pooling is False
    monkeypatch.setenv("PAYMENT_DB_TRANSACTION_POOLING", value)

    assert load_settings().payment_db_transaction_pooling is expected
