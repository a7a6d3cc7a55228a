"""The pay use case on PostgreSQL: one transaction, all or nothing, once per order."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from functools import partial
from typing import Any, Self

import pytest
from sqlalchemy import Engine, text

from payment.adapters.clock import SystemClock
from payment.adapters.sqlalchemy.repositories import SqlAlchemyPaymentRepository
from payment.adapters.sqlalchemy.unit_of_work import SqlAlchemyUnitOfWork
from payment.domain.attempts import Decision, Outcome
from payment.domain.errors import OrderNotPayable
from payment.domain.model import Payment
from payment.domain.services import Reply
from tests.support.attempts import CALLER, REQUEST_ID, pay, plain_answer
from tests.support.orders import add_orders, broken_invariants

Rows = tuple[tuple[tuple[Any, ...], ...], tuple[tuple[Any, ...], ...]]


@dataclass(frozen=True)
class FixedClock:
    moment: datetime

    def now(self) -> datetime:
        return self.moment


def stored_rows(engine: Engine) -> Rows:
    """Every order and every payment, as the database holds them."""
    with engine.connect() as connection:
        orders = connection.execute(text("SELECT * FROM orders ORDER BY id")).all()
        payments = connection.execute(text("SELECT * FROM payments ORDER BY id")).all()
    return tuple(tuple(row) for row in orders), tuple(tuple(row) for row in payments)


def audit_rows(engine: Engine) -> list[Any]:
    """The audit trail, oldest first."""
    with engine.connect() as connection:
        return list(connection.execute(text("SELECT * FROM payment_attempts ORDER BY id")).all())


def kept_keys(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.execute(text("SELECT * FROM idempotency_keys")).all())


def pay_with(engine: Engine, order_id: int, amount: str, *, key: str | None = None) -> Reply:
    return pay(order_id, amount, key=key, uow=SqlAlchemyUnitOfWork(engine), clock=SystemClock())


def paid(reply: Reply) -> Payment:
    assert reply.outcome is Outcome.PAID, reply
    assert reply.payment is not None
    return reply.payment


def test_paying_the_total_records_the_payment_and_marks_the_order_paid(
    clean_database: Engine,
) -> None:
    [order_id] = add_orders(clean_database, "199.99")

    reply = pay_with(clean_database, order_id, "199.99")

    payment = paid(reply)
    with clean_database.connect() as connection:
        order = connection.execute(
            text("SELECT status, paid_at FROM orders WHERE id = :id"), {"id": order_id}
        ).one()
        stored = connection.execute(text("SELECT * FROM payments")).one()
    assert (stored.id, stored.order_id, stored.amount, stored.status) == (
        payment.id,
        order_id,
        Decimal("199.99"),
        "succeeded",
    )
    assert order.status == "paid"
    assert order.paid_at == stored.created_at
    assert payment.created_at == stored.created_at.replace(tzinfo=UTC)
    assert abs(datetime.now(UTC).replace(tzinfo=None) - stored.created_at) < timedelta(minutes=1)
    assert reply.answer == plain_answer(Decision(Outcome.PAID, payment=payment))
    assert broken_invariants(clean_database) == []


def test_a_paid_attempt_leaves_exactly_one_audit_record_naming_its_payment(
    clean_database: Engine,
) -> None:
    [order_id] = add_orders(clean_database, "199.99")

    payment = paid(pay_with(clean_database, order_id, "199.99", key="key-1"))

    [record] = audit_rows(clean_database)
    assert (
        record.created_at,
        record.request_id,
        record.caller,
        record.order_id,
        record.claimed_amount,
        record.outcome,
        record.payment_id,
        record.idempotency_key,
    ) == (
        payment.created_at.replace(tzinfo=None),
        REQUEST_ID,
        CALLER,
        order_id,
        Decimal("199.99"),
        "paid",
        payment.id,
        "key-1",
    )


def test_the_order_its_payment_its_audit_record_and_its_key_are_written_by_one_transaction(
    clean_database: Engine,
) -> None:
    [order_id] = add_orders(clean_database, "25.00")

    pay_with(clean_database, order_id, "25.00", key="key-1")

    with clean_database.connect() as connection:
        writers = {
            table: connection.execute(text(f"SELECT xmin::text FROM {table}")).scalar_one()
            for table in ("payments", "payment_attempts", "idempotency_keys")
        }
        writers["orders"] = connection.execute(
            text("SELECT xmin::text FROM orders WHERE id = :id"), {"id": order_id}
        ).scalar_one()
    assert len(set(writers.values())) == 1, writers


def test_times_are_stored_as_utc_whatever_the_clocks_zone(clean_database: Engine) -> None:
    [order_id] = add_orders(clean_database, "25.00")
    two_hours_east = timezone(timedelta(hours=2))
    clock = FixedClock(datetime(2026, 11, 26, 12, 15, 30, 123456, tzinfo=two_hours_east))

    reply = pay(
        order_id, "25.00", key="key-1", uow=SqlAlchemyUnitOfWork(clean_database), clock=clock
    )

    payment = paid(reply)
    utc = datetime(2026, 11, 26, 10, 15, 30, 123456, tzinfo=UTC)
    with clean_database.connect() as connection:
        stored = connection.execute(
            text(
                "SELECT (SELECT paid_at FROM orders), (SELECT created_at FROM payments),"
                " (SELECT created_at FROM payment_attempts),"
                " (SELECT created_at FROM idempotency_keys),"
                " (SELECT expires_at FROM idempotency_keys)"
            )
        ).one()
    naive = utc.replace(tzinfo=None)
    assert tuple(stored) == (naive, naive, naive, naive, naive + timedelta(hours=24))
    assert payment.created_at == utc
    assert payment.created_at.tzinfo == UTC


@pytest.mark.parametrize(
    ("status", "amount", "outcome"),
    [
        pytest.param("pending", "199.98", Outcome.AMOUNT_MISMATCH, id="a cent short"),
        pytest.param("pending", "200.00", Outcome.AMOUNT_MISMATCH, id="a cent over"),
        pytest.param("pending", "1999.90", Outcome.AMOUNT_MISMATCH, id="digits shifted"),
        pytest.param("cancelled", "199.99", Outcome.ORDER_NOT_PAYABLE, id="cancelled"),
        pytest.param("paid", "199.99", Outcome.ORDER_NOT_PAYABLE, id="marked paid elsewhere"),
    ],
)
def test_a_refused_payment_changes_no_order_and_no_payment_and_is_audited(
    clean_database: Engine, status: str, amount: str, outcome: Outcome
) -> None:
    [order_id] = add_orders(clean_database, "199.99", status=status)
    before = stored_rows(clean_database)

    reply = pay_with(clean_database, order_id, amount)

    assert reply.outcome is outcome
    assert reply.payment is None
    assert reply.answer == plain_answer(Decision(outcome))
    assert stored_rows(clean_database) == before
    assert [
        (r.order_id, r.claimed_amount, r.outcome, r.payment_id) for r in audit_rows(clean_database)
    ] == [(order_id, Decimal(amount), outcome.value, None)]


def test_paying_an_order_that_does_not_exist_is_refused_and_changes_nothing(
    clean_database: Engine,
) -> None:
    [order_id] = add_orders(clean_database, "199.99")
    before = stored_rows(clean_database)

    reply = pay_with(clean_database, order_id + 1, "199.99")

    assert reply.outcome is Outcome.ORDER_NOT_FOUND
    assert reply.answer.status == 404
    assert stored_rows(clean_database) == before
    assert [(r.order_id, r.outcome) for r in audit_rows(clean_database)] == [
        (order_id + 1, "order_not_found")
    ]


def test_paying_a_paid_order_again_is_refused_and_keeps_the_first_payment(
    clean_database: Engine,
) -> None:
    [order_id] = add_orders(clean_database, "19.99")
    first = paid(pay_with(clean_database, order_id, "19.99"))
    after_first = stored_rows(clean_database)

    reply = pay_with(clean_database, order_id, "19.99")

    assert reply.outcome is Outcome.ORDER_NOT_PAYABLE
    assert reply.answer.status == 409
    assert stored_rows(clean_database) == after_first
    assert [(r.outcome, r.payment_id) for r in audit_rows(clean_database)] == [
        ("paid", first.id),
        ("order_not_payable", None),
    ]


def test_the_unique_index_refuses_a_second_payment_even_when_the_order_looks_pending(
    clean_database: Engine,
) -> None:
    [order_id] = add_orders(clean_database, "19.99")
    pay_with(clean_database, order_id, "19.99")
    with clean_database.begin() as connection:
        connection.execute(text("UPDATE orders SET status = 'pending', paid_at = NULL"))
    before = stored_rows(clean_database)
    trail_before = audit_rows(clean_database)

    # Only a store changed behind the service's back gets here: the refusal comes from the
    # database, after the rules allowed the payment, and is raised rather than answered.
    with pytest.raises(OrderNotPayable):
        pay_with(clean_database, order_id, "19.99", key="key-1")

    assert stored_rows(clean_database) == before
    assert audit_rows(clean_database) == trail_before
    assert kept_keys(clean_database) == []


class CrashBeforeCommit(Exception):
    pass


class PaymentsThatFailAfterWriting(SqlAlchemyPaymentRepository):
    """Writes the payment, notes the order's status as the transaction sees it, then fails."""

    seen_order_status: str | None = None

    def add(self, payment: Payment) -> Payment:
        super().add(payment)
        self.seen_order_status = self._connection.execute(
            text("SELECT status FROM orders WHERE id = :id"), {"id": payment.order_id}
        ).scalar_one()
        raise CrashBeforeCommit


class UnitOfWorkThatCrashesBeforeCommit(SqlAlchemyUnitOfWork):
    failing_payments: PaymentsThatFailAfterWriting

    def __enter__(self) -> Self:
        super().__enter__()
        self.failing_payments = PaymentsThatFailAfterWriting(self._connection)
        self.payments = self.failing_payments
        return self


def test_a_crash_after_the_order_is_marked_paid_and_before_commit_leaves_no_write(
    clean_database: Engine,
) -> None:
    [order_id] = add_orders(clean_database, "49.90")
    before = stored_rows(clean_database)
    uow = UnitOfWorkThatCrashesBeforeCommit(clean_database)

    with pytest.raises(CrashBeforeCommit):
        pay(order_id, "49.90", key="key-1", uow=uow, clock=SystemClock())

    assert uow.failing_payments.seen_order_status == "paid"
    assert stored_rows(clean_database) == before
    assert audit_rows(clean_database) == []
    assert kept_keys(clean_database) == []
    retry = pay_with(clean_database, order_id, "49.90", key="key-1")
    assert retry.outcome is Outcome.PAID
    assert broken_invariants(clean_database) == []


def run_at_once(actions: list[Callable[[], Reply]]) -> list[Reply | Exception]:
    """Run every action in its own thread, released together; each one's result or error."""
    start = threading.Barrier(len(actions))

    def released(action: Callable[[], Reply]) -> Reply | Exception:
        start.wait(timeout=30)
        try:
            return action()
        except Exception as error:
            return error

    with ThreadPoolExecutor(max_workers=len(actions)) as pool:
        return list(pool.map(released, actions))


def test_many_threads_paying_the_same_orders_at_once_pay_each_order_exactly_once(
    clean_database: Engine,
) -> None:
    totals = ["10.00", "20.50", "30.99", "44.01"]
    order_ids = add_orders(clean_database, *totals)
    attempts = [(order_ids[i % 4], totals[i % 4]) for i in range(32)]

    outcomes = run_at_once(
        [partial(pay_with, clean_database, order_id, total) for order_id, total in attempts]
    )

    replies = [outcome for outcome in outcomes if isinstance(outcome, Reply)]
    assert len(replies) == 32, [o for o in outcomes if not isinstance(o, Reply)]
    payments = [paid(reply) for reply in replies if reply.outcome is Outcome.PAID]
    refusals = [reply for reply in replies if reply.outcome is Outcome.ORDER_NOT_PAYABLE]
    assert sorted(payment.order_id for payment in payments) == order_ids
    assert len(refusals) == 28, replies
    assert broken_invariants(clean_database) == []
    with clean_database.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM payments")).scalar_one() == 4
    trail = audit_rows(clean_database)
    assert sorted((r.outcome, r.payment_id) for r in trail if r.outcome == "paid") == sorted(
        ("paid", payment.id) for payment in payments
    )
    assert sum(r.outcome == "order_not_payable" for r in trail) == 28
