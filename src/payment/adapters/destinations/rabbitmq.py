"""RabbitMQ: each event published to a durable topic exchange, for shops that listen on a
broker rather than answer webhooks.

The message is the CloudEvent in the AMQP binding's structured mode: the body as stored in the
outbox, ``content_type`` ``application/cloudevents+json``, ``message_id`` the event id (the
consumers' deduplication key), ``type`` and routing key the event type (``payment.succeeded``),
``timestamp`` when it was written, persistent (delivery mode 2). Publisher confirms are on: an
event counts as delivered only once the broker has acknowledged it, so it has reached every
queue bound to the exchange (durable ones: on disk). A message no queue is bound for is
dropped by the broker (``mandatory`` is off): an exchange is a broadcast, and a consumer that
was not listening catches up with ``GET /events``.

The connection is aio-pika's robust one, which reopens itself after a loss between deliveries;
a delivery that fails drops it, and the next delivery connects afresh, so a broker that comes
back is used again at the relay's next try whatever state the old connection was left in.
"""

from __future__ import annotations

import asyncio

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractRobustConnection

from payment.adapters.cloudevents import CONTENT_TYPE as CONTENT_TYPE
from payment.domain.delivery import DeliveryFailed, OutboxEvent

_BROKER_ERRORS = (*aio_pika.exceptions.CONNECTION_EXCEPTIONS, aio_pika.exceptions.DeliveryError)


class RabbitMQDestination:
    """A topic exchange on one broker."""

    name = "rabbitmq"

    def __init__(
        self,
        url: str,
        exchange: str = "payment.events",
        *,
        timeout_seconds: float = 5.0,
        reconnect_interval_seconds: float = 1.0,
    ) -> None:
        if not url.startswith(("amqp://", "amqps://")):
            raise ValueError("a RabbitMQ URL starts with amqp:// or amqps://")
        if not exchange:
            raise ValueError("the RabbitMQ exchange needs a name")
        if timeout_seconds <= 0:
            raise ValueError("the RabbitMQ timeout is a positive number of seconds")
        self.exchange_name = exchange
        self._url = url
        self._timeout = timeout_seconds
        self._reconnect_interval = reconnect_interval_seconds
        self._connection: AbstractRobustConnection | None = None
        self._exchange: AbstractExchange | None = None
        self._connecting = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"RabbitMQDestination(exchange={self.exchange_name!r})"

    async def deliver(self, event: OutboxEvent) -> None:
        connection: AbstractRobustConnection | None = None
        try:
            async with asyncio.timeout(self._timeout):
                connection, exchange = await self._connected()
                await exchange.publish(
                    _message(event), routing_key=event.type, mandatory=False, timeout=None
                )
        except TimeoutError:
            self._drop(connection)
            raise DeliveryFailed(f"not confirmed within {self._timeout:g} s") from None
        except aio_pika.exceptions.DeliveryError:
            raise DeliveryFailed("the broker refused the message") from None
        except aio_pika.exceptions.AMQPChannelError as error:
            # An exchange declared otherwise (another type, not durable), a missing permission.
            self._drop(connection)
            reason = f"the broker closed the channel ({type(error).__name__})"
            raise DeliveryFailed(reason) from None
        except _BROKER_ERRORS as error:
            self._drop(connection)
            # Texts from the client may quote the URL: only the kind of failure is kept.
            raise DeliveryFailed(f"broker unreachable ({type(error).__name__})") from None

    async def close(self) -> None:
        self._drop(self._connection)
        await asyncio.gather(*self._closing)

    async def _connected(self) -> tuple[AbstractRobustConnection, AbstractExchange]:
        async with self._connecting:
            if self._connection is None or self._exchange is None:
                connection = await aio_pika.connect_robust(
                    self._url,
                    timeout=self._timeout,
                    reconnect_interval=self._reconnect_interval,
                    client_properties={"connection_name": "payment-service relay"},
                )
                self._connection = connection
                try:
                    channel = await connection.channel(publisher_confirms=True)
                    self._exchange = await channel.declare_exchange(
                        self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
                    )
                except BaseException:  # cancelled by the timeout too: never left half open
                    self._drop(connection)
                    raise
            return self._connection, self._exchange

    def _drop(self, connection: AbstractRobustConnection | None) -> None:
        """Close ``connection`` if it is still the one in use: the next delivery reconnects."""
        if connection is None or connection is not self._connection:
            return
        self._connection = self._exchange = None
        # A broker that stopped answering would not answer the close either: the delivery
        # that failed returns at once, the close finishes (or times out) on its own.
        closing = asyncio.create_task(self._close_quietly(connection))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    async def _close_quietly(self, connection: AbstractRobustConnection) -> None:
        try:
            await asyncio.wait_for(connection.close(), timeout=self._timeout)
        except (TimeoutError, *_BROKER_ERRORS):
            pass  # it was failing already: what matters is that it is no longer used


def _message(event: OutboxEvent) -> aio_pika.Message:
    return aio_pika.Message(
        body=event.body.encode(),
        content_type=CONTENT_TYPE,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=event.event_id,
        type=event.type,
        timestamp=event.created_at,
        app_id="payment-service",
    )
