"""Publishing events to the RabbitMQ on this machine, directly and through a proxy that cuts
and stalls the link. Each test has an exchange and queues of its own, deleted after it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from pamqp.common import FieldTable

from payment.adapters.destinations.rabbitmq import RabbitMQDestination
from payment.domain.delivery import DeliveryFailed, OutboxEvent
from tests.support.rabbitmq import broker_address, require_broker
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.anyio

TIMEOUT_SECONDS = 1.0


def an_event(number: int = 1) -> OutboxEvent:
    event_id = str(uuid.uuid4())
    return OutboxEvent(
        position=number,
        event_id=event_id,
        type="payment.succeeded",
        subject=str(number),
        body=(
            f'{{"specversion":"1.0","id":"{event_id}","type":"payment.succeeded",'
            f'"subject":"{number}","data":{{"order_id":{number},"amount":"12.50"}}}}'
        ),
        created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )


@dataclass
class Broker:
    """The test's view of the broker: its own channel, exchange name and queues."""

    url: str
    exchange: str
    channel: AbstractChannel

    async def queue_bound_to(
        self, routing_key: str, arguments: FieldTable | None = None
    ) -> AbstractQueue:
        """A queue of this test's own bound to the exchange (declared here as the destination
        declares it, so that binding does not depend on who declared first)."""
        exchange = await self.channel.declare_exchange(
            self.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await self.channel.declare_queue(
            f"{self.exchange}.{uuid.uuid4().hex[:8]}",
            exclusive=True,
            arguments=arguments,
        )
        await queue.bind(exchange, routing_key)
        return queue


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    url = await require_broker()
    exchange = f"payment.test.{uuid.uuid4().hex[:12]}"
    connection = await aio_pika.connect(url, timeout=5)
    try:
        channel = await connection.channel()
        yield Broker(url, exchange, channel)
        cleanup = await connection.channel()
        await cleanup.exchange_delete(exchange)
    finally:
        await connection.close()  # the exclusive queues go with it


async def next_message(queue: AbstractQueue, timeout: float = 5.0) -> AbstractIncomingMessage:
    deadline = time.monotonic() + timeout
    while True:
        message = await queue.get(no_ack=True, fail=False)
        if message is not None:
            return message
        if time.monotonic() > deadline:
            raise AssertionError(f"no message in {queue.name} after {timeout} s")
        await asyncio.sleep(0.02)


@pytest.fixture
async def destination(broker: Broker) -> AsyncIterator[RabbitMQDestination]:
    destination = RabbitMQDestination(broker.url, broker.exchange, timeout_seconds=TIMEOUT_SECONDS)
    yield destination
    await destination.close()


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    with TcpProxy.to(*broker_address()) as proxy:
        yield proxy


def through(proxy: TcpProxy, url: str) -> str:
    """``url`` with the proxy in place of the broker."""
    host, port = broker_address()
    return url.replace(f"@{host}:{port}", f"@127.0.0.1:{proxy.port}", 1)


async def test_an_event_is_published_persistent_with_its_id_and_type(
    broker: Broker, destination: RabbitMQDestination
) -> None:
    queue = await broker.queue_bound_to("payment.succeeded")
    event = an_event()

    await destination.deliver(event)

    message = await next_message(queue)
    assert message.body == event.body.encode()
    assert message.message_id == event.event_id
    assert message.routing_key == "payment.succeeded"
    assert message.exchange == broker.exchange
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.content_type == "application/cloudevents+json"
    assert message.type == "payment.succeeded"
    assert message.timestamp == event.created_at


async def test_consumers_choose_events_by_routing_key(
    broker: Broker, destination: RabbitMQDestination
) -> None:
    payments = await broker.queue_bound_to("payment.*")
    refunds = await broker.queue_bound_to("refund.*")

    await destination.deliver(an_event())

    assert (await next_message(payments)).routing_key == "payment.succeeded"
    assert await refunds.get(no_ack=True, fail=False) is None


async def test_the_exchange_is_declared_durable_by_the_destination(
    broker: Broker, destination: RabbitMQDestination
) -> None:
    await destination.deliver(an_event())  # declares the exchange; nothing bound: dropped

    connection = await aio_pika.connect(broker.url, timeout=5)
    try:
        channel = await connection.channel()
        await channel.declare_exchange(
            broker.exchange, aio_pika.ExchangeType.TOPIC, durable=True, passive=True
        )
        with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed, match="durable"):
            await channel.declare_exchange(
                broker.exchange, aio_pika.ExchangeType.TOPIC, durable=False
            )
    finally:
        await connection.close()


async def test_a_message_the_broker_refuses_fails_the_delivery(
    broker: Broker, destination: RabbitMQDestination
) -> None:
    """A queue that is full and rejects publishes makes the broker nack: not delivered."""
    await broker.queue_bound_to("payment.#", {"x-max-length": 0, "x-overflow": "reject-publish"})

    with pytest.raises(DeliveryFailed, match="refused"):
        await destination.deliver(an_event())


async def test_an_exchange_declared_otherwise_fails_the_delivery_saying_why(
    broker: Broker, destination: RabbitMQDestination
) -> None:
    await broker.channel.declare_exchange(broker.exchange, aio_pika.ExchangeType.FANOUT)

    with pytest.raises(DeliveryFailed, match=r"closed the channel .*PreconditionFailed"):
        await destination.deliver(an_event())


async def test_a_broker_cut_off_fails_deliveries_until_it_is_back(
    broker: Broker, proxy: TcpProxy
) -> None:
    queue = await broker.queue_bound_to("payment.succeeded")
    destination = RabbitMQDestination(
        through(proxy, broker.url), broker.exchange, timeout_seconds=TIMEOUT_SECONDS
    )
    first, during, after = an_event(1), an_event(2), an_event(3)
    try:
        await destination.deliver(first)

        proxy.cut()
        started = time.monotonic()
        with pytest.raises(DeliveryFailed, match=r"unreachable|not confirmed"):
            await destination.deliver(during)
        assert time.monotonic() - started < TIMEOUT_SECONDS + 1.5
        with pytest.raises(DeliveryFailed, match="unreachable"):
            await destination.deliver(during)  # no broker to reconnect to: refused at once

        proxy.restore()
        await destination.deliver(after)  # the next delivery reconnects
    finally:
        await destination.close()

    received = [(await next_message(queue)).message_id for _ in range(2)]
    assert received == [first.event_id, after.event_id]
    assert await queue.get(no_ack=True, fail=False) is None


async def test_a_broker_that_stops_answering_fails_the_delivery_within_the_timeout(
    broker: Broker, proxy: TcpProxy
) -> None:
    destination = RabbitMQDestination(
        through(proxy, broker.url), broker.exchange, timeout_seconds=TIMEOUT_SECONDS
    )
    try:
        await destination.deliver(an_event(1))

        proxy.stall()
        started = time.monotonic()
        with pytest.raises(DeliveryFailed, match=r"not confirmed within 1 s"):
            await destination.deliver(an_event(2))
        assert time.monotonic() - started < TIMEOUT_SECONDS + 1.5

        proxy.restore()
        await destination.deliver(an_event(3))
    finally:
        await destination.close()


async def test_an_unreachable_broker_fails_without_revealing_the_password() -> None:
    destination = RabbitMQDestination(
        "amqp://payment:s3cr3t-pw@127.0.0.1:1/", "payment.events", timeout_seconds=TIMEOUT_SECONDS
    )
    try:
        with pytest.raises(DeliveryFailed) as failure:
            await destination.deliver(an_event())
    finally:
        await destination.close()

    assert "s3cr3t" not in str(failure.value)
    assert "s3cr3t" not in repr(destination)
    assert destination.name == "rabbitmq"


@pytest.mark.parametrize(
    ("url", "exchange", "timeout"),
    [
        ("http://127.0.0.1:5672/", "payment.events", 1.0),
        ("amqp://127.0.0.1:5672/", "", 1.0),
        ("amqp://127.0.0.1:5672/", "payment.events", 0.0),
    ],
)
def test_a_destination_that_cannot_work_is_refused_when_built(
    url: str, exchange: str, timeout: float
) -> None:
    with pytest.raises(ValueError, match="RabbitMQ"):
        RabbitMQDestination(url, exchange, timeout_seconds=timeout)
