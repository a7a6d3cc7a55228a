"""Where the relay delivers events: webhook subscribers, a RabbitMQ exchange, or (for
``payment-service dev``) the console. Each is a ``payment.domain.delivery.Destination``."""

from __future__ import annotations

from payment.adapters.destinations.console import ConsoleDestination
from payment.adapters.destinations.rabbitmq import RabbitMQDestination
from payment.adapters.destinations.webhook import (
    SharedHttpClient,
    TraceInjector,
    WebhookDestination,
)
from payment.adapters.settings import Settings
from payment.adapters.tracing import inject_trace_context
from payment.domain.delivery import Destination

__all__ = [
    "ConsoleDestination",
    "RabbitMQDestination",
    "WebhookDestination",
    "build_destinations",
]


def build_destinations(
    settings: Settings,
    *,
    console: bool = False,
    inject_trace: TraceInjector | None = inject_trace_context,
) -> list[Destination]:
    """The destinations the settings configure: one per webhook URL (sharing one HTTP client),
    then RabbitMQ when its URL is set; the console first when asked. Empty when none is set.
    Nothing is connected here: each destination connects on its first delivery. Webhook
    requests carry the current trace's headers (nothing while tracing is off)."""
    destinations: list[Destination] = [ConsoleDestination()] if console else []
    urls = settings.webhook_urls()
    if urls:
        if settings.payment_webhook_secret is None:  # the settings refuse this already
            raise ValueError("PAYMENT_WEBHOOK_SECRET is required when PAYMENT_WEBHOOK_URLS is set")
        secret = settings.payment_webhook_secret.get_secret_value()
        client = SharedHttpClient()
        destinations.extend(
            WebhookDestination(
                url,
                secret,
                timeout_seconds=settings.payment_webhook_timeout_seconds,
                client=client,
                inject_trace=inject_trace,
            )
            for url in urls
        )
    if settings.payment_rabbitmq_url is not None:
        destinations.append(
            RabbitMQDestination(
                settings.payment_rabbitmq_url.get_secret_value().strip(),
                settings.payment_rabbitmq_exchange,
            )
        )
    return destinations
