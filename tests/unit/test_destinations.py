"""Which destinations the settings configure, and the console one of ``payment-service dev``."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from payment.adapters.destinations import (
    ConsoleDestination,
    RabbitMQDestination,
    WebhookDestination,
    build_destinations,
)
from payment.adapters.settings import Settings
from payment.domain.delivery import Destination, OutboxEvent

pytestmark = pytest.mark.anyio

EVENT = OutboxEvent(
    position=7,
    event_id="5f0c6f1e-8a53-4c55-9d47-6f3f0a3b8c21",
    type="payment.succeeded",
    subject="42",
    body='{"specversion":"1.0","id":"5f0c6f1e-8a53-4c55-9d47-6f3f0a3b8c21"}',
    created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
)


async def close_all(destinations: list[Destination]) -> None:
    for destination in destinations:
        await destination.close()


async def test_nothing_configured_builds_no_destination() -> None:
    assert build_destinations(Settings(payment_webhook_urls=None, payment_rabbitmq_url=None)) == []


async def test_each_webhook_url_then_rabbitmq_becomes_a_destination() -> None:
    settings = Settings(
        payment_webhook_urls="https://shop.example/hooks, http://127.0.0.1:9000/in?tenant=7",
        payment_webhook_secret=SecretStr("whsec-0123456789"),
        payment_webhook_timeout_seconds=2.5,
        payment_rabbitmq_url=SecretStr("amqp://payment:pw@rabbitmq:5672/"),
        payment_rabbitmq_exchange="shop.events",
    )

    destinations = build_destinations(settings)
    try:
        kinds = [type(d) for d in destinations]
        names = [d.name for d in destinations]
    finally:
        await close_all(destinations)

    assert kinds == [WebhookDestination, WebhookDestination, RabbitMQDestination]
    assert names[0] == "webhook:https://shop.example/hooks"
    assert names[1].startswith("webhook:http://127.0.0.1:9000/in#")
    assert "tenant" not in names[1]
    assert names[2] == "rabbitmq"
    assert isinstance(destinations[2], RabbitMQDestination)
    assert destinations[2].exchange_name == "shop.events"


async def test_the_console_comes_first_when_asked_for() -> None:
    settings = Settings(payment_rabbitmq_url=SecretStr("amqp://guest:guest@127.0.0.1:5672/"))

    destinations = build_destinations(settings, console=True)
    await close_all(destinations)

    assert [d.name for d in destinations] == ["console", "rabbitmq"]


async def test_the_console_prints_what_it_would_deliver() -> None:
    stream = io.StringIO()
    console = ConsoleDestination(stream)

    await console.deliver(EVENT)
    await console.close()

    head, body = stream.getvalue().splitlines()
    assert EVENT.type in head
    assert EVENT.event_id in head
    assert "order 42" in head
    assert body == EVENT.body
