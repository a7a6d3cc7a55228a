"""The RabbitMQ broker the tests publish to: the one on this machine (or PAYMENT_TEST_RABBITMQ_URL).

Tests that need it run whenever it answers. When it does not, they are skipped, saying why;
unless PAYMENT_TEST_REQUIRE_RABBITMQ=1 (as CI sets), where a missing broker fails them.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import aio_pika
import pytest

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"


def broker_url() -> str:
    return os.environ.get("PAYMENT_TEST_RABBITMQ_URL", DEFAULT_URL)


def broker_address() -> tuple[str, int]:
    parts = urlsplit(broker_url())
    return parts.hostname or "127.0.0.1", parts.port or 5672


_absent: dict[str, str] = {}
"""Why each broker URL tried did not answer: asked once per run, not once per test."""


async def require_broker() -> str:
    """The broker's URL once a connection to it succeeded; skip (or fail, when required)."""
    url = broker_url()
    if url not in _absent:
        try:
            connection = await aio_pika.connect(url, timeout=3)
        except (TimeoutError, *aio_pika.exceptions.CONNECTION_EXCEPTIONS) as error:
            host, port = broker_address()
            _absent[url] = f"no RabbitMQ answers at {host}:{port} ({type(error).__name__})"
        else:
            await connection.close()
            return url
    reason = _absent[url]
    if os.environ.get("PAYMENT_TEST_REQUIRE_RABBITMQ") == "1":
        pytest.fail(f"{reason}, and PAYMENT_TEST_REQUIRE_RABBITMQ=1 requires one")
    pytest.skip(f"{reason}: set PAYMENT_TEST_RABBITMQ_URL, or start one, to run this test")
