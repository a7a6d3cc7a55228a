"""Repositories over one connection, in plain SQL through SQLAlchemy Core.

The columns are ``TIMESTAMP`` without time zone holding UTC, as the order service made them:
times are made naive UTC on the way in and aware UTC on the way out.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from psycopg.errors import LockNotAvailable, UniqueViolation
from sqlalchemy import Connection, Result, Row, bindparam, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as insert_or_skip
from sqlalchemy.exc import IntegrityError, OperationalError

from payment.adapters.sqlalchemy.tables import (
    ONE_SUCCEEDED_PAYMENT_PER_ORDER,
    idempotency_keys,
    orders,
    payment_attempts,
    payments,
)
from payment.domain.attempts import AuditRecord, IdempotencyRecord, Outcome, RecordedAnswer
from payment.domain.errors import IdempotencyKeyInUse, OrderNotPayable
from payment.domain.model import Money, Order, OrderStatus, Payment, PaymentStatus


def to_db(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def _from_db(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC)


# Statements are built once, with bound parameters: each call only sends its values, and
# SQLAlchemy finds the compiled form in its cache without rebuilding the statement.
_SELECT_ORDER = select(orders.c.id, orders.c.status, orders.c.total_price, orders.c.paid_at)
_ORDER = _SELECT_ORDER.where(orders.c.id == bindparam("order_id"))
_ORDER_FOR_UPDATE = _ORDER.with_for_update()
# The status condition makes this safe even without the row lock.
_MARK_PAID = (
    update(orders)
    .where(orders.c.id == bindparam("order_id"), orders.c.status == OrderStatus.PENDING)
    .values(status=OrderStatus.PAID, paid_at=bindparam("paid_time"))
)
_INSERT_PAYMENT = insert(payments).returning(payments.c.id)
_SELECT_PAYMENT = select(
    payments.c.id, payments.c.order_id, payments.c.amount, payments.c.status, payments.c.created_at
)


def _order(result: Result[Any]) -> Order | None:
    row = result.one_or_none()
    if row is None:
        return None
    return Order(
        id=row.id,
        status=row.status,
        total=Money(row.total_price),
        paid_at=None if row.paid_at is None else _from_db(row.paid_at),
    )


class SqlAlchemyOrderRepository:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def get(self, order_id: int) -> Order | None:
        return _order(self._connection.execute(_ORDER, {"order_id": order_id}))

    def get_for_update(self, order_id: int) -> Order | None:
        return _order(self._connection.execute(_ORDER_FOR_UPDATE, {"order_id": order_id}))

    def mark_paid(self, order: Order) -> None:
        if order.paid_at is None:
            raise ValueError(f"order {order.id} has no payment time")
        result = self._connection.execute(
            _MARK_PAID, {"order_id": order.id, "paid_time": to_db(order.paid_at)}
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
        values = {
            "order_id": payment.order_id,
            "amount": payment.amount.amount,
            "status": payment.status.value,
            "created_at": to_db(payment.created_at),
        }
        try:
            payment_id = self._connection.execute(_INSERT_PAYMENT, values).scalar_one()
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


# The lock timeout in force, returned as it is replaced for one statement: OFFSET 0 keeps the
# inner query apart, so it reads the setting before the outer one changes it.
_SWAP_LOCK_TIMEOUT = text(
    "SELECT saved.previous, set_config('lock_timeout', :timeout, true)"
    " FROM (SELECT current_setting('lock_timeout') AS previous OFFSET 0) AS saved"
)
_SET_LOCK_TIMEOUT = select(func.set_config("lock_timeout", bindparam("timeout"), True))
_CLAIM_KEY = (
    insert_or_skip(idempotency_keys)
    .on_conflict_do_nothing(index_elements=["caller", "key"])
    .returning(idempotency_keys.c.key)
)
_KEY = (idempotency_keys.c.caller == bindparam("caller")) & (
    idempotency_keys.c.key == bindparam("key")
)
_KEPT_KEY = select(
    idempotency_keys.c.fingerprint, idempotency_keys.c.answer_status, idempotency_keys.c.answer_body
).where(_KEY)
_RECORD_ANSWER = (
    update(idempotency_keys)
    .where(
        idempotency_keys.c.caller == bindparam("of_caller"),
        idempotency_keys.c.key == bindparam("of_key"),
    )
    .values(answer_status=bindparam("status"), answer_body=bindparam("body"))
)


class SqlAlchemyIdempotencyRepository:
    """A claim is an inserted row that commits with its answer. A concurrent claim of the
    same key waits on that row (a lock wait, bounded by ``wait_ms``), then sees the answer."""

    def __init__(self, connection: Connection, *, wait_ms: int) -> None:
        self._connection = connection
        self._wait_ms = wait_ms

    def claim(
        self, caller: str, key: str, *, fingerprint: str, at: datetime, expires_at: datetime
    ) -> IdempotencyRecord | None:
        # For this statement only; then the transaction's own lock timeout again.
        previous = self._connection.execute(
            _SWAP_LOCK_TIMEOUT, {"timeout": f"{self._wait_ms}ms"}
        ).scalar_one()
        values = {
            "caller": caller,
            "key": key,
            "fingerprint": fingerprint,
            "created_at": to_db(at),
            "expires_at": to_db(expires_at),
        }
        try:
            claimed = self._connection.execute(_CLAIM_KEY, values).first()
        except OperationalError as error:
            if isinstance(error.orig, LockNotAvailable):
                raise IdempotencyKeyInUse(key) from None
            raise
        self._connection.execute(_SET_LOCK_TIMEOUT, {"timeout": previous})
        if claimed is not None:
            return None
        row = self._connection.execute(_KEPT_KEY, {"caller": caller, "key": key}).one_or_none()
        if row is None or row.answer_status is None or row.answer_body is None:
            # Purged between the two statements: rare; the caller's retry claims it afresh.
            raise IdempotencyKeyInUse(key)
        return IdempotencyRecord(
            row.fingerprint, RecordedAnswer(row.answer_status, row.answer_body)
        )

    def record_answer(self, caller: str, key: str, answer: RecordedAnswer) -> None:
        self._connection.execute(
            _RECORD_ANSWER,
            {"of_caller": caller, "of_key": key, "status": answer.status, "body": answer.body},
        )


_SELECT_AUDIT = select(
    payment_attempts.c.created_at,
    payment_attempts.c.request_id,
    payment_attempts.c.caller,
    payment_attempts.c.order_id,
    payment_attempts.c.claimed_amount,
    payment_attempts.c.outcome,
    payment_attempts.c.payment_id,
    payment_attempts.c.idempotency_key,
)


_INSERT_AUDIT = insert(payment_attempts)


class SqlAlchemyAuditTrail:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def add(self, record: AuditRecord) -> None:
        self._connection.execute(
            _INSERT_AUDIT,
            {
                "created_at": to_db(record.at),
                "request_id": record.request_id,
                "caller": record.caller,
                "order_id": record.order_id,
                "claimed_amount": record.claimed_amount.amount,
                "outcome": record.outcome.value,
                "payment_id": record.payment_id,
                "idempotency_key": record.idempotency_key,
            },
        )

    def list_for_order(self, order_id: int) -> list[AuditRecord]:
        rows = self._connection.execute(
            _SELECT_AUDIT.where(payment_attempts.c.order_id == order_id).order_by(
                payment_attempts.c.id
            )
        )
        return [
            AuditRecord(
                at=_from_db(row.created_at),
                request_id=row.request_id,
                caller=row.caller,
                order_id=row.order_id,
                claimed_amount=Money(row.claimed_amount),
                outcome=Outcome(row.outcome),
                payment_id=row.payment_id,
                idempotency_key=row.idempotency_key,
            )
            for row in rows
        ]


def _violates(error: IntegrityError, constraint: str) -> bool:
    cause = error.orig
    return isinstance(cause, UniqueViolation) and cause.diag.constraint_name == constraint
