"""``payment-service relay``: the process that delivers the outbox's events (SPEC §3.8).

It runs the relay (``payment.domain.relay``) on the PostgreSQL outbox with the configured
destinations until SIGTERM or SIGINT: then it finishes the deliveries under way (for at most
PAYMENT_SHUTDOWN_TIMEOUT_SECONDS), gives back the leases of the events it did not start and
exits 0; a second signal stops it at once. It serves /livez, /readyz and /metrics on
PAYMENT_RELAY_PORT, purges delivered events past their retention now and then, and writes one
log line per delivery, failure and dead letter.

A database that goes away is waited for (the relay logs it and asks again, less and less
often, up to every few seconds): the process never exits for it. Several relays may run at
once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from contextlib import suppress
from datetime import timedelta

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)

from payment.adapters.logging import configure_logging
from payment.adapters.settings import Settings
from payment.adapters.sqlalchemy.outbox import SqlOutboxStore
from payment.bootstrap import destinations, outbox_access
from payment.domain.delivery import Backoff, Destination, OutboxEvent
from payment.domain.errors import StorageUnavailable
from payment.domain.relay import Relay, RelayPolicy

logger = logging.getLogger("payment.relay")

PURGE_EVERY_SECONDS = 600.0
"""How often a relay purges delivered events past their retention (the first time at start)."""
RELAY_POOL_SIZE = 4
"""Connections a relay keeps: its claims and records go one after the other; the probes and
the purge take the others."""
PROBE_READ_TIMEOUT_SECONDS = 5.0
MAX_PROBE_HEAD_BYTES = 8192


def relay_policy(settings: Settings) -> RelayPolicy:
    return RelayPolicy(
        batch_size=settings.payment_relay_batch_size,
        lease=timedelta(seconds=settings.payment_relay_lease_seconds),
        max_attempts=settings.payment_relay_max_attempts,
        backoff=Backoff(
            base=timedelta(milliseconds=settings.payment_relay_backoff_base_ms),
            cap=timedelta(seconds=settings.payment_relay_backoff_max_seconds),
        ),
        poll_interval=timedelta(milliseconds=settings.payment_relay_poll_interval_ms),
    )


class RelayMetrics:
    """The relay's metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.pending = Gauge(
            "payment_outbox_pending",
            "Events in the outbox waiting to be delivered.",
            registry=self.registry,
        )
        self.oldest_pending_age = Gauge(
            "payment_outbox_oldest_pending_age_seconds",
            "How long the oldest event waiting to be delivered has waited (0 when none waits).",
            registry=self.registry,
        )
        self.dead = Gauge(
            "payment_outbox_dead",
            "Events given up on after PAYMENT_RELAY_MAX_ATTEMPTS failed deliveries.",
            registry=self.registry,
        )
        self.delivered = Counter(
            "payment_outbox_delivered",
            "Events a destination took, by destination.",
            ("destination",),
            registry=self.registry,
        )
        self.failed = Counter(
            "payment_outbox_failed",
            "Deliveries a destination did not take, by destination.",
            ("destination",),
            registry=self.registry,
        )

    async def refresh(self, store: SqlOutboxStore) -> None:
        """The gauges from the outbox as it is now; as they were when it cannot be read."""
        try:
            stats = await store.stats()
        except StorageUnavailable:
            return
        self.pending.set(stats.pending)
        age = stats.oldest_pending_age
        self.oldest_pending_age.set(0 if age is None else age.total_seconds())
        self.dead.set(stats.dead)


class LoggingObserver:
    """The relay's log lines and counters. Fields only, never an event's body."""

    def __init__(self, metrics: RelayMetrics) -> None:
        self._metrics = metrics

    def delivered(self, event: OutboxEvent, destination: str) -> None:
        self._metrics.delivered.labels(destination).inc()
        logger.info(
            "event delivered",
            extra={"fields": {**_described(event, event.attempts + 1), "destination": destination}},
        )

    def failed(self, event: OutboxEvent, destination: str, error: str, attempts: int) -> None:
        self._metrics.failed.labels(destination).inc()
        logger.warning(
            "event delivery failed",
            extra={
                "fields": {
                    **_described(event, attempts),
                    "destination": destination,
                    "error": error,
                }
            },
        )

    def dead(self, event: OutboxEvent, attempts: int, error: str) -> None:
        logger.error(
            "event dead-lettered: list with `payment-service events dead`, re-queue with"
            " `payment-service events requeue`",
            extra={"fields": {**_described(event, attempts), "error": error}},
        )

    def store_unavailable(self, error: StorageUnavailable, retry_in: float) -> None:
        logger.warning(
            "the outbox cannot be reached; trying again",
            extra={"fields": {"error": str(error) or "unavailable", "retry_in_s": retry_in}},
        )

    def store_back(self) -> None:
        logger.info("the outbox answers again")


def _described(event: OutboxEvent, attempts: int) -> dict[str, object]:
    return {
        "event_id": event.event_id,
        "type": event.type,
        "subject": event.subject,
        "attempts": attempts,
    }


class ProbeServer:
    """/livez, /readyz and /metrics over plain HTTP/1.1, one request per connection: enough
    for a kubelet and a Prometheus scraper, and nothing to configure."""

    def __init__(
        self,
        store: SqlOutboxStore,
        ready_store: SqlOutboxStore,
        metrics: RelayMetrics,
        stopping: asyncio.Event,
    ) -> None:
        self._store = store
        self._ready_store = ready_store
        self._metrics = metrics
        self._stopping = stopping
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(
            self._serve, host, port, limit=MAX_PROBE_HEAD_BYTES
        )

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with suppress(Exception):
                await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(PROBE_READ_TIMEOUT_SECONDS):
                head = await reader.readuntil(b"\r\n\r\n")
            method, _, rest = head.decode("latin-1").partition(" ")
            path = rest.partition(" ")[0].partition("?")[0]
            status, content_type, body = await self._answer(method, path)
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}.get(
                status, "Service Unavailable"
            )
            writer.write(
                (
                    f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                ).encode("latin-1")
                + (b"" if method == "HEAD" else body)
            )
            await writer.drain()
        except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            with suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, method: str, path: str) -> tuple[int, str, bytes]:
        text = "text/plain; charset=utf-8"
        if method not in ("GET", "HEAD"):
            return 405, text, b"method not allowed\n"
        if path == "/livez":
            return 200, text, b"ok\n"
        if path == "/readyz":
            if self._stopping.is_set():
                return 503, text, b"stopping\n"
            if await self._ready_store.ready():
                return 200, text, b"ready\n"
            return 503, text, b"the database does not answer\n"
        if path == "/metrics":
            await self._metrics.refresh(self._store)
            return 200, CONTENT_TYPE_LATEST, generate_latest(self._metrics.registry)
        return 404, text, b"not found\n"


async def run_relay(
    settings: Settings,
    destinations: Sequence[Destination],
    stop: asyncio.Event,
    *,
    probes: bool = True,
    grace_seconds: float | None = None,
    started: asyncio.Event | None = None,
) -> None:
    """Deliver the outbox's events to ``destinations`` until ``stop`` is set; then let the
    deliveries under way end (within ``grace_seconds``, PAYMENT_SHUTDOWN_TIMEOUT_SECONDS by
    default) and return. With ``probes``, serve /livez, /readyz and /metrics on
    PAYMENT_RELAY_PORT (``OSError`` when it is taken). The destinations are closed at the end.
    ``started`` is set once the relay works (and its port listens)."""
    outbox = outbox_access(settings, pool_size=RELAY_POOL_SIZE)
    engine, store, ready_store = outbox.engine, outbox.store, outbox.ready_store
    metrics = RelayMetrics()
    relay = Relay(store, destinations, relay_policy(settings), observer=LoggingObserver(metrics))
    server = ProbeServer(store, ready_store, metrics, stop) if probes else None
    grace = settings.payment_shutdown_timeout_seconds if grace_seconds is None else grace_seconds
    try:
        if server is not None:
            await server.start(settings.payment_host, settings.payment_relay_port)
        started_fields: dict[str, object] = {
            "destinations": ", ".join(d.name for d in destinations),
            "batch_size": relay.policy.batch_size,
            "lease_s": relay.policy.lease.total_seconds(),
        }
        if server is not None:
            started_fields["port"] = server.port
        logger.info("relay started", extra={"fields": started_fields})
        if started is not None:
            started.set()
        housekeeping = asyncio.create_task(_purge_now_and_then(store, settings, stop))
        work = asyncio.create_task(relay.run(stop))
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                logger.info(
                    "relay stopping: finishing the deliveries under way",
                    extra={"fields": {"grace_s": grace}},
                )
                done, _ = await asyncio.wait({work}, timeout=grace)
                if not done:
                    logger.warning(
                        "relay stopped before its deliveries ended; their leases run out"
                    )
            await _outcome(work)
        finally:
            for task in (work, stopping, housekeeping):
                task.cancel()
            await asyncio.gather(work, stopping, housekeeping, return_exceptions=True)
    finally:
        if server is not None:
            await server.close()
        for destination in destinations:
            with suppress(Exception):
                await destination.close()
        await engine.dispose()
        logger.info("relay stopped")


async def _outcome(work: asyncio.Task[None]) -> None:
    """Raise what made the relay end, if it ended by an error."""
    if work.done() and not work.cancelled():
        work.result()


async def _purge_now_and_then(
    store: SqlOutboxStore, settings: Settings, stop: asyncio.Event
) -> None:
    retention = timedelta(hours=settings.payment_outbox_retention_hours)
    while not stop.is_set():
        try:
            purged = await store.purge_delivered(retention)
        except StorageUnavailable:
            purged = 0  # the relay's own loop says so; the next round purges
        if purged:
            logger.info("purged delivered events", extra={"fields": {"events": purged}})
        with suppress(TimeoutError):
            async with asyncio.timeout(PURGE_EVERY_SECONDS):
                await stop.wait()


def relay_command(settings: Settings) -> int:
    """``payment-service relay``: exit 0 after a graceful stop, 2 when no destination is set,
    1 when its port cannot be listened on."""
    configured = destinations(settings)
    if not configured:
        sys.stderr.write(
            "payment-service: the relay has nowhere to deliver events: set PAYMENT_WEBHOOK_URLS"
            " (with PAYMENT_WEBHOOK_SECRET) or PAYMENT_RABBITMQ_URL\n"
        )
        return 2
    configure_logging(settings.payment_log_level, settings.payment_log_format)
    try:
        return asyncio.run(_relay_until_signalled(settings, configured))
    except OSError as error:
        sys.stderr.write(
            f"payment-service: the relay cannot listen on port {settings.payment_relay_port}"
            f" (PAYMENT_RELAY_PORT): {error.strerror or error}\n"
        )
        return 1


async def _relay_until_signalled(settings: Settings, destinations: Sequence[Destination]) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    signals: list[int] = []

    def on_signal(signum: int) -> None:
        signals.append(signum)
        if len(signals) == 1:
            logger.info(
                "relay told to stop", extra={"fields": {"signal": signal.Signals(signum).name}}
            )
            stop.set()
        elif main is not None:
            main.cancel()  # a second signal: at once

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await run_relay(settings, destinations, stop)
    except asyncio.CancelledError:
        if len(signals) < 2:
            raise
        return 128 + signals[-1]
    return 0


class RelayThread:
    """The relay on an event loop of its own, in a thread, beside a server that owns the main
    thread (``payment-service dev``)."""

    def __init__(self, settings: Settings, destinations: Sequence[Destination]) -> None:
        self._settings = settings
        self._destinations = destinations
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="relay", daemon=True)
        self.error: BaseException | None = None

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        self._ready.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Tell the relay to stop, and wait for it (at most ``timeout`` seconds)."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with suppress(RuntimeError):  # its loop has ended already
                loop.call_soon_threadsafe(stop.set)
        self._thread.join(timeout)

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as error:  # kept for the owner; the thread ends with it
            self.error = error
            logger.exception("the relay ended by an error")
        finally:
            self._ready.set()

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._loop.call_soon(self._ready.set)
        await run_relay(
            self._settings, self._destinations, self._stop, probes=False, grace_seconds=5.0
        )


def start_dev_relay(settings: Settings) -> RelayThread:
    """The relay of ``payment-service dev``: every event printed on standard output, as it
    would be delivered, a moment after its payment. ``stop()`` it before the database."""
    relay = RelayThread(settings, destinations(settings, console=True))
    relay.start()
    return relay
