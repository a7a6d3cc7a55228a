"""When the database is away or slow, the use case says so at once and writes nothing; a
connection that died while it lay in the pool is replaced without the request noticing, but a
write is never sent twice."""

from __future__ import annotations

import asyncio
import time

import anyio
import psycopg.errors
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from payment.adapters.clock import SystemClock
from payment.adapters.sqlalchemy.unit_of_work import SqlAlchemyUnitOfWork
from payment.domain.attempts import Outcome
from payment.domain.errors import StorageUnavailable
from tests.integration.bounded import error_awaited_within
from tests.integration.conftest import LOCK_TIMEOUT_MS, ServiceEngine, service_engine_on
from tests.support.attempts import pay
from tests.support.orders import add_orders, broken_invariants

pytestmark = pytest.mark.anyio

NO_HANG_SECONDS = 10
CLOCK = SystemClock()


def written(engine: Engine) -> dict[str, int]:
    """How many rows each of the service's own tables holds."""
    with engine.connect() as connection:
        return {
            table: connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in ("payments", "payment_attempts", "idempotency_keys")
        }


NOTHING_WRITTEN = {"payments": 0, "payment_attempts": 0, "idempotency_keys": 0}


def order_row(engine: Engine) -> tuple[object, ...]:
    with engine.connect() as connection:
        return tuple(connection.execute(text("SELECT status, paid_at FROM orders")).one())


def terminate_service_connections(engine: Engine) -> int:
    """End every server session of the service on this database, as a restart or an
    administrator would; how many there were."""
    with engine.connect() as admin:
        terminated: int = admin.execute(
            text(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000))"
                " FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = 'payment-service'"
            )
        ).scalar_one()
    return terminated


async def test_a_read_on_a_closed_port_raises_storage_unavailable_without_hanging(
    unreachable_engine: AsyncEngine,
) -> None:
    async def read() -> None:
        async with SqlAlchemyUnitOfWork(unreachable_engine) as uow:
            await uow.orders.get(1)

    error = await error_awaited_within(NO_HANG_SECONDS, read)

    assert isinstance(error, StorageUnavailable)


async def test_pay_on_a_closed_port_raises_storage_unavailable_without_hanging(
    unreachable_engine: AsyncEngine,
) -> None:
    error = await error_awaited_within(
        NO_HANG_SECONDS,
        lambda: pay(1, "10.00", uow=SqlAlchemyUnitOfWork(unreachable_engine), clock=CLOCK),
    )

    assert isinstance(error, StorageUnavailable)


async def test_pay_on_a_server_that_never_answers_gives_up_after_the_connect_timeout(
    silent_port: int,
) -> None:
    service = service_engine_on(
        f"postgresql://postgres@127.0.0.1:{silent_port}/none",
        payment_db_connect_timeout_seconds=1,
    )
    try:
        start = time.monotonic()
        error = await error_awaited_within(
            NO_HANG_SECONDS, lambda: pay(1, "10.00", uow=service.unit_of_work(), clock=CLOCK)
        )
        took = time.monotonic() - start
    finally:
        await service.engine.dispose()

    assert isinstance(error, StorageUnavailable)
    assert took < 5, took


@pytest.mark.parametrize("key", [None, "key-1"], ids=["without a key", "with a key"])
async def test_a_lock_held_on_the_order_makes_the_write_wait_the_lock_timeout_then_give_up(
    clean_database: Engine, service_engine: ServiceEngine, key: str | None
) -> None:
    [order_id] = add_orders(clean_database, "75.00")
    with clean_database.connect() as other_transaction:
        other_transaction.execute(
            text("SELECT 1 FROM orders WHERE id = :id FOR UPDATE"), {"id": order_id}
        )

        start = time.monotonic()
        error = await error_awaited_within(
            NO_HANG_SECONDS,
            lambda: pay(order_id, "75.00", key=key, uow=service_engine.unit_of_work(), clock=CLOCK),
        )
        took = time.monotonic() - start

        other_transaction.rollback()

    assert isinstance(error, StorageUnavailable)
    assert isinstance(error.__cause__, psycopg.errors.LockNotAvailable)
    # The read waits for no lock; only the guarded write does, once, for the lock timeout.
    assert LOCK_TIMEOUT_MS / 1000 <= took < LOCK_TIMEOUT_MS / 1000 + 1.5, took
    assert written(clean_database) == NOTHING_WRITTEN
    assert order_row(clean_database) == ("pending", None)


@pytest.mark.parametrize(
    "transaction_pooling", [False, True], ids=["startup options", "set in each statement"]
)
async def test_a_statement_past_the_statement_timeout_makes_pay_raise_storage_unavailable(
    clean_database: Engine, transaction_pooling: bool
) -> None:
    [order_id] = add_orders(clean_database, "75.00")
    service = service_engine_on(
        clean_database.url,
        payment_db_statement_timeout_ms=100,
        payment_db_transaction_pooling=transaction_pooling,
    )
    try:
        with clean_database.connect() as other_transaction:
            # A lock wait longer than the statement timeout: the statement times out first.
            other_transaction.execute(
                text("SELECT 1 FROM orders WHERE id = :id FOR UPDATE"), {"id": order_id}
            )
            error = await error_awaited_within(
                NO_HANG_SECONDS,
                lambda: pay(
                    order_id, "75.00", key="key-1", uow=service.unit_of_work(), clock=CLOCK
                ),
            )
            other_transaction.rollback()
    finally:
        await service.engine.dispose()

    assert isinstance(error, StorageUnavailable)
    assert isinstance(error.__cause__, psycopg.errors.QueryCanceled)
    assert written(clean_database) == NOTHING_WRITTEN


async def test_an_exhausted_pool_makes_pay_raise_storage_unavailable_after_the_pool_timeout(
    clean_database: Engine,
) -> None:
    [order_id] = add_orders(clean_database, "75.00")
    service = service_engine_on(
        clean_database.url, payment_db_pool_size=1, payment_db_pool_timeout_seconds=0.2
    )
    try:
        async with service.engine.connect():
            start = time.monotonic()
            error = await error_awaited_within(
                NO_HANG_SECONDS,
                lambda: pay(order_id, "75.00", uow=service.unit_of_work(), clock=CLOCK),
            )
            took = time.monotonic() - start
    finally:
        await service.engine.dispose()

    assert isinstance(error, StorageUnavailable)
    assert 0.2 <= took < 2, took
    assert broken_invariants(clean_database) == []
    assert written(clean_database) == NOTHING_WRITTEN


async def test_pay_with_the_same_key_succeeds_once_the_lock_is_released(
    clean_database: Engine, service_engine: ServiceEngine
) -> None:
    [order_id] = add_orders(clean_database, "75.00")
    with clean_database.connect() as other_transaction:
        other_transaction.execute(
            text("SELECT 1 FROM orders WHERE id = :id FOR UPDATE"), {"id": order_id}
        )
        with pytest.raises(StorageUnavailable):
            await pay(
                order_id, "75.00", key="key-1", uow=service_engine.unit_of_work(), clock=CLOCK
            )

    reply = await pay(
        order_id, "75.00", key="key-1", uow=service_engine.unit_of_work(), clock=CLOCK
    )

    assert reply.outcome is Outcome.PAID
    assert reply.payment is not None
    assert reply.payment.order_id == order_id
    assert written(clean_database) == {"payments": 1, "payment_attempts": 1, "idempotency_keys": 1}
    assert broken_invariants(clean_database) == []


async def test_the_first_read_on_a_connection_that_died_in_the_pool_is_sent_again_on_a_new_one(
    clean_database: Engine, service_engine: ServiceEngine
) -> None:
    first, second = add_orders(clean_database, "10.00", "20.00")
    await pay(first, "10.00", uow=service_engine.unit_of_work(), clock=CLOCK)
    assert terminate_service_connections(clean_database) >= 1

    reply = await pay(second, "20.00", uow=service_engine.unit_of_work(), clock=CLOCK)

    assert reply.outcome is Outcome.PAID
    assert reply.payment is not None
    assert reply.payment.order_id == second
    assert written(clean_database) == {"payments": 2, "payment_attempts": 2, "idempotency_keys": 0}
    assert broken_invariants(clean_database) == []


async def test_a_read_goes_through_when_every_connection_in_the_pool_died(
    clean_database: Engine,
) -> None:
    [order_id] = add_orders(clean_database, "20.00")
    service = service_engine_on(clean_database.url, payment_db_pool_size=3)
    try:

        async def read_together() -> None:
            async with service.unit_of_work() as uow:
                await uow.read("SELECT 1", {})
                await anyio.sleep(0.2)

        await asyncio.gather(*(read_together() for _ in range(3)))
        pool = service.engine.pool
        assert isinstance(pool, QueuePool)
        assert pool.checkedin() == 3
        assert terminate_service_connections(clean_database) == 3

        reply = await pay(order_id, "20.00", uow=service.unit_of_work(), clock=CLOCK)
    finally:
        await service.engine.dispose()

    assert reply.outcome is Outcome.PAID
    assert written(clean_database) == {"payments": 1, "payment_attempts": 1, "idempotency_keys": 0}


class UnitOfWorkWhoseConnectionDiesBeforeTheWrite(SqlAlchemyUnitOfWork):
    """Its connection is ended by the server after the read, before the write is sent."""

    admin: Engine

    async def commit(self) -> None:
        assert terminate_service_connections(self.admin) >= 1
        await super().commit()


async def test_a_write_on_a_connection_that_died_is_not_sent_again(
    clean_database: Engine, async_engine: AsyncEngine
) -> None:
    [order_id] = add_orders(clean_database, "75.00")
    uow = UnitOfWorkWhoseConnectionDiesBeforeTheWrite(async_engine)
    uow.admin = clean_database

    error = await error_awaited_within(
        NO_HANG_SECONDS, lambda: pay(order_id, "75.00", key="key-1", uow=uow, clock=CLOCK)
    )

    assert isinstance(error, StorageUnavailable)
    assert isinstance(error.__cause__, psycopg.OperationalError)
    assert written(clean_database) == NOTHING_WRITTEN
    assert order_row(clean_database) == ("pending", None)
    # The caller's retry with its key is what pays, once.
    retry = await pay(
        order_id, "75.00", key="key-1", uow=SqlAlchemyUnitOfWork(async_engine), clock=CLOCK
    )
    assert retry.outcome is Outcome.PAID
    assert written(clean_database) == {"payments": 1, "payment_attempts": 1, "idempotency_keys": 1}
