"""PAYMENT_DB_TRANSACTION_POOLING: behind PgBouncer in transaction mode, nothing may live in a
server session, since the next transaction may run on another one. So each statement of the
request path runs in a transaction of its own that first settles the timeouts and the time
zone for that transaction only, the session keeps the server's defaults, and psycopg prepares
no statement. The same checks on the default engine show what they would catch.

The commands' synchronous engine settles each of its transactions the same way."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.util import greenlet_spawn

from payment.adapters.clock import SystemClock
from payment.adapters.sqlalchemy.engine import build_engine
from tests.integration.conftest import ServiceEngine, service_engine_on, service_settings
from tests.support.attempts import pay
from tests.support.orders import add_orders

SETTINGS = ("1234ms", "321ms", "UTC")
SERVER_DEFAULTS = ("0", "0")
"""The server's own statement and lock timeouts."""
SHOW_SETTINGS = (
    "SELECT current_setting('statement_timeout'), current_setting('lock_timeout'),"
    " current_setting('TimeZone')"
)
PREPARED = "SELECT count(*) FROM pg_prepared_statements"
OPTIONS = {
    "payment_db_statement_timeout_ms": 1234,
    "payment_db_lock_timeout_ms": 321,
    "payment_db_pool_size": 1,
}
"""One connection: every unit of work runs on the same server session."""


@pytest.fixture
async def pooled(clean_database: Engine) -> AsyncIterator[ServiceEngine]:
    service = service_engine_on(clean_database.url, payment_db_transaction_pooling=True, **OPTIONS)
    yield service
    await service.engine.dispose()


@pytest.fixture
async def direct(clean_database: Engine) -> AsyncIterator[ServiceEngine]:
    service = service_engine_on(clean_database.url, payment_db_transaction_pooling=False, **OPTIONS)
    yield service
    await service.engine.dispose()


async def in_each_statement(service: ServiceEngine, statement: str) -> list[tuple[object, ...]]:
    """``statement``'s row as each of three units of work sees it."""
    rows = []
    for _ in range(3):
        async with service.unit_of_work() as uow:
            [row] = await uow.read(statement, {})
            rows.append(tuple(row))
    return rows


async def in_the_session(service: ServiceEngine, statement: str) -> tuple[object, ...]:
    """``statement``'s row on the pooled server session itself, outside any transaction the
    unit of work opens."""
    lent = await service.engine.raw_connection()
    try:
        connection = lent.driver_connection
        assert connection is not None
        cursor = await connection.execute(statement)
        row = await cursor.fetchone()
    finally:
        await greenlet_spawn(lent.close)
    assert row is not None
    return tuple(row)


@pytest.mark.anyio
async def test_every_statement_runs_with_the_settings(
    pooled: ServiceEngine, direct: ServiceEngine
) -> None:
    assert await in_each_statement(pooled, SHOW_SETTINGS) == [SETTINGS] * 3
    assert await in_each_statement(direct, SHOW_SETTINGS) == [SETTINGS] * 3


@pytest.mark.anyio
async def test_the_server_session_keeps_its_own_settings(
    pooled: ServiceEngine, direct: ServiceEngine
) -> None:
    await in_each_statement(pooled, "SELECT 1")
    await in_each_statement(direct, "SELECT 1")

    assert (await in_the_session(pooled, SHOW_SETTINGS))[:2] == SERVER_DEFAULTS
    assert await in_the_session(direct, SHOW_SETTINGS) == SETTINGS


@pytest.mark.anyio
async def test_psycopg_prepares_no_statement(
    clean_database: Engine, pooled: ServiceEngine, direct: ServiceEngine
) -> None:
    for service in (pooled, direct):
        orders = add_orders(clean_database, *["10.00"] * 8)
        for order_id in orders:
            await pay(order_id, "10.00", uow=service.unit_of_work(), clock=SystemClock())

    assert await in_the_session(pooled, PREPARED) == (0,)
    [prepared] = await in_the_session(direct, PREPARED)
    assert isinstance(prepared, int)
    assert prepared > 0


@pytest.mark.anyio
async def test_paying_behind_the_pooler_writes_as_without_it(
    clean_database: Engine, pooled: ServiceEngine
) -> None:
    [order_id] = add_orders(clean_database, "10.00")

    reply = await pay(
        order_id, "10.00", key="key-1", uow=pooled.unit_of_work(), clock=SystemClock()
    )
    replay = await pay(
        order_id, "10.00", key="key-1", uow=pooled.unit_of_work(), clock=SystemClock()
    )

    assert reply.payment is not None
    assert replay.replayed
    assert replay.answer == reply.answer
    with clean_database.connect() as connection:
        counts = connection.execute(
            text(
                "SELECT (SELECT count(*) FROM payments), (SELECT count(*) FROM payment_attempts),"
                " (SELECT count(*) FROM idempotency_keys),"
                " (SELECT status FROM orders WHERE id = :id)"
            ),
            {"id": order_id},
        ).one()
    assert tuple(counts) == (1, 2, 1, "paid")


# The commands' engine


@pytest.fixture
def pooled_commands(clean_database: Engine) -> Iterator[Engine]:
    engine = build_engine(
        service_settings(clean_database.url, payment_db_transaction_pooling=True, **OPTIONS)
    )
    yield engine
    engine.dispose()


def test_every_transaction_of_the_commands_has_the_settings_and_only_it(
    pooled_commands: Engine,
) -> None:
    for _ in range(3):
        with pooled_commands.connect() as connection:
            assert tuple(connection.execute(text(SHOW_SETTINGS)).one()) == SETTINGS
    with pooled_commands.connect() as connection:
        connection.exec_driver_sql("SET LOCAL statement_timeout = 99")
        connection.rollback()
        assert tuple(connection.execute(text(SHOW_SETTINGS)).one()) == SETTINGS

    raw = pooled_commands.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute(SHOW_SETTINGS)
        session = cursor.fetchone()
        raw.rollback()
    finally:
        raw.close()
    assert session is not None
    assert tuple(session)[:2] == SERVER_DEFAULTS
