"""Repositories over one pooled connection, in plain SQL sent straight through psycopg 3.

The tables are SQLAlchemy's (``tables.py``, kept in step with the migrations by a test); the
statements of the request path are written out here and sent through the psycopg connection
the pool hands out, without SQLAlchemy's execution layer: each costs one round trip and
little else. psycopg prepares each statement on the server after a few uses.

Reads run as they are asked for. Writes are staged and sent by the unit of work's commit as
one statement (``WriteBatch``): common table expressions, one per write, each conditional on
the order's guarded update when there is one. One statement is one atomic transaction.

The columns are ``TIMESTAMP`` without time zone holding UTC, as the order service made them:
times are made naive UTC on the way in and aware UTC on the way out.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from payment.adapters import cloudevents
from payment.domain.attempts import AuditRecord, IdempotencyRecord, Outcome, RecordedAnswer
from payment.domain.delivery import OutboxEvent
from payment.domain.events import Event, PaymentSucceeded, RefundSucceeded
from payment.domain.model import Money, Order, OrderStatus, Payment, PaymentStatus
from payment.domain.ports import AttemptGround
from payment.domain.refunds import (
    Refund,
    Refundable,
    RefundAuditRecord,
    RefundGround,
    RefundOutcome,
    RefundReason,
    RefundStatus,
)

Row = tuple[Any, ...]
Params = dict[str, Any]

KEPT_KEY_CONSTRAINT = "pk_idempotency_keys"
# ``payments_id_seq``, named in the statements below, is the sequence behind ``payments.id``
# (a SERIAL column).


class Statements(Protocol):
    """Runs one statement on the unit of work's connection and returns its rows."""

    async def read(self, statement: str, params: Params) -> list[Row]: ...


def to_db(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def _from_db(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC)


_ORDER = "SELECT id, status, total_price, paid_at FROM orders WHERE id = %(order_id)s"
# The order, the key's kept answer, and a payment id set aside when the order looks payable:
# one row whatever is found, and no id spent on a replay or on an order that is not pending.
GROUND_STATEMENT = """\
SELECT o.id, o.status, o.total_price, o.paid_at,
       CASE WHEN o.status = %(payable)s AND k.key IS NULL THEN nextval('payments_id_seq') END,
       k.fingerprint, k.answer_status, k.answer_body
FROM (SELECT) AS one
LEFT JOIN orders AS o ON o.id = %(order_id)s
LEFT JOIN idempotency_keys AS k ON k.caller = %(caller)s AND k.key = %(key)s"""
_NEXT_PAYMENT_ID = "SELECT nextval('payments_id_seq')"
_PAYMENT = (
    "SELECT id, order_id, amount, status, created_at, amount_refunded FROM payments"
    " WHERE id = %(payment_id)s"
)
_PAYMENTS_OF_ORDER = (
    "SELECT id, order_id, amount, status, created_at, amount_refunded FROM payments"
    " WHERE order_id = %(order_id)s ORDER BY created_at, id"
)
# The payment with its refunded sum, the key's kept answer, and a refund id set aside when
# something remains to refund and the key is unused: one row whatever is found.
REFUND_GROUND_STATEMENT = """\
SELECT p.id, p.order_id, p.amount, p.status, p.created_at, p.amount_refunded,
       CASE WHEN p.amount_refunded < p.amount AND k.key IS NULL
            THEN nextval('refunds_id_seq') END,
       k.fingerprint, k.answer_status, k.answer_body
FROM (SELECT) AS one
LEFT JOIN payments AS p ON p.id = %(payment_id)s
LEFT JOIN idempotency_keys AS k ON k.caller = %(caller)s AND k.key = %(key)s"""
_REFUND = (
    "SELECT r.id, r.payment_id, p.order_id, r.amount, r.reason, r.status, r.created_at"
    " FROM refunds AS r JOIN payments AS p ON p.id = r.payment_id WHERE r.id = %(refund_id)s"
)
_REFUNDS_OF_PAYMENT = (
    "SELECT r.id, r.payment_id, p.order_id, r.amount, r.reason, r.status, r.created_at"
    " FROM refunds AS r JOIN payments AS p ON p.id = r.payment_id"
    " WHERE r.payment_id = %(payment_id)s ORDER BY r.created_at, r.id"
)
_REFUND_AUDIT_OF_PAYMENT = (
    "SELECT created_at, request_id, caller, payment_id, claimed_amount, reason, outcome,"
    " refund_id, idempotency_key FROM refund_attempts WHERE payment_id = %(payment_id)s"
    " ORDER BY id"
)
_AUDIT_OF_ORDER = (
    "SELECT created_at, request_id, caller, order_id, claimed_amount, outcome, payment_id,"
    " idempotency_key FROM payment_attempts WHERE order_id = %(order_id)s ORDER BY id"
)


def _order(row: Row) -> Order:
    order_id, status, total_price, paid_at = row[:4]
    return Order(
        id=order_id,
        status=status,
        total=Money(total_price),
        paid_at=None if paid_at is None else _from_db(paid_at),
    )


def attempt_ground(row: Row) -> AttemptGround:
    """The row of ``GROUND_STATEMENT``: its order columns are null when there is no such
    order, its key columns when the key is new or none was given."""
    order = None if row[0] is None else _order(row)
    kept = None
    if row[5] is not None:
        kept = IdempotencyRecord(row[5], RecordedAnswer(row[6], row[7]))
    return AttemptGround(order=order, kept=kept, payment_id=row[4])


def ground_params(order_id: int, *, caller: str, key: str | None) -> Params:
    return {
        "order_id": order_id,
        "caller": caller,
        "key": key,
        "payable": OrderStatus.PENDING.value,
    }


class SqlOrderRepository:
    def __init__(self, statements: Statements, batch: WriteBatch) -> None:
        self._statements = statements
        self._batch = batch

    async def get(self, order_id: int) -> Order | None:
        rows = await self._statements.read(_ORDER, {"order_id": order_id})
        return _order(rows[0]) if rows else None

    def mark_paid(self, order: Order) -> None:
        if order.paid_at is None:
            raise ValueError(f"order {order.id} has no payment time")
        self._batch.guard(order)


def _payment(row: Row) -> Payment:
    payment_id, order_id, amount, status, created_at, amount_refunded = row
    return Payment(
        id=payment_id,
        order_id=order_id,
        amount=Money(amount),
        status=PaymentStatus(status),
        created_at=_from_db(created_at),
        amount_refunded=Money(amount_refunded),
    )


def refund_ground(row: Row) -> RefundGround:
    """The row of ``REFUND_GROUND_STATEMENT``."""
    refundable = None if row[0] is None else Refundable(_payment(row[:6]))
    kept = None
    if row[7] is not None:
        kept = IdempotencyRecord(row[7], RecordedAnswer(row[8], row[9]))
    return RefundGround(refundable=refundable, kept=kept, refund_id=row[6])


def refund_ground_params(payment_id: int, *, caller: str, key: str | None) -> Params:
    return {"payment_id": payment_id, "caller": caller, "key": key}


def _refund(row: Row) -> Refund:
    refund_id, payment_id, order_id, amount, reason, status, created_at = row
    return Refund(
        id=refund_id,
        payment_id=payment_id,
        order_id=order_id,
        amount=Money(amount),
        reason=None if reason is None else RefundReason(reason),
        status=RefundStatus(status),
        created_at=_from_db(created_at),
    )


class SqlPaymentRepository:
    def __init__(self, statements: Statements, batch: WriteBatch) -> None:
        self._statements = statements
        self._batch = batch

    async def next_id(self) -> int:
        [(payment_id,)] = await self._statements.read(_NEXT_PAYMENT_ID, {})
        return int(payment_id)

    def mark_refunded(self, refundable: Refundable) -> None:
        self._batch.guard(refundable)

    def add(self, payment: Payment) -> None:
        if payment.id is None:
            raise ValueError("a payment is added with the id set aside for it")
        self._batch.insert(
            "payments",
            id=payment.id,
            order_id=payment.order_id,
            amount=payment.amount.amount,
            status=payment.status.value,
            created_at=to_db(payment.created_at),
        )

    async def get(self, payment_id: int) -> Payment | None:
        rows = await self._statements.read(_PAYMENT, {"payment_id": payment_id})
        return _payment(rows[0]) if rows else None

    async def list_for_order(self, order_id: int) -> list[Payment]:
        rows = await self._statements.read(_PAYMENTS_OF_ORDER, {"order_id": order_id})
        return [_payment(row) for row in rows]


class SqlRefundRepository:
    def __init__(self, statements: Statements, batch: WriteBatch) -> None:
        self._statements = statements
        self._batch = batch

    def add(self, refund: Refund) -> None:
        if refund.id is None:
            raise ValueError("a refund is added with the id set aside for it")
        self._batch.insert(
            "refunds",
            id=refund.id,
            payment_id=refund.payment_id,
            amount=refund.amount.amount,
            reason=None if refund.reason is None else refund.reason.value,
            status=refund.status.value,
            created_at=to_db(refund.created_at),
        )

    async def get(self, refund_id: int) -> Refund | None:
        rows = await self._statements.read(_REFUND, {"refund_id": refund_id})
        return _refund(rows[0]) if rows else None

    async def list_for_payment(self, payment_id: int) -> list[Refund]:
        rows = await self._statements.read(_REFUNDS_OF_PAYMENT, {"payment_id": payment_id})
        return [_refund(row) for row in rows]


class SqlRefundAuditTrail:
    def __init__(self, statements: Statements, batch: WriteBatch) -> None:
        self._statements = statements
        self._batch = batch

    def add(self, record: RefundAuditRecord) -> None:
        self._batch.insert(
            "refund_attempts",
            created_at=to_db(record.at),
            request_id=record.request_id,
            caller=record.caller,
            payment_id=record.payment_id,
            claimed_amount=None if record.claimed_amount is None else record.claimed_amount.amount,
            reason=None if record.reason is None else record.reason.value,
            outcome=record.outcome.value,
            refund_id=record.refund_id,
            idempotency_key=record.idempotency_key,
        )

    async def list_for_payment(self, payment_id: int) -> list[RefundAuditRecord]:
        rows = await self._statements.read(_REFUND_AUDIT_OF_PAYMENT, {"payment_id": payment_id})
        return [
            RefundAuditRecord(
                at=_from_db(created_at),
                request_id=request_id,
                caller=caller,
                payment_id=payment_id,
                claimed_amount=None if claimed is None else Money(claimed),
                reason=None if reason is None else RefundReason(reason),
                outcome=RefundOutcome(outcome),
                refund_id=refund_id,
                idempotency_key=key,
            )
            for (
                created_at,
                request_id,
                caller,
                payment_id,
                claimed,
                reason,
                outcome,
                refund_id,
                key,
            ) in rows
        ]


class SqlIdempotencyRepository:
    """A key is stored once, with its first request's fingerprint and answer, in the same
    statement as the decision it answers: a key never exists without its answer."""

    def __init__(self, batch: WriteBatch) -> None:
        self._batch = batch

    def add(
        self,
        caller: str,
        key: str,
        record: IdempotencyRecord,
        *,
        at: datetime,
        expires_at: datetime,
    ) -> None:
        self._batch.insert(
            "idempotency_keys",
            caller=caller,
            key=key,
            fingerprint=record.fingerprint,
            answer_status=record.answer.status,
            answer_body=record.answer.body,
            created_at=to_db(at),
            expires_at=to_db(expires_at),
        )


class SqlAuditTrail:
    def __init__(self, statements: Statements, batch: WriteBatch) -> None:
        self._statements = statements
        self._batch = batch

    def add(self, record: AuditRecord) -> None:
        self._batch.insert(
            "payment_attempts",
            created_at=to_db(record.at),
            request_id=record.request_id,
            caller=record.caller,
            order_id=record.order_id,
            claimed_amount=record.claimed_amount.amount,
            outcome=record.outcome.value,
            payment_id=record.payment_id,
            idempotency_key=record.idempotency_key,
        )

    async def list_for_order(self, order_id: int) -> list[AuditRecord]:
        rows = await self._statements.read(_AUDIT_OF_ORDER, {"order_id": order_id})
        return [
            AuditRecord(
                at=_from_db(created_at),
                request_id=request_id,
                caller=caller,
                order_id=order_id,
                claimed_amount=Money(claimed_amount),
                outcome=Outcome(outcome),
                payment_id=payment_id,
                idempotency_key=idempotency_key,
            )
            for (
                created_at,
                request_id,
                caller,
                order_id,
                claimed_amount,
                outcome,
                payment_id,
                idempotency_key,
            ) in rows
        ]


_EVENT = (
    "SELECT position, event_id, type, subject, body, created_at, attempts, delivered_to"
    " FROM outbox_events WHERE event_id = %(event_id)s::uuid"
)
_EVENTS_AFTER = (
    "SELECT position, event_id, type, subject, body, created_at, attempts, delivered_to"
    " FROM outbox_events WHERE position > %(position)s ORDER BY position LIMIT %(limit)s"
)


def outbox_event(row: Row) -> OutboxEvent:
    position, event_id, type_, subject, body, created_at, attempts, delivered_to = row
    return OutboxEvent(
        position=position,
        event_id=str(event_id),
        type=type_,
        subject=subject,
        body=body,
        created_at=_from_db(created_at),
        attempts=attempts,
        delivered_to=frozenset(delivered_to),
    )


class SqlOutbox:
    """Stages the published events of a unit of work, each as a CloudEvent with a new id,
    written by the same statement as the payment they tell: never one without the other."""

    def __init__(self, batch: WriteBatch, *, source: str) -> None:
        self._batch = batch
        self._source = source

    def add(self, event: Event) -> None:
        if not isinstance(event, PaymentSucceeded | RefundSucceeded):
            raise TypeError(f"{type(event).__name__} is not told to the shop")
        event_id = cloudevents.new_event_id()
        created_at = to_db(event.created_at)
        self._batch.insert(
            "outbox_events",
            event_id=event_id,
            type=event.type,
            subject=str(event.order_id),
            payment_id=event.payment_id,
            refund_id=event.refund_id if isinstance(event, RefundSucceeded) else None,
            body=cloudevents.structured(event, event_id=event_id, source=self._source),
            created_at=created_at,
            next_attempt_at=created_at,
        )


class SqlEventLog:
    def __init__(self, statements: Statements) -> None:
        self._statements = statements

    async def get(self, event_id: str) -> OutboxEvent | None:
        rows = await self._statements.read(_EVENT, {"event_id": event_id})
        return outbox_event(rows[0]) if rows else None

    async def after(self, position: int, *, limit: int) -> list[OutboxEvent]:
        rows = await self._statements.read(_EVENTS_AFTER, {"position": position, "limit": limit})
        return [outbox_event(row) for row in rows]


COLUMN_TYPES: dict[str, dict[str, str]] = {
    "payments": {
        "id": "integer",
        "order_id": "integer",
        "amount": "numeric",
        "status": "varchar",
        "created_at": "timestamp",
    },
    "payment_attempts": {
        "created_at": "timestamp",
        "request_id": "varchar",
        "caller": "varchar",
        "order_id": "integer",
        "claimed_amount": "numeric",
        "outcome": "varchar",
        "payment_id": "integer",
        "idempotency_key": "varchar",
    },
    "idempotency_keys": {
        "caller": "varchar",
        "key": "varchar",
        "fingerprint": "varchar",
        "answer_status": "smallint",
        "answer_body": "text",
        "created_at": "timestamp",
        "expires_at": "timestamp",
    },
    "outbox_events": {
        "event_id": "uuid",
        "type": "varchar",
        "subject": "varchar",
        "payment_id": "integer",
        "refund_id": "integer",
        "body": "text",
        "created_at": "timestamp",
        "next_attempt_at": "timestamp",
    },
    "refunds": {
        "id": "integer",
        "payment_id": "integer",
        "amount": "numeric",
        "reason": "varchar",
        "status": "varchar",
        "created_at": "timestamp",
    },
    "refund_attempts": {
        "created_at": "timestamp",
        "request_id": "varchar",
        "caller": "varchar",
        "payment_id": "integer",
        "claimed_amount": "numeric",
        "reason": "varchar",
        "outcome": "varchar",
        "refund_id": "integer",
        "idempotency_key": "varchar",
    },
}
"""The columns each staged insert writes, with their types: the values are sent as
parameters of a ``SELECT``, which has no column to take a type from."""

_GUARDS = {
    # The order still pending, with the total the decision saw: it turns paid.
    "order": (
        "guard AS (UPDATE orders SET status = %(guard_paid)s, paid_at = %(guard_paid_at)s"
        " WHERE id = %(guard_order_id)s AND status = %(guard_payable)s"
        " AND total_price = %(guard_total)s RETURNING id)"
    ),
    # The payment's refunds still what the decision saw: their sum grows by the refund. The
    # table's check refuses a sum above the payment's amount, whatever the statement says.
    "payment": (
        "guard AS (UPDATE payments SET amount_refunded = %(guard_refunded)s"
        " WHERE id = %(guard_payment_id)s AND amount_refunded = %(guard_refunded_when_read)s"
        " RETURNING id)"
    ),
}

Aggregate = Order | Refundable
"""What a unit of work may change, guarded: one per unit of work."""


class WriteBatch:
    """The writes staged in a unit of work, sent as one statement.

    With an aggregate's guarded update (an order still pending with the total the decision
    saw; a payment whose refunds are still those the decision saw), every insert takes its one
    row from the update's result: if the aggregate changed meanwhile, the statement writes
    nothing and says so (its count is 0).
    """

    _texts: dict[tuple[str | None, tuple[str, ...]], str] = {}  # noqa: RUF012 - a shared cache
    """The statement's text for each shape: a handful, built once each."""

    def __init__(self) -> None:
        self._guarded: Aggregate | None = None
        self._inserts: list[tuple[str, Params]] = []

    def guard(self, changed: Aggregate) -> None:
        if self._guarded is not None:
            raise ValueError("one aggregate's change per unit of work")
        self._guarded = changed

    def insert(self, table: str, **values: Any) -> None:
        self._inserts.append((table, values))

    @property
    def empty(self) -> bool:
        return self._guarded is None and not self._inserts

    @property
    def guarded(self) -> bool:
        return self._guarded is not None

    @property
    def changed(self) -> Aggregate | None:
        """The aggregate whose change is staged, if one is: the one whose events commit."""
        return self._guarded

    @property
    def paying(self) -> int | None:
        """The order of the payment staged, if one is."""
        return next((v["order_id"] for table, v in self._inserts if table == "payments"), None)

    def clear(self) -> None:
        self._guarded = None
        self._inserts = []

    def statement(self) -> tuple[str, Params]:
        params: Params = {}
        guarded = self._guarded
        kind: str | None = None
        if isinstance(guarded, Order):
            kind = "order"
            params |= {
                "guard_paid": OrderStatus.PAID.value,
                "guard_paid_at": None if guarded.paid_at is None else to_db(guarded.paid_at),
                "guard_order_id": guarded.id,
                "guard_payable": OrderStatus.PENDING.value,
                "guard_total": guarded.total.amount,
            }
        elif isinstance(guarded, Refundable):
            kind = "payment"
            params |= {
                "guard_refunded": guarded.payment.amount_refunded.amount,
                "guard_payment_id": guarded.payment_id,
                "guard_refunded_when_read": guarded.refunded_when_read.amount,
            }
        for number, (_, values) in enumerate(self._inserts):
            params |= {f"w{number}_{column}": value for column, value in values.items()}
        shape = (kind, tuple(table for table, _ in self._inserts))
        text = self._texts.get(shape)
        if text is None:
            text = self._texts[shape] = _batch_text(*shape)
        return text, params


def _batch_text(guard: str | None, tables: Sequence[str]) -> str:
    # Each insert takes its row from the one before (the first from the guard): nothing is
    # written when the guard matched nothing, and the inserts run in the order they were
    # staged, which PostgreSQL does not promise for independent ones.
    guarded = guard is not None
    parts = [_GUARDS[guard]] if guard is not None else []
    source = " FROM guard" if guarded else ""
    for number, table in enumerate(tables):
        columns = COLUMN_TYPES[table]
        names = ", ".join(columns)
        values = ", ".join(f"%(w{number}_{name})s::{kind}" for name, kind in columns.items())
        parts.append(
            f"w{number} AS (INSERT INTO {table} ({names}) SELECT {values}{source} RETURNING 1)"
        )
        source = f" FROM w{number}"
    result = "SELECT count(*) FROM guard" if guarded else "SELECT 1"
    return "WITH " + ", ".join(parts) + " " + result
