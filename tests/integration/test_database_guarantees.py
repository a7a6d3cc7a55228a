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


INSERT_AUDIT_RECORD = text(
    "INSERT INTO payment_attempts"
    " (created_at, request_id, caller, order_id, claimed_amount, outcome, payment_id)"
    " VALUES ('2026-11-26 10:15:00', 'request', 'caller', :order_id, 20.00, :outcome,"
    " :payment_id)"
)


def audit(engine: Engine, order_id: int, payment_id: int | None, outcome: str = "paid") -> None:
    with engine.begin() as connection:
        connection.execute(
            INSERT_AUDIT_RECORD,
            {"order_id": order_id, "payment_id": payment_id, "outcome": outcome},
        )


def audit_count(engine: Engine) -> int:
    with engine.connect() as connection:
        count: int = connection.execute(text("SELECT count(*) FROM payment_attempts")).scalar_one()
        return count


def test_a_second_audit_record_naming_the_same_payment_is_refused(clean_database: Engine) -> None:
    [order_id] = add_orders(clean_database, "20.00")
    insert_payment(clean_database, order_id, "20.00")
    audit(clean_database, order_id, payment_id=1)

    with pytest.raises(IntegrityError) as error:
        audit(clean_database, order_id, payment_id=1, outcome="replayed")

    assert violated(error) == (
        psycopg.errors.UniqueViolation,
        "uq_payment_attempts_one_paid_per_payment",
    )
    assert audit_count(clean_database) == 1


def test_any_number_of_audit_records_may_name_no_payment(clean_database: Engine) -> None:
    [order_id] = add_orders(clean_database, "20.00")

    for outcome in ("amount_mismatch", "amount_mismatch", "order_not_found"):
        audit(clean_database, order_id + 1, payment_id=None, outcome=outcome)

    assert audit_count(clean_database) == 3


def test_an_audit_record_must_name_an_existing_payment(clean_database: Engine) -> None:
    [order_id] = add_orders(clean_database, "20.00")

    with pytest.raises(IntegrityError) as error:
        audit(clean_database, order_id, payment_id=1)

    assert violated(error) == (
        psycopg.errors.ForeignKeyViolation,
        "fk_payment_attempts_payment_id",
    )
    assert audit_count(clean_database) == 0


INSERT_KEY = text(
    "INSERT INTO idempotency_keys (caller, key, fingerprint, created_at, expires_at)"
    " VALUES (:caller, :key, 'fingerprint', '2026-11-26 10:15:00', '2026-11-27 10:15:00')"
)


def test_a_callers_key_is_stored_once_and_other_callers_may_use_it_too(
    clean_database: Engine,
) -> None:
    with clean_database.begin() as connection:
        connection.execute(INSERT_KEY, {"caller": "shop-a", "key": "key-1"})
        connection.execute(INSERT_KEY, {"caller": "shop-b", "key": "key-1"})

    with pytest.raises(IntegrityError) as error, clean_database.begin() as connection:
        connection.execute(INSERT_KEY, {"caller": "shop-a", "key": "key-1"})

    assert violated(error) == (psycopg.errors.UniqueViolation, "pk_idempotency_keys")
    with clean_database.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM idempotency_keys")).scalar_one() == 2


@pytest.mark.parametrize("refunded", ["20.01", "-0.01"])
def test_a_payments_refunded_sum_outside_its_amount_is_refused_by_the_check(
    clean_database: Engine, refunded: str
) -> None:
    [order_id] = add_orders(clean_database, "20.00")
    insert_payment(clean_database, order_id, "20.00")

    with pytest.raises(IntegrityError) as error, clean_database.begin() as connection:
        connection.execute(text("UPDATE payments SET amount_refunded = :r"), {"r": refunded})

    assert violated(error) == (
        psycopg.errors.CheckViolation,
        "ck_payments_refunds_within_amount",
    )


def test_a_refund_of_nothing_or_of_an_unknown_reason_is_refused(clean_database: Engine) -> None:
    [order_id] = add_orders(clean_database, "20.00")
    insert_payment(clean_database, order_id, "20.00")
    insert_refund = text(
        "INSERT INTO refunds (payment_id, amount, reason, status, created_at)"
        " SELECT id, :amount, :reason, 'succeeded', '2026-11-27 09:00:00' FROM payments"
    )

    for amount, reason, constraint in [
        ("0.00", None, "ck_refunds_amount_positive"),
        ("1.00", "changed_my_mind", "ck_refunds_reason"),
    ]:
        with pytest.raises(IntegrityError) as error, clean_database.begin() as connection:
            connection.execute(insert_refund, {"amount": amount, "reason": reason})
        assert violated(error) == (psycopg.errors.CheckViolation, constraint)
