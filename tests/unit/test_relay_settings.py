"""The settings of the events' delivery: webhooks, RabbitMQ and the relay (SPEC §3.8)."""

from __future__ import annotations

import pytest

from payment.adapters.settings import ConfigurationError, load_settings
from tests.unit.test_settings import SETTING_VARIABLES, configuration_error


@pytest.fixture(autouse=True)
def empty_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in SETTING_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
        monkeypatch.delenv(variable.lower(), raising=False)


def test_by_default_no_destination_is_set_and_the_relay_has_the_documented_defaults() -> None:
    settings = load_settings()

    assert settings.webhook_urls() == []
    assert settings.payment_webhook_secret is None
    assert settings.payment_rabbitmq_url is None
    assert settings.payment_rabbitmq_exchange == "payment.events"
    assert settings.payment_webhook_timeout_seconds == 5
    assert (
        settings.payment_relay_batch_size,
        settings.payment_relay_poll_interval_ms,
        settings.payment_relay_lease_seconds,
        settings.payment_relay_max_attempts,
        settings.payment_relay_backoff_base_ms,
        settings.payment_relay_backoff_max_seconds,
        settings.payment_outbox_retention_hours,
        settings.payment_relay_port,
    ) == (100, 500, 60, 25, 1000, 3600, 168, 8005)


def test_webhook_urls_are_split_on_commas_and_stripped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "PAYMENT_WEBHOOK_URLS", " https://shop.example/hooks , http://10.0.0.5:8080/e,"
    )
    monkeypatch.setenv("PAYMENT_WEBHOOK_SECRET", "whsec-0123456789")

    assert load_settings().webhook_urls() == [
        "https://shop.example/hooks",
        "http://10.0.0.5:8080/e",
    ]


@pytest.mark.parametrize(
    ("urls", "why"),
    [
        ("ftp://shop.example/hooks", "http"),
        ("shop.example/hooks", "http"),
        ("https:///hooks", "no host"),
        ("https://shop.example:port/hooks", "not a URL"),
        ("https://ok.example/h,mailto:x@shop.example", "number 2"),
        (" , ", "no URL"),
    ],
)
def test_a_webhook_url_that_is_not_http_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, urls: str, why: str
) -> None:
    monkeypatch.setenv("PAYMENT_WEBHOOK_SECRET", "whsec-0123456789")

    message = configuration_error(monkeypatch, "PAYMENT_WEBHOOK_URLS", urls)

    assert "PAYMENT_WEBHOOK_URLS" in message
    assert why in message


def test_a_webhook_url_with_credentials_is_refused_without_showing_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PAYMENT_WEBHOOK_SECRET", "whsec-0123456789")

    message = configuration_error(
        monkeypatch, "PAYMENT_WEBHOOK_URLS", "https://shop:s3cr3tpw@shop.example/hooks"
    )

    assert "credentials" in message
    assert "s3cr3tpw" not in message


def test_webhook_urls_without_a_secret_are_refused_naming_the_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = configuration_error(monkeypatch, "PAYMENT_WEBHOOK_URLS", "https://shop.example/h")

    assert "PAYMENT_WEBHOOK_SECRET" in message
    assert "required" in message


def test_an_empty_webhook_secret_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYMENT_WEBHOOK_URLS", "https://shop.example/h")

    message = configuration_error(monkeypatch, "PAYMENT_WEBHOOK_SECRET", "  ")

    assert "PAYMENT_WEBHOOK_SECRET" in message


def test_the_settings_never_show_the_webhook_secret_nor_the_broker_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PAYMENT_WEBHOOK_URLS", "https://shop.example/h")
    monkeypatch.setenv("PAYMENT_WEBHOOK_SECRET", "whsec-s3cr3t")
    monkeypatch.setenv("PAYMENT_RABBITMQ_URL", "amqp://payer:s3cr3tpw@broker:5672/")

    settings = load_settings()

    assert "s3cr3t" not in repr(settings)
    assert "s3cr3t" not in str(settings)
    assert settings.payment_webhook_secret is not None
    assert settings.payment_webhook_secret.get_secret_value() == "whsec-s3cr3t"


@pytest.mark.parametrize("url", ["http://broker:5672/", "s3cr3tpw", "amqp:///vhost"])
def test_a_rabbitmq_url_that_is_not_amqp_is_refused_without_showing_it(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    message = configuration_error(monkeypatch, "PAYMENT_RABBITMQ_URL", url)

    assert "PAYMENT_RABBITMQ_URL" in message
    assert "s3cr3tpw" not in message


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PAYMENT_RELAY_BATCH_SIZE", "0"),
        ("PAYMENT_RELAY_BATCH_SIZE", "many"),
        ("PAYMENT_RELAY_POLL_INTERVAL_MS", "0"),
        ("PAYMENT_RELAY_LEASE_SECONDS", "0"),
        ("PAYMENT_RELAY_MAX_ATTEMPTS", "0"),
        ("PAYMENT_RELAY_BACKOFF_BASE_MS", "-1"),
        ("PAYMENT_RELAY_BACKOFF_MAX_SECONDS", "0"),
        ("PAYMENT_OUTBOX_RETENTION_HOURS", "0"),
        ("PAYMENT_RELAY_PORT", "70000"),
        ("PAYMENT_WEBHOOK_TIMEOUT_SECONDS", "0"),
        ("PAYMENT_RABBITMQ_EXCHANGE", ""),
    ],
)
def test_a_bad_relay_setting_is_refused_naming_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(ConfigurationError, match=variable):
        load_settings()
