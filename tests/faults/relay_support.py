"""The relay as a real process (`payment-service relay`), payments made through the use case on
the service's own unit of work, and what the webhook receiver got."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
from pydantic import SecretStr
from sqlalchemy import Engine, text

from payment.adapters.clock import SystemClock
from payment.adapters.settings import Settings
from payment.adapters.sqlalchemy.engine import build_async_engine, session_settings
from payment.adapters.sqlalchemy.unit_of_work import SqlAlchemyUnitOfWork
from payment.domain.attempts import Outcome
from tests.e2e.server import HOST, free_port
from tests.faults.load import wait_until
from tests.support.attempts import pay
from tests.support.webhook_receiver import ReceivedRequest, WebhookReceiver

START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0
SECRET = "whsec-relay-fault-tests"
_INHERITED_PREFIXES = ("PAYMENT_", "ORDER_DB_")

QUICK_RELAY = {
    "PAYMENT_RELAY_POLL_INTERVAL_MS": "50",
    "PAYMENT_RELAY_BACKOFF_BASE_MS": "50",
    "PAYMENT_RELAY_BACKOFF_MAX_SECONDS": "1",
    "PAYMENT_WEBHOOK_TIMEOUT_SECONDS": "2",
    "PAYMENT_LOG_FORMAT": "json",
}
"""A relay that retries within the length of a test."""


@dataclass
class RunningRelay:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def lines(self, message: str) -> list[dict[str, object]]:
        """The JSON log lines whose message is ``message``."""
        found = []
        for line in self.output().splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("message") == message:
                    found.append(record)
        return found

    def probe(self, path: str) -> int | None:
        """The status of ``path`` on the relay's port; None when it does not answer."""
        try:
            return httpx2.get(f"http://{HOST}:{self.port}{path}", timeout=3.0).status_code
        except httpx2.TransportError:
            return None

    def stop(self) -> int:
        """SIGTERM, and the exit status (SIGKILL after a bound)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("the relay did not stop on SIGTERM") from None

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)


def _command() -> list[str]:
    script = Path(sys.executable).parent / "payment-service"
    if script.exists():
        return [str(script), "relay"]
    return [sys.executable, "-m", "payment.entrypoints.cli", "relay"]


def relay_environment(settings: Mapping[str, str], port: int) -> dict[str, str]:
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(_INHERITED_PREFIXES) and name != "DATABASE_URL"
    }
    environment.update(
        {
            "PAYMENT_HOST": HOST,
            "PAYMENT_RELAY_PORT": str(port),
            "PAYMENT_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            **QUICK_RELAY,
        }
    )
    environment.update(settings)
    return environment


@contextmanager
def running_relay(
    settings: Mapping[str, str], log_dir: Path, *, name: str = "relay"
) -> Iterator[RunningRelay]:
    """`payment-service relay` with ``settings``, up (its /livez answers) until the block ends,
    then stopped with SIGTERM (or killed, if the test killed it not already)."""
    port = free_port()
    log = log_dir / f"{name}-{port}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            _command(),
            env=relay_environment(settings, port),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    relay = RunningRelay(process, port, log)
    try:
        wait_until(
            lambda: process.poll() is not None or relay.probe("/livez") == 200,
            timeout=START_TIMEOUT_SECONDS,
            what=lambda: f"the relay's /livez\n{relay.output()}",
        )
        if process.poll() is not None:
            raise AssertionError(f"the relay exited with {process.returncode}:\n{relay.output()}")
        yield relay
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                relay.kill()


def webhook_settings(database_url: str, receiver: WebhookReceiver, **more: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "PAYMENT_WEBHOOK_URLS": receiver.url,
        "PAYMENT_WEBHOOK_SECRET": SECRET,
        **more,
    }


def pay_orders(database_url: str, orders: Sequence[tuple[int, str]], *, lanes: int = 8) -> None:
    """Pay each (order id, total) through the use case on the service's unit of work, as the
    HTTP route does, ``lanes`` at a time; AssertionError unless each is paid."""
    asyncio.run(_pay_orders(database_url, orders, lanes))


async def _pay_orders(database_url: str, orders: Sequence[tuple[int, str]], lanes: int) -> None:
    settings = Settings(database_url=SecretStr(database_url), payment_db_pool_size=lanes)
    engine = build_async_engine(settings)
    clock = SystemClock()
    session = session_settings(settings)
    queue = list(reversed(orders))

    async def lane() -> None:
        while queue:
            order_id, total = queue.pop()
            reply = await pay(
                order_id,
                total,
                uow=SqlAlchemyUnitOfWork(engine, session=session),
                clock=clock,
            )
            assert reply.outcome is Outcome.PAID, (order_id, reply.outcome)

    try:
        await asyncio.gather(*(lane() for _ in range(lanes)))
    finally:
        await engine.dispose()


@dataclass(frozen=True, slots=True)
class Delivery:
    event_id: str
    subject: str
    body: bytes


@dataclass
class Received:
    """What the receiver got, in the order it arrived."""

    deliveries: list[Delivery] = field(default_factory=list)
    cut_short: int = 0
    """Requests whose body never arrived whole (a relay killed while sending)."""

    @classmethod
    def of(cls, requests: Sequence[ReceivedRequest]) -> Received:
        received = cls()
        for request in requests:
            declared = int(request.header("Content-Length") or 0)
            if len(request.body) < declared or not request.body:
                received.cut_short += 1
                continue
            event = json.loads(request.body)
            received.deliveries.append(Delivery(event["id"], event["subject"], request.body))
        return received

    def ids(self) -> set[str]:
        return {d.event_id for d in self.deliveries}

    def duplicates(self) -> int:
        return len(self.deliveries) - len(self.ids())

    def bodies_by_id(self) -> dict[str, set[bytes]]:
        bodies: dict[str, set[bytes]] = {}
        for delivery in self.deliveries:
            bodies.setdefault(delivery.event_id, set()).add(delivery.body)
        return bodies

    def first_arrivals(self) -> dict[str, int]:
        first: dict[str, int] = {}
        for index, delivery in enumerate(self.deliveries):
            first.setdefault(delivery.event_id, index)
        return first


@dataclass(frozen=True, slots=True)
class StoredEvent:
    position: int
    event_id: str
    subject: str
    status: str


def stored_events(engine: Engine) -> list[StoredEvent]:
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT position, event_id::text, subject, status FROM outbox_events"
                " ORDER BY position"
            )
        )
        return [StoredEvent(*row) for row in rows]


def undelivered(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                text("SELECT count(*) FROM outbox_events WHERE status <> 'delivered'")
            ).scalar_one()
        )


def assert_every_event_received_in_order(engine: Engine, received: Received) -> None:
    """Every event of the outbox delivered and received at least once; a duplicate only ever
    with the same id and the same bytes; per order, each event first received after the one
    written before it."""
    events = stored_events(engine)
    assert events, "the outbox holds events"
    assert [e for e in events if e.status != "delivered"] == []
    assert received.ids() == {e.event_id for e in events}
    assert all(len(bodies) == 1 for bodies in received.bodies_by_id().values())
    first = received.first_arrivals()
    by_subject: dict[str, list[StoredEvent]] = {}
    for event in events:
        by_subject.setdefault(event.subject, []).append(event)
    for subject, written in by_subject.items():
        arrivals = [first[e.event_id] for e in written]
        assert arrivals == sorted(arrivals), f"order {subject}: events out of order"
