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
from payment.domain.errors import AmountMismatch, OrderNotFound, OrderNotPayable
from payment.domain.model import Money, Payment
from payment.domain.services import pay
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


def pay_with(engine: Engine, order_id: int, amount: str) -> Payment:
    return pay(order_id, Money.of(amount), uow=SqlAlchemyUnitOfWork(engine), clock=SystemClock())


def test_paying_the_total_records_the_payment_and_marks_the_order_paid(
    clean_database: Engine,
) -> None:
    [order_id] = add_orders(clean_database, "199.99")

    payment = pay_with(clean_database, order_id, "199.99")

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
    assert broken_invariants(clean_database) == []


def test_the_order_and_its_payment_are_written_by_the_same_transaction(
    clean_database: Engine,
) -> None:
    [order_id] = add_orders(clean_database, "25.00")

    pay_with(clean_database, order_id, "25.00")

    with clean_database.connect() as connection:
        order_xmin = connection.execute(
            text("SELECT xmin::text FROM orders WHERE id = :id"), {"id": order_id}
        ).scalar_one()
        payment_xmin = connection.execute(
            text("SELECT xmin::text FROM payments WHERE order_id = :id"), {"id": order_id}
        ).scalar_one()
    assert order_xmin == payment_xmin


def test_times_are_stored_as_utc_whatever_the_clocks_zone(clean_database: Engine) -> None:
    [order_id] = add_orders(clean_database, "25.00")
    two_hours_east = timezone(timedelta(hours=2))
    clock = FixedClock(datetime(2026, 11, 26, 12, 15, 30, 123456, tzinfo=two_hours_east))

    payment = pay(
        order_id, Money.of("25.00"), uow=SqlAlchemyUnitOfWork(clean_database), clock=clock
    )

    utc = datetime(2026, 11, 26, 10, 15, 30, 123456, tzinfo=UTC)
    with clean_database.connect() as connection:
        paid_at = connection.execute(text("SELECT paid_at FROM orders")).scalar_one()
        created_at = connection.execute(text("SELECT created_at FROM payments")).scalar_one()
    assert (paid_at, created_at) == (utc.replace(tzinfo=None), utc.replace(tzinfo=None))
    assert payment.created_at == utc
    assert payment.created_at.tzinfo == UTC


@pytest.mark.parametrize(
    ("status", "amount", "refusal"),
    [
        pytest.param("pending", "199.98", AmountMismatch, id="a cent short"),
        pytest.param("pending", "200.00", AmountMismatch, id="a cent over"),
        pytest.param("pending", "1999.90", AmountMismatch, id="digits shifted"),
        pytest.param("cancelled", "199.99", OrderNotPayable, id="cancelled"),
        pytest.param("paid", "199.99", OrderNotPayable, id="marked paid elsewhere"),
    ],
)
def test_a_refused_payment_writes_nothing(
    clean_database: Engine, status: str, amount: str, refusal: type[Exception]
) -> None:
    [order_id] = add_orders(clean_database, "199.99", status=status)
    before = stored_rows(clean_database)

    with pytest.raises(refusal):
        pay_with(clean_database, order_id, amount)

    assert stored_rows(clean_database) == before


def test_paying_an_order_that_does_not_exist_is_refused_and_writes_nothing(
    clean_database: Engine,
) -> None:
    [order_id] = add_orders(clean_database, "199.99")
    before = stored_rows(clean_database)

    with pytest.raises(OrderNotFound):
        pay_with(clean_database, order_id + 1, "199.99")

    assert stored_rows(clean_database) == before


def test_paying_a_paid_order_again_is_refused_and_keeps_the_first_payment(
    clean_database: Engine,
) -> None:
    [order_id] = add_orders(clean_database, "19.99")
    pay_with(clean_database, order_id, "19.99")
    after_first = stored_rows(clean_database)

    with pytest.raises(OrderNotPayable) as refusal:
        pay_with(clean_database, order_id, "19.99")

    assert refusal.value.status == "paid"
    assert stored_rows(clean_database) == after_first


def test_the_unique_index_refuses_a_second_payment_even_when_the_order_looks_pending(
    clean_database: Engine,
) -> None:
    [order_id] = add_orders(clean_database, "19.99")
    pay_with(clean_database, order_id, "19.99")
    with clean_database.begin() as connection:
        connection.execute(text("UPDATE orders SET status = 'pending', paid_at = NULL"))
    before = stored_rows(clean_database)

    with pytest.raises(OrderNotPayable):
        pay_with(clean_database, order_id, "19.99")

    assert stored_rows(clean_database) == before


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
        pay(order_id, Money.of("49.90"), uow=uow, clock=SystemClock())

    assert uow.failing_payments.seen_order_status == "paid"
    assert stored_rows(clean_database) == before
    pay_with(clean_database, order_id, "49.90")
    assert broken_invariants(clean_database) == []


def run_at_once(actions: list[Callable[[], Payment]]) -> list[Payment | Exception]:
    """Run every action in its own thread, released together; each one's result or error."""
    start = threading.Barrier(len(actions))

    def released(action: Callable[[], Payment]) -> Payment | Exception:
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

    payments = [outcome for outcome in outcomes if isinstance(outcome, Payment)]
    refusals = [outcome for outcome in outcomes if isinstance(outcome, OrderNotPayable)]
    assert sorted(payment.order_id for payment in payments) == order_ids
    assert len(refusals) == 28, [o for o in outcomes if not isinstance(o, Payment)]
    assert broken_invariants(clean_database) == []
    with clean_database.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM payments")).scalar_one() == 4
