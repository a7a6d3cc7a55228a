"""Repositories over one connection, in plain SQL through SQLAlchemy Core.

The columns are ``TIMESTAMP`` without time zone holding UTC, as the order service made them:
times are made naive UTC on the way in and aware UTC on the way out.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

from psycopg.errors import UniqueViolation
from sqlalchemy import Connection, Row, insert, select, update
from sqlalchemy.exc import IntegrityError

from payment.adapters.sqlalchemy.tables import ONE_SUCCEEDED_PAYMENT_PER_ORDER, orders, payments
from payment.domain.errors import OrderNotPayable
from payment.domain.model import Money, Order, OrderStatus, Payment, PaymentStatus


def _to_db(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def _from_db(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC)


_SELECT_ORDER = select(orders.c.id, orders.c.status, orders.c.total_price, orders.c.paid_at)
_SELECT_PAYMENT = select(
    payments.c.id, payments.c.order_id, payments.c.amount, payments.c.status, payments.c.created_at
)


class SqlAlchemyOrderRepository:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def get_for_update(self, order_id: int) -> Order | None:
        row = self._connection.execute(
            _SELECT_ORDER.where(orders.c.id == order_id).with_for_update()
        ).one_or_none()
        if row is None:
            return None
        return Order(
            id=row.id,
            status=row.status,
            total=Money(row.total_price),
            paid_at=None if row.paid_at is None else _from_db(row.paid_at),
        )

    def mark_paid(self, order: Order) -> None:
        if order.paid_at is None:
            raise ValueError(f"order {order.id} has no payment time")
        # The status condition makes this safe even without the row lock.
        result = self._connection.execute(
            update(orders)
            .where(orders.c.id == order.id, orders.c.status == OrderStatus.PENDING)
            .values(status=OrderStatus.PAID, paid_at=_to_db(order.paid_at))
        )
        if result.rowcount != 1:
            raise OrderNotPayable(order.id, OrderStatus.PAID)


def _payment(row: Row[int, int, Decimal, str, datetime]) -> Payment:
    return Payment(
        id=row.id,
        order_id=row.order_id,
        amount=Money(row.amount),
        status=PaymentStatus(row.status),
        created_at=_from_db(row.created_at),
    )


class SqlAlchemyPaymentRepository:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def add(self, payment: Payment) -> Payment:
        statement = (
            insert(payments)
            .values(
                order_id=payment.order_id,
                amount=payment.amount.amount,
                status=payment.status,
                created_at=_to_db(payment.created_at),
            )
            .returning(payments.c.id)
        )
        try:
            payment_id = self._connection.execute(statement).scalar_one()
        except IntegrityError as error:
            if _violates(error, ONE_SUCCEEDED_PAYMENT_PER_ORDER):
                raise OrderNotPayable(payment.order_id, OrderStatus.PAID) from None
            raise
        return replace(payment, id=payment_id)

    def get(self, payment_id: int) -> Payment | None:
        row = self._connection.execute(
            _SELECT_PAYMENT.where(payments.c.id == payment_id)
        ).one_or_none()
        return None if row is None else _payment(row)

    def list_for_order(self, order_id: int) -> list[Payment]:
        rows = self._connection.execute(
            _SELECT_PAYMENT.where(payments.c.order_id == order_id).order_by(
                payments.c.created_at, payments.c.id
            )
        )
        return [_payment(row) for row in rows]


def _violates(error: IntegrityError, constraint: str) -> bool:
    cause = error.orig
    return isinstance(cause, UniqueViolation) and cause.diag.constraint_name == constraint
