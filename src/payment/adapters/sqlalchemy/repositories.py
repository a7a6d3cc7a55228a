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

from payment.domain.attempts import AuditRecord, IdempotencyRecord, Outcome, RecordedAnswer
from payment.domain.model import Money, Order, OrderStatus, Payment, PaymentStatus
from payment.domain.ports import AttemptGround

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
_PAYMENT = "SELECT id, order_id, amount, status, created_at FROM payments WHERE id = %(payment_id)s"
_PAYMENTS_OF_ORDER = (
    "SELECT id, order_id, amount, status, created_at FROM payments"
    " WHERE order_id = %(order_id)s ORDER BY created_at, id"
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
    payment_id, order_id, amount, status, created_at = row
    return Payment(
        id=payment_id,
        order_id=order_id,
        amount=Money(amount),
        status=PaymentStatus(status),
        created_at=_from_db(created_at),
    )


class SqlPaymentRepository:
    def __init__(self, statements: Statements, batch: WriteBatch) -> None:
        self._statements = statements
        self._batch = batch

    async def next_id(self) -> int:
        [(payment_id,)] = await self._statements.read(_NEXT_PAYMENT_ID, {})
        return int(payment_id)

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
}
"""The columns each staged insert writes, with their types: the values are sent as
parameters of a ``SELECT``, which has no column to take a type from."""

_GUARD = (
    "guard AS (UPDATE orders SET status = %(guard_paid)s, paid_at = %(guard_paid_at)s"
    " WHERE id = %(guard_order_id)s AND status = %(guard_payable)s"
    " AND total_price = %(guard_total)s RETURNING id)"
)


class WriteBatch:
    """The writes staged in a unit of work, sent as one statement.

    With an order's guarded update (the order still pending, with the total the decision
    saw), every insert takes its one row from the update's result: if the order changed
    meanwhile, the statement writes nothing and says so (``guard_held`` False).
    """

    _texts: dict[tuple[bool, tuple[str, ...]], str] = {}  # noqa: RUF012 - a shared cache
    """The statement's text for each shape: a handful, built once each."""

    def __init__(self) -> None:
        self._guarded: Order | None = None
        self._inserts: list[tuple[str, Params]] = []

    def guard(self, order: Order) -> None:
        if self._guarded is not None:
            raise ValueError("one order's change per unit of work")
        self._guarded = order

    def insert(self, table: str, **values: Any) -> None:
        self._inserts.append((table, values))

    @property
    def empty(self) -> bool:
        return self._guarded is None and not self._inserts

    @property
    def guarded(self) -> bool:
        return self._guarded is not None

    @property
    def paying(self) -> int | None:
        """The order of the payment staged, if one is."""
        return next((v["order_id"] for table, v in self._inserts if table == "payments"), None)

    def clear(self) -> None:
        self._guarded = None
        self._inserts = []

    def statement(self) -> tuple[str, Params]:
        params: Params = {}
        if self._guarded is not None:
            order = self._guarded
            params |= {
                "guard_paid": OrderStatus.PAID.value,
                "guard_paid_at": None if order.paid_at is None else to_db(order.paid_at),
                "guard_order_id": order.id,
                "guard_payable": OrderStatus.PENDING.value,
                "guard_total": order.total.amount,
            }
        for number, (_, values) in enumerate(self._inserts):
            params |= {f"w{number}_{column}": value for column, value in values.items()}
        shape = (self._guarded is not None, tuple(table for table, _ in self._inserts))
        text = self._texts.get(shape)
        if text is None:
            text = self._texts[shape] = _batch_text(*shape)
        return text, params


def _batch_text(guarded: bool, tables: Sequence[str]) -> str:
    # Each insert takes its row from the one before (the first from the guard): nothing is
    # written when the guard matched nothing, and the inserts run in the order they were
    # staged, which PostgreSQL does not promise for independent ones.
    parts = [_GUARD] if guarded else []
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
