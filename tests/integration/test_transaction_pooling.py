"""PAYMENT_DB_TRANSACTION_POOLING: behind PgBouncer in transaction mode, nothing may live in a
server session, since the next transaction may run on another one. So the timeouts and the time
zone hold in each transaction while the session keeps the server's defaults, and psycopg
prepares no statement. The same checks on the default engine show what they would catch."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, text

from payment.adapters.clock import SystemClock
from payment.adapters.settings import Settings
from payment.adapters.sqlalchemy.engine import build_engine
from payment.adapters.sqlalchemy.repositories import SqlAlchemyIdempotencyRepository
from payment.adapters.sqlalchemy.unit_of_work import SqlAlchemyUnitOfWork
from tests.support.attempts import pay
from tests.support.orders import add_orders

SETTINGS = {"statement_timeout": "1234ms", "lock_timeout": "321ms", "TimeZone": "UTC"}
SHOW_SETTINGS = text(
    "SELECT current_setting('statement_timeout'), current_setting('lock_timeout'),"
    " current_setting('TimeZone')"
)


def engine_for(clean_database: Engine, *, transaction_pooling: bool) -> Engine:
    return build_engine(
        Settings(
            database_url=SecretStr(clean_database.url.render_as_string(hide_password=False)),
            payment_db_statement_timeout_ms=1234,
            payment_db_lock_timeout_ms=321,
            payment_db_pool_size=1,
            payment_db_transaction_pooling=transaction_pooling,
        )
    )


@pytest.fixture
def pooled(clean_database: Engine) -> Iterator[Engine]:
    engine = engine_for(clean_database, transaction_pooling=True)
    yield engine
    engine.dispose()


@pytest.fixture
def direct(clean_database: Engine) -> Iterator[Engine]:
    engine = engine_for(clean_database, transaction_pooling=False)
    yield engine
    engine.dispose()


def session_settings(engine: Engine) -> tuple[str, str, str]:
    """The settings of the pooled server session itself, outside any transaction of ours."""
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute(SHOW_SETTINGS.text)
        row = cursor.fetchone()
        raw.rollback()
    finally:
        raw.close()
    assert row is not None
    return tuple(row)


def prepared_statements(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(text("SELECT count(*) FROM pg_prepared_statements")).scalar_one()
        )


def test_every_transaction_has_the_settings(pooled: Engine) -> None:
    for _ in range(3):
        with pooled.connect() as connection:
            assert tuple(connection.execute(SHOW_SETTINGS).one()) == tuple(SETTINGS.values())


def test_the_server_session_keeps_its_own_settings(pooled: Engine, direct: Engine) -> None:
    with pooled.connect() as connection:
        connection.execute(text("SELECT 1"))

    assert session_settings(pooled)[:2] == ("0", "0")
    assert session_settings(direct) == tuple(SETTINGS.values())


def test_the_settings_end_with_the_transaction(pooled: Engine) -> None:
    with pooled.connect() as connection:
        connection.execute(text("SELECT 1"))
        connection.commit()
        connection.exec_driver_sql("SET LOCAL statement_timeout = 99")
        connection.rollback()
        assert tuple(connection.execute(SHOW_SETTINGS).one()) == tuple(SETTINGS.values())


def test_the_lock_timeout_is_the_transactions_own_again_after_an_idempotency_key_wait(
    pooled: Engine, direct: Engine
) -> None:
    now = SystemClock().now()
    for engine in (pooled, direct):
        with engine.connect() as connection:
            keys = SqlAlchemyIdempotencyRepository(connection, wait_ms=77)

            claimed = keys.claim("caller", "key-1", fingerprint="f", at=now, expires_at=now)

            lock_timeout = connection.execute(text("SHOW lock_timeout")).scalar_one()
        assert claimed is None
        assert lock_timeout == "321ms"


def test_psycopg_prepares_no_statement(
    clean_database: Engine, pooled: Engine, direct: Engine
) -> None:
    for engine in (pooled, direct):
        orders = add_orders(clean_database, *["10.00"] * 8)
        for order_id in orders:
            pay(order_id, "10.00", uow=SqlAlchemyUnitOfWork(engine), clock=SystemClock())

    assert prepared_statements(pooled) == 0
    assert prepared_statements(direct) > 0
