"""Every wait of a unit of work ends by its deadline (SPEC §3.6): a link gone silent, a lock
held longer, a pool with no connection free. The connection a statement was cut on is thrown
away, never given back to the pool; a write cut short is reported unconfirmed, and the retry
with its key pays once. Connections probe their TCP path; one order's payment waiting on a lock
holds one connection, and the order's other payments are answered at once."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from payment.adapters.clock import SystemClock
from payment.adapters.settings import Settings
from payment.adapters.sqlalchemy.engine import (
    build_async_engine,
    build_engine,
    session_settings,
)
from payment.adapters.sqlalchemy.unit_of_work import OrderGate, SqlAlchemyUnitOfWork
from payment.domain.attempts import Outcome
from payment.domain.errors import OrderBusy, StorageUnavailable, WriteUnconfirmed
from tests.integration.bounded import error_awaited_within
from tests.integration.conftest import service_settings
from tests.support.attempts import pay
from tests.support.orders import add_orders, broken_invariants
from tests.support.silent_link import SilenceableLink

pytestmark = pytest.mark.anyio

CLOCK = SystemClock()
DEADLINE_MS = 300
SLACK = 0.5
"""What a busy machine may add to a bound before a test calls it broken."""
NO_HANG_SECONDS = 10


@dataclass
class Service:
    """The request path's engine as the service builds it, with its deadline and gate."""

    engine: AsyncEngine
    settings: Settings
    gate: OrderGate
    invalidated: list[object]
    """The connections the pool was told to throw away."""

    def unit_of_work(self) -> SqlAlchemyUnitOfWork:
        return SqlAlchemyUnitOfWork(
            self.engine,
            session=session_settings(self.settings),
            deadline=self.settings.payment_request_deadline_ms / 1000,
            gate=self.gate,
        )

    @property
    def deadline(self) -> float:
        return self.settings.payment_request_deadline_ms / 1000

    @property
    def pool(self) -> QueuePool:
        pool = self.engine.pool
        assert isinstance(pool, QueuePool)
        return pool


@asynccontextmanager
async def service_on(url: URL, **settings: Any) -> AsyncIterator[Service]:
    built = service_settings(url, **{"payment_request_deadline_ms": DEADLINE_MS, **settings})
    service = Service(build_async_engine(built), built, OrderGate(), [])
    event.listen(
        service.engine.sync_engine,
        "invalidate",
        lambda dbapi_connection, record, error: service.invalidated.append(dbapi_connection),
    )
    try:
        yield service
    finally:
        await service.engine.dispose()


@pytest.fixture
def link(clean_database: Engine) -> Iterator[SilenceableLink]:
    """A path to the test database that the test may silence."""
    with SilenceableLink.to(clean_database.url) as link:
        yield link


def count(engine: Engine, table: str) -> int:
    with engine.connect() as connection:
        rows: int = connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
    return rows


def wait_until_ended(link: SilenceableLink, ends: int) -> float:
    """Until the service has closed ``ends`` connections through the link; when it did."""
    deadline = time.monotonic() + NO_HANG_SECONDS
    while len(link.ended_by_client) < ends:
        assert time.monotonic() < deadline, "the service never closed its connection"
        time.sleep(0.01)
    return link.ended_by_client[ends - 1]


@pytest.mark.parametrize(
    "transaction_pooling", [False, True], ids=["startup options", "set in each statement"]
)
async def test_a_read_on_a_silent_link_fails_at_the_deadline_and_its_connection_is_dropped(
    clean_database: Engine, link: SilenceableLink, transaction_pooling: bool
) -> None:
    first, second = add_orders(clean_database, "10.00", "20.00")
    async with service_on(
        link.url_through(clean_database.url), payment_db_transaction_pooling=transaction_pooling
    ) as service:
        await pay(first, "10.00", uow=service.unit_of_work(), clock=CLOCK)
        assert service.pool.checkedin() == 1
        link.silence()

        started = time.monotonic()
        error = await error_awaited_within(
            NO_HANG_SECONDS, lambda: pay(second, "20.00", uow=service.unit_of_work(), clock=CLOCK)
        )
        took = time.monotonic() - started
        ended_at = wait_until_ended(link, 1)
        invalidated = len(service.invalidated)
        link.restore()
        retry = await pay(second, "20.00", uow=service.unit_of_work(), clock=CLOCK)

    assert isinstance(error, StorageUnavailable)
    assert not isinstance(error, WriteUnconfirmed)  # it was the read: nothing sent to write
    assert isinstance(error.__cause__, TimeoutError)
    assert service.deadline <= took < service.deadline + SLACK, took
    assert ended_at - started < service.deadline + SLACK  # closed, not left to hang
    assert invalidated == 1  # thrown away, not given back
    assert retry.outcome is Outcome.PAID
    assert broken_invariants(clean_database) == []


class UnitOfWorkWhoseLinkGoesSilentBeforeTheWrite(SqlAlchemyUnitOfWork):
    link: SilenceableLink

    async def commit(self) -> None:
        self.link.silence()
        await super().commit()


async def test_a_write_unanswered_by_the_deadline_is_unconfirmed_and_its_retry_pays_once(
    clean_database: Engine, link: SilenceableLink
) -> None:
    [order_id] = add_orders(clean_database, "30.00")
    async with service_on(link.url_through(clean_database.url)) as service:
        uow = UnitOfWorkWhoseLinkGoesSilentBeforeTheWrite(
            service.engine, session=session_settings(service.settings), deadline=service.deadline
        )
        uow.link = link

        started = time.monotonic()
        error = await error_awaited_within(
            NO_HANG_SECONDS,
            lambda: pay(order_id, "30.00", key="key-1", uow=uow, clock=CLOCK),
        )
        took = time.monotonic() - started
        # The partition heals: the write held on the way reaches the server, and commits.
        link.restore()
        link.wait_until_closed(timeout=NO_HANG_SECONDS)
        retry = await pay(order_id, "30.00", key="key-1", uow=service.unit_of_work(), clock=CLOCK)

    assert isinstance(error, WriteUnconfirmed)
    assert isinstance(error.__cause__, TimeoutError)
    assert service.deadline <= took < service.deadline + SLACK, took
    assert retry.outcome is Outcome.REPLAYED
    assert count(clean_database, "payments") == 1
    assert broken_invariants(clean_database) == []


async def test_the_wait_for_a_connection_of_a_full_pool_ends_at_the_deadline(
    clean_database: Engine,
) -> None:
    [order_id] = add_orders(clean_database, "40.00")
    async with service_on(
        clean_database.url, payment_db_pool_size=1, payment_db_pool_timeout_seconds=30
    ) as service:
        async with service.engine.connect():  # the pool's only connection, held
            started = time.monotonic()
            error = await error_awaited_within(
                NO_HANG_SECONDS,
                lambda: pay(order_id, "40.00", uow=service.unit_of_work(), clock=CLOCK),
            )
            took = time.monotonic() - started
        reply = await pay(order_id, "40.00", uow=service.unit_of_work(), clock=CLOCK)

    assert isinstance(error, StorageUnavailable)
    assert isinstance(error.__cause__, TimeoutError)
    assert service.deadline <= took < service.deadline + SLACK, took
    assert reply.outcome is Outcome.PAID  # the pool's count of lent connections held


async def test_a_lock_held_past_the_deadline_ends_the_write_at_the_deadline_unconfirmed(
    clean_database: Engine,
) -> None:
    [order_id] = add_orders(clean_database, "50.00")
    async with service_on(
        clean_database.url,
        payment_db_lock_timeout_ms=30_000,
        payment_db_statement_timeout_ms=30_000,
    ) as service:
        with clean_database.connect() as other_transaction:
            other_transaction.execute(
                text("SELECT 1 FROM orders WHERE id = :id FOR UPDATE"), {"id": order_id}
            )
            started = time.monotonic()
            error = await error_awaited_within(
                NO_HANG_SECONDS,
                lambda: pay(
                    order_id, "50.00", key="locked", uow=service.unit_of_work(), clock=CLOCK
                ),
            )
            took = time.monotonic() - started
            invalidated = len(service.invalidated)
            other_transaction.rollback()
        retry = await pay(order_id, "50.00", key="locked", uow=service.unit_of_work(), clock=CLOCK)

    # The write waited on the lock when the deadline cut its connection: the server, which
    # had it, may still make it once the lock is free, so it is unconfirmed, and the retry
    # with its key is answered by whichever of the two ran first.
    assert isinstance(error, WriteUnconfirmed)
    assert service.deadline <= took < service.deadline + SLACK, took
    assert invalidated == 1
    assert retry.outcome in {Outcome.PAID, Outcome.REPLAYED}
    assert count(clean_database, "payments") == 1
    assert broken_invariants(clean_database) == []


async def test_a_payment_of_an_order_whose_payment_waits_on_a_lock_is_answered_busy_at_once(
    clean_database: Engine,
) -> None:
    """The first payment waits on the lock with a connection; the second, once the first has
    been at it for the gate's patience, is refused without taking a connection."""
    [order_id] = add_orders(clean_database, "60.00")
    async with service_on(
        clean_database.url,
        payment_db_pool_size=4,
        payment_db_lock_timeout_ms=2_000,
        payment_request_deadline_ms=5_000,
    ) as service:
        service.gate.patience = 0.1
        with clean_database.connect() as other_transaction:
            other_transaction.execute(
                text("SELECT 1 FROM orders WHERE id = :id FOR UPDATE"), {"id": order_id}
            )
            first = asyncio.create_task(
                pay(order_id, "60.00", key="first", uow=service.unit_of_work(), clock=CLOCK)
            )
            await asyncio.sleep(0.2)
            started = time.monotonic()
            error = await error_awaited_within(
                NO_HANG_SECONDS,
                lambda: pay(
                    order_id, "60.00", key="second", uow=service.unit_of_work(), clock=CLOCK
                ),
            )
            took = time.monotonic() - started
            lent = service.pool.checkedout()
            other_transaction.rollback()
        reply = await first

    assert isinstance(error, OrderBusy)
    assert took < SLACK, took
    assert lent == 1  # the first payment's connection only
    assert reply.outcome is Outcome.PAID
    assert broken_invariants(clean_database) == []


async def test_payments_of_one_order_at_once_keep_their_answers_through_the_gate(
    clean_database: Engine,
) -> None:
    [order_id] = add_orders(clean_database, "70.00")
    async with service_on(clean_database.url, payment_db_pool_size=4) as service:
        replies = await asyncio.gather(
            *(pay(order_id, "70.00", uow=service.unit_of_work(), clock=CLOCK) for _ in range(12))
        )

    outcomes = sorted(reply.outcome.value for reply in replies)
    assert outcomes == [Outcome.ORDER_NOT_PAYABLE.value] * 11 + [Outcome.PAID.value]


def socket_options(fd: int) -> dict[str, int]:
    handle = socket.socket(fileno=fd)
    try:
        return {
            "keepalive": handle.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            "idle": handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            "interval": handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            "count": handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
            "user_timeout_ms": handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
        }
    finally:
        handle.detach()


PROBED = {"keepalive": 1, "idle": 10, "interval": 3, "count": 3, "user_timeout_ms": 10_000}


async def test_the_request_paths_connections_probe_their_tcp_path(
    clean_database: Engine, link: SilenceableLink
) -> None:
    async with service_on(link.url_through(clean_database.url)) as service:
        lent = await service.engine.raw_connection()
        try:
            options = socket_options(lent.driver_connection.pgconn.socket)  # type: ignore[union-attr]
        finally:
            lent.close()

    assert options == PROBED


def test_the_commands_connections_probe_their_tcp_path(
    clean_database: Engine, link: SilenceableLink
) -> None:
    engine = build_engine(service_settings(link.url_through(clean_database.url)))
    try:
        lent = engine.raw_connection()
        try:
            options = socket_options(lent.driver_connection.pgconn.socket)  # type: ignore[union-attr]
        finally:
            lent.close()
    finally:
        engine.dispose()

    assert options == PROBED
