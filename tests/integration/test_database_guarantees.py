"""What the database refuses on its own, whoever writes to it: plain SQL, no service."""

from __future__ import annotations

from typing import Any

import psycopg.errors
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

from tests.support.orders import add_orders

INSERT_PAYMENT = text(
    "INSERT INTO payments (order_id, amount, status, created_at)"
    " VALUES (:order_id, :amount, :status, '2026-11-26 10:15:00')"
)


def insert_payment(engine: Engine, order_id: int, amount: str, status: str = "succeeded") -> None:
    with engine.begin() as connection:
        connection.execute(
            INSERT_PAYMENT, {"order_id": order_id, "amount": amount, "status": status}
        )


def payment_count(engine: Engine) -> int:
    with engine.connect() as connection:
        count: int = connection.execute(text("SELECT count(*) FROM payments")).scalar_one()
        return count


def violated(error: pytest.ExceptionInfo[IntegrityError]) -> tuple[type[Any], str | None]:
    cause = error.value.orig
    assert isinstance(cause, psycopg.errors.IntegrityError)
    return type(cause), cause.diag.constraint_name


def test_a_second_succeeded_payment_for_an_order_is_refused_by_the_unique_index(
    clean_database: Engine,
) -> None:
    [order_id] = add_orders(clean_database, "20.00")
    insert_payment(clean_database, order_id, "20.00")

    with pytest.raises(IntegrityError) as error:
        insert_payment(clean_database, order_id, "20.00")

    assert violated(error) == (
        psycopg.errors.UniqueViolation,
        "uq_payments_one_succeeded_per_order",
    )
    assert payment_count(clean_database) == 1


def test_the_unique_index_counts_only_succeeded_payments(clean_database: Engine) -> None:
    [order_id] = add_orders(clean_database, "20.00")
    insert_payment(clean_database, order_id, "20.00", status="failed")
    insert_payment(clean_database, order_id, "20.00", status="refunded")

    insert_payment(clean_database, order_id, "20.00")

    assert payment_count(clean_database) == 3


def test_succeeded_payments_of_different_orders_do_not_collide(clean_database: Engine) -> None:
    first, second = add_orders(clean_database, "20.00", "30.00")
    insert_payment(clean_database, first, "20.00")

    insert_payment(clean_database, second, "30.00")

    assert payment_count(clean_database) == 2


@pytest.mark.parametrize("amount", ["0", "0.00", "-0.01", "-20.00"])
def test_an_amount_of_zero_or_less_is_refused_by_the_check(
    clean_database: Engine, amount: str
) -> None:
    [order_id] = add_orders(clean_database, "20.00")

    with pytest.raises(IntegrityError) as error:
        insert_payment(clean_database, order_id, amount)

    assert violated(error) == (psycopg.errors.CheckViolation, "ck_payments_amount_positive")
    assert payment_count(clean_database) == 0


def test_the_smallest_positive_amount_passes_the_check(clean_database: Engine) -> None:
    [order_id] = add_orders(clean_database, "0.01")

    insert_payment(clean_database, order_id, "0.01")

    assert payment_count(clean_database) == 1


def test_a_payment_must_reference_an_existing_order(clean_database: Engine) -> None:
    [order_id] = add_orders(clean_database, "20.00")

    with pytest.raises(IntegrityError) as error:
        insert_payment(clean_database, order_id + 1, "20.00")

    assert violated(error)[0] is psycopg.errors.ForeignKeyViolation
    assert payment_count(clean_database) == 0


def test_an_order_with_a_payment_cannot_be_deleted(clean_database: Engine) -> None:
    [order_id] = add_orders(clean_database, "20.00")
    insert_payment(clean_database, order_id, "20.00")

    with pytest.raises(IntegrityError) as error, clean_database.begin() as connection:
        connection.execute(text("DELETE FROM orders WHERE id = :id"), {"id": order_id})

    assert violated(error)[0] is psycopg.errors.ForeignKeyViolation
    assert payment_count(clean_database) == 1
