"""When the database is away or slow, the use case says so at once and writes nothing."""

from __future__ import annotations

import psycopg.errors
import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from payment.adapters.clock import SystemClock
from payment.adapters.settings import Settings
from payment.adapters.sqlalchemy.engine import build_engine, database_answers
from payment.adapters.sqlalchemy.unit_of_work import SqlAlchemyUnitOfWork
from payment.domain.attempts import Outcome
from payment.domain.errors import StorageUnavailable
from tests.integration.bounded import error_within
from tests.support.attempts import pay
from tests.support.orders import add_orders, broken_invariants

NO_HANG_SECONDS = 10
CLOCK = SystemClock()


def service_uow(engine: Engine) -> SqlAlchemyUnitOfWork:
    """A unit of work as the service makes one on ``engine`` (see ``service_engine``)."""
    return SqlAlchemyUnitOfWork(engine)


def written(engine: Engine) -> dict[str, int]:
    """How many rows each of the service's own tables holds."""
    with engine.connect() as connection:
        return {
            table: connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in ("payments", "payment_attempts", "idempotency_keys")
        }


def test_a_unit_of_work_on_a_closed_port_raises_storage_unavailable_without_hanging(
    unreachable_engine: Engine,
) -> None:
    def enter() -> None:
        with SqlAlchemyUnitOfWork(unreachable_engine):
            pass

    error = error_within(NO_HANG_SECONDS, enter)

    assert isinstance(error, StorageUnavailable)


def test_pay_on_a_closed_port_raises_storage_unavailable_without_hanging(
    unreachable_engine: Engine,
) -> None:
    error = error_within(
        NO_HANG_SECONDS,
        lambda: pay(
            1,
            "10.00",
            uow=SqlAlchemyUnitOfWork(unreachable_engine),
            clock=SystemClock(),
        ),
    )

    assert isinstance(error, StorageUnavailable)


def test_pay_on_a_server_that_never_answers_gives_up_after_the_connect_timeout(
    silent_port: int,
) -> None:
    engine = build_engine(
        Settings(
            database_url=SecretStr(f"postgresql://postgres@127.0.0.1:{silent_port}/none"),
            payment_db_connect_timeout_seconds=1,
        )
    )
    try:
        error = error_within(
            NO_HANG_SECONDS,
            lambda: pay(1, "10.00", uow=SqlAlchemyUnitOfWork(engine), clock=SystemClock()),
        )
    finally:
        engine.dispose()

    assert isinstance(error, StorageUnavailable)


@pytest.mark.parametrize("key", [None, "key-1"], ids=["without a key", "with a key"])
def test_a_lock_held_past_the_lock_timeout_makes_pay_raise_storage_unavailable_and_write_nothing(
    clean_database: Engine, service_engine: Engine, key: str | None
) -> None:
    [order_id] = add_orders(clean_database, "75.00")
    with clean_database.connect() as other_transaction:
        other_transaction.execute(
            text("SELECT 1 FROM orders WHERE id = :id FOR UPDATE"), {"id": order_id}
        )

        error = error_within(
            NO_HANG_SECONDS,
            lambda: pay(order_id, "75.00", key=key, uow=service_uow(service_engine), clock=CLOCK),
        )

        other_transaction.rollback()

    assert isinstance(error, StorageUnavailable)
    cause = error.__cause__
    assert isinstance(cause, SQLAlchemyError)
    assert isinstance(getattr(cause, "orig", None), psycopg.errors.LockNotAvailable)
    assert written(clean_database) == {"payments": 0, "payment_attempts": 0, "idempotency_keys": 0}
    with clean_database.connect() as connection:
        order = connection.execute(text("SELECT status, paid_at FROM orders")).one()
    assert tuple(order) == ("pending", None)


@pytest.mark.parametrize(
    "transaction_pooling", [False, True], ids=["startup options", "set in each transaction"]
)
def test_a_statement_past_the_statement_timeout_makes_pay_raise_storage_unavailable(
    clean_database: Engine, transaction_pooling: bool
) -> None:
    [order_id] = add_orders(clean_database, "75.00")
    url = clean_database.url.render_as_string(hide_password=False)
    engine = build_engine(
        Settings(
            database_url=SecretStr(url),
            payment_db_statement_timeout_ms=100,
            payment_db_transaction_pooling=transaction_pooling,
        )
    )
    try:
        with clean_database.connect() as other_transaction:
            # A lock wait longer than the statement timeout: the statement times out first.
            other_transaction.execute(
                text("SELECT 1 FROM orders WHERE id = :id FOR UPDATE"), {"id": order_id}
            )
            error = error_within(
                NO_HANG_SECONDS,
                lambda: pay(
                    order_id, "75.00", key="key-1", uow=SqlAlchemyUnitOfWork(engine), clock=CLOCK
                ),
            )
            other_transaction.rollback()
    finally:
        engine.dispose()

    assert isinstance(error, StorageUnavailable)
    assert isinstance(getattr(error.__cause__, "orig", None), psycopg.errors.QueryCanceled)
    assert written(clean_database) == {"payments": 0, "payment_attempts": 0, "idempotency_keys": 0}


def test_an_exhausted_pool_makes_pay_raise_storage_unavailable_after_the_pool_timeout(
    clean_database: Engine,
) -> None:
    [order_id] = add_orders(clean_database, "75.00")
    url = clean_database.url.render_as_string(hide_password=False)
    engine = build_engine(
        Settings(
            database_url=SecretStr(url),
            payment_db_pool_size=1,
            payment_db_pool_timeout_seconds=0.2,
        )
    )
    try:
        with engine.connect():
            error = error_within(
                NO_HANG_SECONDS,
                lambda: pay(
                    order_id,
                    "75.00",
                    uow=SqlAlchemyUnitOfWork(engine),
                    clock=SystemClock(),
                ),
            )
    finally:
        engine.dispose()

    assert isinstance(error, StorageUnavailable)
    assert broken_invariants(clean_database) == []
    with clean_database.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM payments")).scalar_one() == 0


def test_pay_with_the_same_key_succeeds_once_the_lock_is_released(
    clean_database: Engine, service_engine: Engine
) -> None:
    [order_id] = add_orders(clean_database, "75.00")
    with clean_database.connect() as other_transaction:
        other_transaction.execute(
            text("SELECT 1 FROM orders WHERE id = :id FOR UPDATE"), {"id": order_id}
        )
        with pytest.raises(StorageUnavailable):
            pay(order_id, "75.00", key="key-1", uow=service_uow(service_engine), clock=CLOCK)

    reply = pay(order_id, "75.00", key="key-1", uow=service_uow(service_engine), clock=CLOCK)

    assert reply.outcome is Outcome.PAID
    assert reply.payment is not None
    assert reply.payment.order_id == order_id
    assert written(clean_database) == {"payments": 1, "payment_attempts": 1, "idempotency_keys": 1}
    assert broken_invariants(clean_database) == []


def test_pay_recovers_by_itself_after_the_server_drops_its_connections(
    clean_database: Engine, service_engine: Engine
) -> None:
    first, second = add_orders(clean_database, "10.00", "20.00")
    pay(first, "10.00", uow=SqlAlchemyUnitOfWork(service_engine), clock=SystemClock())
    with clean_database.connect() as admin:
        terminated = admin.execute(
            text(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000))"
                " FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = 'payment-service'"
            )
        ).scalar_one()
    assert terminated >= 1

    reply = pay(second, "20.00", uow=SqlAlchemyUnitOfWork(service_engine), clock=SystemClock())

    assert reply.outcome is Outcome.PAID
    assert reply.payment is not None
    assert reply.payment.order_id == second
    assert broken_invariants(clean_database) == []


def test_database_answers_is_true_for_the_live_database(service_engine: Engine) -> None:
    assert database_answers(service_engine) is True


def test_database_answers_is_false_for_a_closed_port_without_hanging(
    unreachable_engine: Engine,
) -> None:
    answers: list[bool] = []

    error = error_within(
        NO_HANG_SECONDS, lambda: answers.append(database_answers(unreachable_engine))
    )

    assert error is None
    assert answers == [False]
